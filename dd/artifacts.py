"""How a later stage loads what the tokenizer and teacher stages made (paths: dd/layout.py), and on which device.

The DD student is loaded by its sampling stage (pipeline/sample_dd.py) and the evaluation classifier by
dd/evaluation.py, so that the stages upstream of them do not import (and so do not depend on) their code.
"""
from __future__ import annotations

from pathlib import Path

import torch

from dd.checkpoint import load_json
from dd.layout import Layout
from dd.models.llamagen import GPT
from dd.models.var import VAR
from dd.models.var_vqvae import PRESETS as VQVAE_PRESETS
from dd.next_scale.tokenizer import MultiScaleTokenizer
from dd.raster.tokenizer import PatchTokenizer
from dd.raster.vq_tokenizer import VQTokenizer
from dd.teachers import load_teacher, preset_config
from dd.tokenizers import SIDECAR as VQ_SIDECAR

# Every tokenizer has encode, decode, codebook (V, d), num_tokens and codebook_size.
Tokenizer = PatchTokenizer | VQTokenizer | MultiScaleTokenizer


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


def teacher_classes(layout: Layout) -> int:
    """How many classes the teacher is conditioned on (its null class not counted): the labels to sample."""
    return preset_config(load_json(layout.teacher_dir / "model.json")["preset"]).num_classes


def load_frozen_teacher(layout: Layout, device: torch.device | str = "cpu") -> GPT | VAR:
    return load_teacher(layout.teacher_dir).to(device)
