"""The raster (next-token, LlamaGen) family's teacher: its guidance, its KV-cached loop and its teacher forcing.

Everything downstream (the flow map, pair generation, sampling, the student) asks a teacher one question:
"given what is already generated, what is the categorical distribution of the next token, after the
sampling recipe?" `generate` runs the teacher's KV-cached loop and hands each distribution to a `choose`
function: a random draw for ordinary sampling, the flow map for DD pairs (dd/raster/sampling.py). The loop has
static shapes and no host synchronisation (positions are device tensors, the cache is preallocated), so a whole
loop can be captured as one CUDA graph.

The family interface's teacher part (dd/families/__init__.py): `teacher_forcing`.

Dimensions: B batch, L image tokens, V codebook size, d code dimension.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from dd.config import RecipeConfig
from dd.families import TeacherForcing
from dd.models.attention import activation_dtype
from dd.models.llamagen import GPT, KVCache
from dd.teachers import sampling_probs

# choose(probs (B, V), position) -> tokens (B,)
Chooser = Callable[[Tensor, int], Tensor]


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
    cache = KVCache.allocate(config, len(rows), activation_dtype(model), device)
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


# ---------------------------------------------------------------------------------------------------------
# The family interface (dd/families/__init__.py)
# ---------------------------------------------------------------------------------------------------------

def teacher_forcing(model: GPT, tokenizer) -> tuple[int, TeacherForcing]:
    """Input i is token i - 1 (the class token first). Returns (tokens the model reads, forward)."""
    return model.config.num_image_tokens, lambda model, labels, tokens: model(labels, tokens)
