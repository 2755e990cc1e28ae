"""Where each stage's outputs live, and how a later stage loads them.

dvc.yaml declares these same paths as stage outputs (tests/test_pipeline_files.py checks the two agree), so
every stage reads and writes through this one table and no path is spelled twice in code.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dd.checkpoint import load_json, load_state_dict
from dd.data import ImageSet
from dd.evaluation import ClassifierConfig, FeatureClassifier
from dd.student import DDStudent
from dd.teachers import load_teacher
from dd.tokenizer import PatchTokenizer


@dataclass(frozen=True)
class Layout:
    teacher: str = ""
    data_root: Path = Path("data")
    metrics_root: Path = Path("metrics")

    # Shared by every teacher.
    @property
    def dataset_dir(self) -> Path: return self.data_root / "dataset"
    @property
    def classifier_dir(self) -> Path: return self.data_root / "classifier"

    # Per teacher.
    @property
    def tokenizer_dir(self) -> Path: return self.data_root / self.teacher / "tokenizer"
    @property
    def teacher_dir(self) -> Path: return self.data_root / self.teacher / "teacher"
    @property
    def pairs_dir(self) -> Path: return self.data_root / self.teacher / "pairs"
    @property
    def student_dir(self) -> Path: return self.data_root / self.teacher / "student"
    @property
    def samples_dir(self) -> Path: return self.data_root / self.teacher / "samples"
    @property
    def dd_samples_dir(self) -> Path: return self.data_root / self.teacher / "samples_dd"
    @property
    def metrics_dir(self) -> Path: return self.metrics_root / self.teacher


def load_images(layout: Layout, split: str) -> ImageSet:
    return ImageSet.load(layout.dataset_dir / f"{split}.npz")


def load_tokenizer(layout: Layout) -> PatchTokenizer:
    path = layout.tokenizer_dir / "tokenizer.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `dd tokenizer {layout.teacher}` first")
    return PatchTokenizer.from_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def load_frozen_teacher(layout: Layout):
    return load_teacher(layout.teacher_dir / "model.pt")


def load_student(layout: Layout, teacher) -> DDStudent:
    student = DDStudent(teacher, load_tokenizer(layout).codebook.shape[1])
    student.load_state_dict(load_state_dict(layout.student_dir / "model.pt"), strict=True)
    return student.eval().requires_grad_(False)


def load_classifier(layout: Layout) -> FeatureClassifier:
    meta = load_json(layout.classifier_dir / "model.json")
    classifier = FeatureClassifier(meta["in_channels"], meta["num_classes"], ClassifierConfig(**meta["config"]))
    classifier.load_state_dict(load_state_dict(layout.classifier_dir / "model.pt"), strict=True)
    return classifier.eval().requires_grad_(False)


def load_samples(path: Path) -> dict[str, np.ndarray]:
    """A method's samples: tokens (N, L), labels (N,), images (N, H, W, C) uint8."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} not found: run the sampling stage first (`dvc repro`)")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}
