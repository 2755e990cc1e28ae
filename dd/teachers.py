"""Teachers: a frozen AR model, its codebook and its sampling recipe, behind one generation loop.

Everything downstream (the flow map, pair generation, sampling, the student) asks a teacher one question:
"given what is already generated, what is the categorical distribution of the next token, after the
sampling recipe?" `generate` runs the teacher's KV-cached loop and hands each distribution to a `choose`
function: a random draw for ordinary sampling, the flow map for DD pairs. The loop has static shapes and no
host synchronisation (positions are device tensors, the cache is preallocated), so a whole loop can be
captured as one CUDA graph.

The frozen teacher is never a submodule of the student: it is loaded here with eval() and
requires_grad_(False) and passed around explicitly.

Dimensions: B batch, L image tokens, V codebook size, d code dimension.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from dd.checkpoint import load_json, load_state_dict, with_weights
from dd.config import RecipeConfig
from dd.models.llamagen import GPT, PRESETS, KVCache
from dd.models.var import VAR, PRESETS as VAR_PRESETS

# choose(probs (B, V), position) -> tokens (B,)
Chooser = Callable[[Tensor, int], Tensor]


def preset_config(preset: str):
    """A teacher preset's architecture: a GPTConfig (raster order, LlamaGen) or a VARConfig (next scale)."""
    if preset in PRESETS:
        return PRESETS[preset]
    if preset in VAR_PRESETS:
        return VAR_PRESETS[preset]
    raise ValueError(f"unknown teacher preset '{preset}'; available: {', '.join(sorted([*PRESETS, *VAR_PRESETS]))}")


def family(preset: str) -> str:
    """A teacher preset's family: "llamagen" (raster order, a token per step) or "var" (next scale, a scale per
    step). Stages dispatch on it to the few functions that differ between the two."""
    preset_config(preset)                 # an unknown preset is an error, not a family
    return "llamagen" if preset in PRESETS else "var"


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


def guided(recipe: RecipeConfig) -> bool:
    """LlamaGen's rule (its generate.py): classifier-free guidance only for cfg_scale > 1; at or below 1 the
    conditional model alone, and no null-class rows are run."""
    return recipe.cfg_scale > 1.0


def apply_recipe(logits: Tensor, recipe: RecipeConfig) -> Tensor:
    """Teacher logits -> the categorical it samples from: CFG, then `sampling_probs` (LlamaGen's order).

    logits: (2B, V) with the conditional rows first and the unconditional (null class) rows second when
    guided(recipe), else (B, V). Returns probs (B, V) float32; removed tokens get probability 0.
    """
    logits = logits.float()
    if guided(recipe):
        conditional, unconditional = logits.chunk(2)
        logits = unconditional + recipe.cfg_scale * (conditional - unconditional)
    return sampling_probs(logits, recipe)


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


def generate(model: GPT, labels: Tensor, recipe: RecipeConfig, choose: Chooser, num_tokens: int | None = None,
             given: Tensor | None = None) -> Tensor:
    """The teacher's raster-order loop with a static KV cache: returns tokens (B, num_tokens) int64.

    Position 0 of the sequence is the class token; the hidden state at position i predicts image token i.
    given (B, n): the first n tokens, fixed in advance rather than chosen (hybrid DD sampling). The first step
    then runs positions 0..n in one pass (a prefill) and predicts token n; the loop chooses tokens n.. only.
    """
    config = model.config
    num_tokens = config.num_image_tokens if num_tokens is None else num_tokens
    device = labels.device
    use_cfg = guided(recipe)
    rows = torch.cat([labels, torch.full_like(labels, config.num_classes)]) if use_cfg else labels   # (2B,) or (B,)
    dtype = next(model.parameters()).dtype
    cache = KVCache.allocate(config, len(rows), dtype, device)
    positions = torch.arange(config.max_seq_len, device=device)
    tokens = torch.empty(len(labels), num_tokens, dtype=torch.long, device=device)
    first = 0 if given is None else given.shape[1]
    if first > num_tokens:
        raise ValueError(f"{first} given tokens, more than the {num_tokens} to generate")

    h = model.embed_class(rows)                                            # (rows, 1, C): position 0
    if first:
        tokens[:, :first] = given
        h = torch.cat([h, model.embed_tokens(given.repeat(2, 1) if use_cfg else given)], dim=1)   # (rows, 1 + n, C)
    for i in range(first, num_tokens):
        # Positions i + 1 - S .. i: the class token and any given tokens at the first step, one position after.
        h = model.backbone_step(h, positions[i + 1 - h.shape[1]:i + 1], cache, num_visible=i + 1)[:, -1:]
        probs = apply_recipe(model.logits(h[:, 0]), recipe)                 # (B, V)
        tokens[:, i] = choose(probs, i)
        next_tokens = tokens[:, i].repeat(2) if use_cfg else tokens[:, i]
        h = model.embed_tokens(next_tokens[:, None])                       # (rows, 1, C)
    return tokens
