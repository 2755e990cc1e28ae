"""Teachers of either family: presets, building and loading them, and the part of the sampling recipe they share.

Everything downstream (the flow map, pair generation, sampling, the student) asks a teacher one question:
"given what is already generated, what is the categorical distribution of the next token (or scale), after the
sampling recipe?" Each family answers it with its own loop (dd/raster/teacher.py, dd/next_scale/teacher.py);
guidance is the family's, temperature, top-k and top-p are `sampling_probs` here.

The frozen teacher is never a submodule of the student: it is loaded here with eval() and
requires_grad_(False) and passed around explicitly.

Dimensions: B batch, L image tokens, V codebook size, d code dimension.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from dd.checkpoint import load_json, load_state_dict, with_weights
from dd.config import RecipeConfig
from dd.models.llamagen import GPT, PRESETS
from dd.models.var import VAR, PRESETS as VAR_PRESETS


def preset_config(preset: str):
    """A teacher preset's architecture: a GPTConfig (raster order, LlamaGen) or a VARConfig (next scale)."""
    if preset in PRESETS:
        return PRESETS[preset]
    if preset in VAR_PRESETS:
        return VAR_PRESETS[preset]
    raise ValueError(f"unknown teacher preset '{preset}'; available: {', '.join(sorted([*PRESETS, *VAR_PRESETS]))}")


def build_model(preset: str) -> GPT | VAR:
    """A teacher preset with fresh weights."""
    config = preset_config(preset)
    return GPT(config) if preset in PRESETS else VAR(config)


def load_teacher(folder: str | Path) -> GPT | VAR:
    """A teacher stage's result, frozen: model.json names the preset and the weights file beside it (model.pt
    when trained here, the published file as downloaded otherwise)."""
    folder = Path(folder)
    meta = load_json(folder / "model.json")
    model = with_weights(lambda: build_model(meta["preset"]), load_state_dict(folder / meta.get("weights", "model.pt")))
    return model.eval().requires_grad_(False)


def sampling_probs(logits: Tensor, recipe: RecipeConfig) -> Tensor:
    """Guided logits (N, V) -> probs (N, V) float32 after temperature, top-k and top-p (guidance is the family's).

    Top-k keeps exactly top_k codes per row: at a tie on the boundary, the ones torch.topk returns. The published
    samplers keep every code tied with the k-th (logits < k-th largest are removed), which can leave more than k;
    exactly k makes the support the set the flow map solves over (dd/flow.py takes the top_k most probable
    codes), so its solve over the support and over the whole codebook agree. Without ties the two rules agree.
    """
    logits = logits.float() / recipe.temperature
    if 0 < recipe.top_k < logits.shape[-1]:
        kept = logits.topk(recipe.top_k, dim=-1).indices                                  # (N, k)
        logits = torch.full_like(logits, float("-inf")).scatter(-1, kept, logits.gather(-1, kept))
    if recipe.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(-1)
        # Drop a token when the ones ranked above it already hold top_p of the mass (the first always stays).
        drop_sorted = (sorted_probs.cumsum(-1) - sorted_probs) >= recipe.top_p
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    return logits.softmax(-1)


