"""The next-scale (VAR) family's samplers: the teacher's own, the skip-k baselines, and the flow-map sequence map
that makes DD pairs, all on the teacher's next-scale loop (dd/next_scale/teacher.py).

The skip-k baselines stop the teacher before its last k scales and decode the partial reconstruction f_hat it
has (the paper's VAR-skip-1 and -2; method.md section 6).

The family interface's sampling part (dd/families/__init__.py): `pair_map`, `teacher_sampler`,
`teacher_continuation`, `baselines`, `steps`, `HEADLINE_SKIP`.

Dimensions: B batch, P tokens of one scale, V codebook size, E code dim, K scales, L tokens of all scales.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor

from dd.config import Config, FlowConfig, RecipeConfig
from dd.families import Completion
from dd.flow import flow_map
from dd.models.var import VAR
from dd.models.var_vqvae import MultiScaleVQVAE
from dd.next_scale.teacher import generate_var
from dd.pairs import PairMap
from dd.sampling import Sampler, TeacherContinuation, TokenMarginals, sample_onestep
from dd.seeding import inverse_cdf, token_uniforms

HEADLINE_SKIP = "skip-1"    # the skip baseline the evaluation contract reads as `skip`
# The skip baselines reported for VAR teachers, in scales skipped at the end (the paper's VAR-skip-1 and -2).
SKIP_SCALES = (1, 2)


@torch.inference_mode()
def sample_var_teacher(model: VAR, vqvae: MultiScaleVQVAE, recipe: RecipeConfig, labels: Tensor,
                       noise: Tensor, num_scales: int | None = None, given: Tensor | None = None) -> list[Tensor]:
    """The teacher's own sampling: token i drawn by inverse CDF with u_i = Phi(noise[:, i, 0]); noise (B, L, E).
    One LongTensor (B, P_k) per scale, for the first num_scales scales (all K by default); `given` as in
    generate_var."""
    uniforms = token_uniforms(noise)                                                 # (B, L)
    slices = model.config.scale_slices
    return generate_var(model, vqvae, labels, recipe,
                        lambda probs, k: inverse_cdf(probs, uniforms[:, slices[k][0]:slices[k][1]].flatten()),
                        num_scales, given)


def sample_var_scales(model: VAR, vqvae: MultiScaleVQVAE, recipe: RecipeConfig, num_scales: int, labels: Tensor,
                      noise: Tensor, given: Tensor | None = None) -> Tensor:
    """sample_var_teacher's tokens flattened to (B, L_k), L_k the tokens of the first num_scales scales: with all K
    scales the teacher's samples; with K - k the skip-k baseline (method.md section 6), a teacher that stops
    before its last k scales, whose images are decoded from the partial reconstruction f_hat it has. `given`
    as in generate_var."""
    return torch.cat(sample_var_teacher(model, vqvae, recipe, labels, noise, num_scales, given), dim=1)


@torch.inference_mode()
def scale_sequence_map(teacher: VAR, vqvae: MultiScaleVQVAE, codebook: Tensor, recipe: RecipeConfig, flow: FlowConfig,
                       labels: Tensor, noise: Tensor) -> Tensor:
    """The next-scale version (method.md section 3): noise (B, L, E) -> tokens (B, L), scales coarse to fine.

    At each scale every token is the flow map of its own noise under the teacher's distribution for it given
    the coarser scales (VAR's tokens of one scale are independent given those). codebook (V, E): the code
    vectors the flow map works in (the tokenizer's `codebook`, dd/next_scale/tokenizer.py); the VQVAE itself builds
    the teacher's next-scale inputs from its own codes.
    """
    slices, codebook = teacher.config.scale_slices, codebook.float()

    def choose(probs: Tensor, k: int) -> Tensor:                      # probs (B*P, V) of scale k
        start, stop = slices[k]
        return flow_map(noise[:, start:stop].flatten(0, 1), probs, codebook, num_steps=flow.solver_steps,
                        t_end=flow.t_end, support_size=recipe.top_k, compile=flow.compile)
    return torch.cat(generate_var(teacher, vqvae, labels, recipe, choose), dim=1)      # (B, L)


# ---------------------------------------------------------------------------------------------------------
# The family interface (dd/families/__init__.py)
# ---------------------------------------------------------------------------------------------------------

def pair_map(config: Config, teacher: VAR, tokenizer) -> PairMap:
    """Scale by scale, each token the flow map of its noise given the coarser scales."""
    codebook = tokenizer.codebook.to(next(teacher.parameters()).device)
    return functools.partial(scale_sequence_map, teacher, tokenizer.model, codebook, config.recipe, config.flow)


def teacher_sampler(teacher: VAR, tokenizer, recipe: RecipeConfig) -> Sampler:
    return functools.partial(sample_var_scales, teacher, tokenizer.model, recipe, teacher.config.num_scales)


def teacher_continuation(teacher: VAR, tokenizer, recipe: RecipeConfig) -> TeacherContinuation:
    def continue_teacher(labels: Tensor, noise: Tensor, stop: int, given: Tensor | None) -> Tensor:
        return sample_var_scales(teacher, tokenizer.model, recipe, stop, labels, noise, given)
    return continue_teacher


def baselines(config: Config, teacher: VAR, tokenizer,
              marginals: TokenMarginals) -> tuple[dict[str, Sampler], dict[str, Completion]]:
    num_scales, slices = teacher.config.num_scales, teacher.config.scale_slices
    stopped = functools.partial(sample_var_scales, teacher, tokenizer.model, config.recipe)   # (stop, labels, noise)
    samplers = {"teacher": teacher_sampler(teacher, tokenizer, config.recipe),
                "onestep": functools.partial(sample_onestep, marginals),
                **{f"skip-{k}": functools.partial(stopped, num_scales - k) for k in SKIP_SCALES}}

    def first_scales(stop: int, tokens: Tensor, labels: Tensor, noise: Tensor) -> Tensor:
        return tokens[:, :stop]
    return samplers, {f"skip-{k}": functools.partial(first_scales, slices[num_scales - k - 1][1]) for k in SKIP_SCALES}


def steps(config: Config, teacher_config) -> dict[str, int]:
    """Sequential model steps of the teacher and the baselines: one per scale each generates."""
    num_scales = teacher_config.num_scales
    return {"teacher": num_scales, "onestep": 1,
            **{f"skip-{k}": num_scales - k for k in SKIP_SCALES}, "reconstruction": 0}
