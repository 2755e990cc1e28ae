"""Where each stage's outputs live, and the plain files (image splits, samples) that stages read back.

dvc.yaml declares these same paths as stage outputs (tests/test_pipeline_files.py checks the two agree), so
every stage reads and writes through this one table and no path is spelled twice in code. This module imports
no model code: a stage's code dependencies are what it imports (dd/provenance.py), and where things lie must
not make the data stage depend on a model. Loading a trained artifact (tokenizer, teacher) is dd/artifacts.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dd.data import ImageSet


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
    def dd2_dir(self) -> Path: return self.data_root / self.teacher / "dd2"
    @property
    def dd_samples_dir(self) -> Path: return self.data_root / self.teacher / "samples_dd"
    @property
    def metrics_dir(self) -> Path: return self.metrics_root / self.teacher


def load_images(layout: Layout, split: str) -> ImageSet:
    """One split of the data stage ("train", "validation" or "test")."""
    path = layout.dataset_dir / f"{split}.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `dd data` (or `dvc repro data`) first")
    return ImageSet.load(path)


def load_samples(path: Path) -> dict[str, np.ndarray]:
    """A method's samples: tokens (N, L), labels (N,), images (N, H, W, C) uint8."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} not found: run the sampling stage first (`dvc repro`)")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}
