"""Sequence maps: a teacher's sampling loop with each token the flow map of its own noise (method.md 3-4).

A sequence map sends a noise sequence (B, L, d) and its labels to tokens (B, L): the teacher's KV-cached loop in
which each token is the flow map (dd/flow.py) of its own noise under the teacher's recipe distribution given the
tokens before it (`sequence_map`, raster order) or given the coarser scales (`scale_sequence_map`, next scale).
Bound to a teacher (functools.partial) it is the pair stage's PairMap (dd/pairs.py writes what it makes).

Dimensions: B batch, L tokens, d (E) code dimension, V codebook size, P tokens of one scale.
"""
from __future__ import annotations

import torch
from torch import Tensor

from dd.config import FlowConfig, RecipeConfig
from dd.flow import flow_map
from dd.models.llamagen import GPT
from dd.models.var import VAR
from dd.models.var_vqvae import MultiScaleVQVAE
from dd.teachers import generate
from dd.var_teacher import generate_var


@torch.inference_mode()
def sequence_map(teacher: GPT, recipe: RecipeConfig, codebook: Tensor, flow: FlowConfig, labels: Tensor, noise: Tensor) -> Tensor:
    """Noise (B, L, d) -> tokens (B, L): each token the flow map of its noise under the teacher's next-token law."""
    def choose(probs: Tensor, i: int) -> Tensor:
        return flow_map(noise[:, i], probs, codebook, num_steps=flow.solver_steps, t_end=flow.t_end,
                        support_size=recipe.top_k, compile=flow.compile)
    return generate(teacher, labels, recipe, choose)


@torch.inference_mode()
def scale_sequence_map(teacher: VAR, vqvae: MultiScaleVQVAE, codebook: Tensor, recipe: RecipeConfig, flow: FlowConfig,
                       labels: Tensor, noise: Tensor) -> Tensor:
    """The next-scale version (method.md section 3): noise (B, L, E) -> tokens (B, L), scales coarse to fine.

    At each scale every token is the flow map of its own noise under the teacher's distribution for it given
    the coarser scales (VAR's tokens of one scale are independent given those). codebook (V, E): the code
    vectors the flow map works in (the tokenizer's `codebook`, dd/var_tokenizer.py); the VQVAE itself builds
    the teacher's next-scale inputs from its own codes.
    """
    slices, codebook = teacher.config.scale_slices, codebook.float()

    def choose(probs: Tensor, k: int) -> Tensor:                      # probs (B*P, V) of scale k
        start, stop = slices[k]
        return flow_map(noise[:, start:stop].flatten(0, 1), probs, codebook, num_steps=flow.solver_steps,
                        t_end=flow.t_end, support_size=recipe.top_k, compile=flow.compile)
    return torch.cat(generate_var(teacher, vqvae, labels, recipe, choose), dim=1)      # (B, L)
