"""The raster (next-token, LlamaGen) family's samplers: the teacher's own, the skip baseline, and the flow-map
sequence map that makes DD pairs, all on the teacher's loop (dd/raster/teacher.py).

The skip baseline lets the teacher generate all but its last `sample.skip_tokens` tokens and draws those from
the per-position marginals in one parallel step (method.md section 6).

The family interface's sampling part (dd/families/__init__.py): `pair_map`, `teacher_sampler`,
`teacher_continuation`, `baselines`, `steps`, `HEADLINE_SKIP`.

Dimensions: B batch, L image tokens, V codebook size, d code dimension.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor

from dd.config import Config, FlowConfig, RecipeConfig
from dd.families import Completion
from dd.flow import flow_map
from dd.models.llamagen import GPT
from dd.pairs import PairMap
from dd.raster.teacher import generate
from dd.sampling import Sampler, TeacherContinuation, TokenMarginals, sample_onestep
from dd.seeding import inverse_cdf, token_uniforms

HEADLINE_SKIP = "skip"      # the skip baseline the evaluation contract reads as `skip`


@torch.inference_mode()
def sample_teacher(teacher: GPT, recipe: RecipeConfig, labels: Tensor, noise: Tensor, num_tokens: int | None = None,
                   given: Tensor | None = None) -> Tensor:
    uniforms = token_uniforms(noise)                                      # (B, L)
    return generate(teacher, labels, recipe, lambda probs, i: inverse_cdf(probs, uniforms[:, i]), num_tokens, given)


@torch.inference_mode()
def sample_skip(teacher: GPT, recipe: RecipeConfig, marginals: TokenMarginals, skip_tokens: int, labels: Tensor,
                noise: Tensor) -> Tensor:
    prefix = sample_teacher(teacher, recipe, labels, noise, noise.shape[1] - skip_tokens)
    return complete_skip(marginals, skip_tokens, prefix, labels, noise)


def complete_skip(marginals: TokenMarginals, skip_tokens: int, teacher_tokens: Tensor, labels: Tensor,
                  noise: Tensor) -> Tensor:
    """The skip baseline from the teacher's tokens under the same noise, (B, >= L - skip_tokens): their first
    L - skip_tokens are what a teacher stopped there made; the last skip_tokens come from the marginals."""
    kept = noise.shape[1] - skip_tokens
    rest = sample_onestep(marginals.positions_from(kept), labels, noise[:, kept:])
    return torch.cat([teacher_tokens[:, :kept], rest], dim=1)


@torch.inference_mode()
def sequence_map(teacher: GPT, recipe: RecipeConfig, codebook: Tensor, flow: FlowConfig, labels: Tensor, noise: Tensor) -> Tensor:
    """Noise (B, L, d) -> tokens (B, L): each token the flow map of its noise under the teacher's next-token law."""
    def choose(probs: Tensor, i: int) -> Tensor:
        return flow_map(noise[:, i], probs, codebook, num_steps=flow.solver_steps, t_end=flow.t_end,
                        support_size=recipe.top_k, compile=flow.compile)
    return generate(teacher, labels, recipe, choose)


# ---------------------------------------------------------------------------------------------------------
# The family interface (dd/families/__init__.py)
# ---------------------------------------------------------------------------------------------------------

def pair_map(config: Config, teacher: GPT, tokenizer) -> PairMap:
    """Token by token, each the flow map of its noise given the tokens before it."""
    codebook = tokenizer.codebook.to(next(teacher.parameters()).device)
    return functools.partial(sequence_map, teacher, config.recipe, codebook, config.flow)


def teacher_sampler(teacher: GPT, tokenizer, recipe: RecipeConfig) -> Sampler:
    return functools.partial(sample_teacher, teacher, recipe)


def teacher_continuation(teacher: GPT, tokenizer, recipe: RecipeConfig) -> TeacherContinuation:
    def continue_teacher(labels: Tensor, noise: Tensor, stop: int, given: Tensor | None) -> Tensor:
        return sample_teacher(teacher, recipe, labels, noise, stop, given)
    return continue_teacher


def baselines(config: Config, teacher: GPT, tokenizer,
              marginals: TokenMarginals) -> tuple[dict[str, Sampler], dict[str, Completion]]:
    skip_tokens = config.sample.skip_tokens
    samplers = {
        "teacher": teacher_sampler(teacher, tokenizer, config.recipe),
        "onestep": functools.partial(sample_onestep, marginals),
        "skip": functools.partial(sample_skip, teacher, config.recipe, marginals, skip_tokens),
    }
    return samplers, {"skip": functools.partial(complete_skip, marginals, skip_tokens)}


def steps(config: Config, teacher_config) -> dict[str, int]:
    """Sequential model steps of the teacher and the baselines (the skip baseline's last step is parallel)."""
    num_tokens = teacher_config.num_image_tokens
    return {"teacher": num_tokens, "onestep": 1,
            "skip": num_tokens - config.sample.skip_tokens + 1, "reconstruction": 0}
