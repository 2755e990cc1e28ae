"""The next-scale (VAR) family's teacher: its recipe, its next-scale loop with the KV cache across scales, and its
teacher forcing.

The loop mirrors dd.raster.teacher.generate for raster-order models: at each scale the transformer gives logits for
all tokens of that scale at once (they are independent given the coarser scales), the recipe turns them into
the categorical the teacher samples from, and a `choose` function picks the tokens: an inverse-CDF draw for
ordinary sampling, the DD flow map for pairs (method.md section 3: each token maps its own noise). The
VQVAE then adds the scale to the running reconstruction f_hat and area-downsamples it into the next scale's
input. Shapes depend only on the Python int scale index and nothing synchronises with the device, so the
whole loop can be captured as one CUDA graph.

Recipe (VAR's autoregressive_infer_cfg): guidance ramps over scales, t_k = cfg * k / (K - 1), and the guided
logits are (1 + t_k) cond - t_k uncond, i.e. LlamaGen's constant-CFG formula with scale 1 + t_k; then
temperature, top-k and top-p as for LlamaGen. So recipe.cfg_scale means VAR's `cfg`, not LlamaGen's scale:
cfg 0 is unguided (and runs only the conditional rows), cfg 1 still guides the last scale with weight 2.

The family interface's teacher part (dd/families/__init__.py): `teacher_forcing`. The samplers built on the
loop are dd/next_scale/sampling.py.

Dimensions: B batch, P tokens of one scale, V codebook size, E code dim, K scales, L tokens of all scales.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from dd.config import RecipeConfig
from dd.families import TeacherForcing
from dd.models.attention import activation_dtype
from dd.models.var import VAR, VARKVCache, cfg_ramp
from dd.models.var_vqvae import MultiScaleVQVAE
from dd.teachers import sampling_probs

# choose(probs (B*P, V), scale_index) -> tokens (B*P,)
ScaleChooser = Callable[[Tensor, int], Tensor]


def guided_by(recipe: RecipeConfig) -> bool:
    """Whether VAR's recipe guides at all: t_k = 0 at every scale only for cfg 0 (recipe.cfg_scale >= 0)."""
    return recipe.cfg_scale != 0.0


def guided_probs(logits: Tensor, recipe: RecipeConfig, scale_index: int, num_scales: int) -> Tensor:
    """Scale logits (2B, P, V) (conditional rows first, then null-class rows) -> probs (B*P, V) after the recipe.

    Unguided (recipe.cfg_scale == 0) the logits are (B, P, V), conditional only.
    """
    if not guided_by(recipe):
        guided = logits
    else:
        conditional, unconditional = logits.float().chunk(2)
        t = cfg_ramp(recipe.cfg_scale, scale_index, num_scales)
        guided = unconditional + (1.0 + t) * (conditional - unconditional)          # (B, P, V)
    return sampling_probs(guided.flatten(0, 1), recipe)


def generate_var(model: VAR, vqvae: MultiScaleVQVAE, labels: Tensor, recipe: RecipeConfig,
                 choose: ScaleChooser, num_scales: int | None = None, given: Tensor | None = None) -> list[Tensor]:
    """VAR's next-scale loop with a static KV cache: one LongTensor (B, P_k) of tokens per scale k, for the first
    num_scales scales (all K by default).

    given (B, L_n): the tokens of the first n scales, fixed in advance rather than chosen (hybrid DD sampling).
    The VQVAE builds their next-scale inputs, and the first step runs scales 0..n in one pass (VAR.prefill).
    """
    config = model.config
    num_scales = config.num_scales if num_scales is None else num_scales
    first = 0 if given is None else config.scale_of_stop(given.shape[1]) + 1
    if first > num_scales:
        raise ValueError(f"{first} given scales, more than the {num_scales} to generate")
    use_cfg = guided_by(recipe)
    rows = torch.cat([labels, torch.full_like(labels, config.num_classes)]) if use_cfg else labels   # (2B,) or (B,)
    cache = VARKVCache.allocate(config, len(rows), activation_dtype(model), labels.device)

    def model_rows(scale_input: Tensor) -> Tensor:        # (B, P, E) -> (rows, P, E) in the cache's dtype
        return (torch.cat([scale_input, scale_input]) if use_cfg else scale_input).to(cache.k.dtype)

    f_hat, scale_input, tokens, given_inputs = None, None, [], []
    for k in range(first):
        start, stop = config.scale_slices[k]
        tokens.append(given[:, start:stop])
        f_hat, next_input = vqvae.fhat_step(k, f_hat, tokens[-1])                   # next_input (B, P', E)
        given_inputs.append(next_input)
    for k in range(first, num_scales):
        if k == first and first:
            logits = model.prefill(rows, model_rows(torch.cat(given_inputs, dim=1)), cache)   # (rows, P, V)
        else:
            logits = model.step(k, rows, scale_input, cache)                        # (rows, P, V)
        probs = guided_probs(logits, recipe, k, config.num_scales)                 # (B*P, V)
        chosen = choose(probs, k).view(len(labels), -1)                             # (B, P)
        tokens.append(chosen)
        f_hat, next_input = vqvae.fhat_step(k, f_hat, chosen)                       # next_input (B, P', E)
        if next_input is not None and k + 1 < num_scales:
            scale_input = model_rows(next_input)
    return tokens


# ---------------------------------------------------------------------------------------------------------
# The family interface (dd/families/__init__.py)
# ---------------------------------------------------------------------------------------------------------

def teacher_forcing(model: VAR, tokenizer) -> tuple[int, TeacherForcing]:
    """Scale k's inputs are the VQVAE's f_hat through scale k - 1, resampled to scale k's grid. Returns (tokens
    the model reads, forward)."""
    return model.config.num_tokens, lambda model, labels, tokens: model(labels, tokenizer.next_scale_inputs(tokens))
