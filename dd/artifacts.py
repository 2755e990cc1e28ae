"""Where each stage's outputs live, and how a later stage loads them.

dvc.yaml declares these same paths as stage outputs (tests/test_pipeline_files.py checks the two agree), so
every stage reads and writes through this one table and no path is spelled twice in code.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dd.checkpoint import load_json, load_state_dict, with_weights
from dd.data import ImageSet
from dd.evaluation import ClassifierConfig, FeatureClassifier
from dd.models.llamagen import GPT
from dd.models.var import VAR
from dd.models.var_vqvae import PRESETS as VQVAE_PRESETS
from dd.student import DDStudent
from dd.teachers import load_teacher, preset_config
from dd.tokenizer import PatchTokenizer
from dd.var_student import VARStudent
from dd.var_tokenizer import MultiScaleTokenizer
from dd.vq_tokenizer import SIDECAR as VQ_SIDECAR, VQTokenizer

# Every tokenizer has encode, decode, codebook (V, d), num_tokens and codebook_size.
Tokenizer = PatchTokenizer | VQTokenizer | MultiScaleTokenizer


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
    def params_dir(self) -> Path: return self.data_root / self.teacher / "params"
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


def teacher_weights(layout: Layout) -> Path:
    """The teacher stage's weights file: model.pt when trained here, the published file when downloaded."""
    return layout.teacher_dir / load_json(layout.teacher_dir / "model.json").get("weights", "model.pt")


def tokenizer_weights(layout: Layout) -> Path:
    """The tokenizer stage's weights file: tokenizer.pt when fitted here, the published VQ when downloaded."""
    sidecar = layout.tokenizer_dir / VQ_SIDECAR
    return layout.tokenizer_dir / (load_json(sidecar)["weights"] if sidecar.exists() else "tokenizer.pt")


def load_tokenizer(layout: Layout, device: torch.device | str = "cpu") -> Tokenizer:
    """The k-means tokenizer fitted here, or (a tokenizer.json beside it) a VQ autoencoder: LlamaGen's published
    VQ, or VAR's multi-scale VQVAE, published or trained here. Autoencoders run on `device` (the k-means one is
    a table lookup: always on the CPU)."""
    sidecar = layout.tokenizer_dir / VQ_SIDECAR
    if sidecar.exists():
        multi_scale = load_json(sidecar)["preset"] in VQVAE_PRESETS
        return (MultiScaleTokenizer if multi_scale else VQTokenizer).load(layout.tokenizer_dir, device)
    path = layout.tokenizer_dir / "tokenizer.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `dd tokenizer {layout.teacher}` first")
    return PatchTokenizer.from_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def compute_device() -> torch.device:
    """Where the stages compute: this process's GPU when there is one (cuda:LOCAL_RANK under torchrun)."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def teacher_classes(layout: Layout) -> int:
    """How many classes the teacher is conditioned on (its null class not counted): the labels to sample."""
    return preset_config(load_json(layout.teacher_dir / "model.json")["preset"]).num_classes


def load_frozen_teacher(layout: Layout, device: torch.device | str = "cpu") -> GPT | VAR:
    return load_teacher(layout.teacher_dir).to(device)


def load_student(layout: Layout, teacher: GPT | VAR) -> DDStudent | VARStudent:
    """The trained student of the teacher's family, frozen, on the teacher's device."""
    if isinstance(teacher, VAR):
        build = lambda: VARStudent(teacher.config)
    else:
        code_dim = load_tokenizer(layout).codebook.shape[1]
        build = lambda: DDStudent(teacher, code_dim)
    student = with_weights(build, load_state_dict(layout.student_dir / "model.pt"))
    return student.to(next(teacher.parameters()).device).eval().requires_grad_(False)


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
