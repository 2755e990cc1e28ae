"""AR families: everything that differs between raster (next-token, LlamaGen) and next-scale (VAR) teachers.

Each family is one package, dd/raster/ and dd/next_scale/, whose modules implement one interface in four parts,
one per group of stages, so that a stage runs (and depends on) no code of the stages after it:

    tokenizer  make_tokenizer                                     dd/<family>/tokenizer.py   tokenizer stage
    teacher    teacher_forcing                                    dd/<family>/teacher.py     teacher stage
    sampling   pair_map, teacher_sampler, teacher_continuation,   dd/<family>/sampling.py    pairs, sample,
               baselines, steps, HEADLINE_SKIP                                               sample_dd, latency,
                                                                                             evaluate
    student    student_parts, empty_student                       dd/<family>/student.py     student, sample_dd
    dd2        dd2_parts                                          dd/<family>/dd2.py         dd2, sample_dd

A stage asks for the part it needs by the teacher's preset (dd/families/tokenizer.py `tokenizer_family`,
teacher.py `teacher_family`, sampling.py `sampling_family`, student.py `student_family`, dd2.py `dd2_family`) and
never branches on
the family itself. The protocols below state each part's signatures (tests/test_families.py checks both
families against them). The models (dd/models/) load the published checkpoints and know nothing of families.

Dimensions: B batch, L tokens, V codebook size, d code dimension.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor, nn

from dd.config import Config, RecipeConfig
from dd.layout import Layout
from dd.models.llamagen import PRESETS as RASTER_PRESETS
from dd.models.var import PRESETS as NEXT_SCALE_PRESETS

FAMILIES = ("raster", "next_scale")

# forward(model, labels (B,), tokens (B, L)) -> teacher-forcing logits (B, L, V)
TeacherForcing = Callable[[nn.Module, Tensor, Tensor], Tensor]

# completion(teacher tokens (B, >= L'), labels (B,), noise (B, L, d)) -> a baseline's tokens, from the teacher's
# samples under the same noise (a teacher stopped early makes the same first tokens)
Completion = Callable[[Tensor, Tensor, Tensor], Tensor]


def family_of(preset: str) -> str:
    """A teacher preset's family: "raster" (a token a step, LlamaGen) or "next_scale" (a scale a step, VAR)."""
    if preset in RASTER_PRESETS:
        return "raster"
    if preset in NEXT_SCALE_PRESETS:
        return "next_scale"
    raise ValueError(f"unknown teacher preset '{preset}'; available: "
                     f"{', '.join(sorted([*RASTER_PRESETS, *NEXT_SCALE_PRESETS]))}")


@dataclass(frozen=True)
class StudentParts:
    """The DD student of one teacher, in its family's terms; timesteps count tokens or scales (`unit`)."""
    build: Callable           # (teacher, codebook) -> a student initialised from the teacher
    loss: Callable            # (student, labels, noise, tokens, codebook, timesteps (B,), targets (V, V)) -> loss
    inputs: Callable          # (tokens, noise, codebook, timestep) -> the trajectory state at the timestep (B, L, d)
    first_noise: Callable     # timestep -> index of the first token still noise
    num_timesteps: int        # timesteps lie below this
    unit: str                 # what a timestep counts: "tokens" or "scales"
    sample: Callable          # (student, codebook, steps, intermediate, labels, noise, teacher, teacher_steps) -> tokens


@dataclass(frozen=True)
class DD2Parts:
    """DD2's networks for one teacher, in its family's terms (dd/dd2.py runs the method on them)."""
    diffusion_model: Callable   # (teacher, code_dim, head_width, head_depth, seed) -> the AR-diffusion model:
                                # a trainable copy of the teacher with a new diffusion head
    generator: Callable         # (AR-diffusion model, codebook) -> the one-step generator initialised from it
    empty_generator: Callable   # (teacher, code_dim, head_width, head_depth) -> a generator to load weights into
    features: Callable          # (model, labels (B,), tokens (B, L)) -> (B, L, C): each token's feature, from the
                                # class and the earlier tokens (raster) or coarser scales (next scale) only
    generate: Callable          # (generator, labels (B,), noise (B, L, d)) -> continuous tokens (B, L, d)
    recipe_probs: Callable      # (labels (B,), tokens (B, L)) -> (B, L, V): the teacher's law of each token given
                                # the earlier ones, after the recipe (one teacher-forced pass)
    kept_tokens: Callable       # timesteps the teacher remakes, K -> the tokens before them (hybrid rows)
    num_timesteps: int          # the teacher's sequential steps (tokens or scales)


class TokenizerFamily(Protocol):
    def make_tokenizer(self, config: Config, layout: Layout, progress: bool = True) -> dict:
        """Fit or train the teacher's tokenizer on the train split (tokenizer.source: train), save it in the
        layout's tokenizer folder, and return its metrics on the validation split."""


class TeacherFamily(Protocol):
    def teacher_forcing(self, model: nn.Module, tokenizer) -> tuple[int, TeacherForcing]:
        """(tokens the model reads, its teacher-forcing forward), for training and the held-out NLL."""


class SamplingFamily(Protocol):
    HEADLINE_SKIP: str        # the skip baseline the evaluation contract reads as `skip`

    def pair_map(self, config: Config, teacher: nn.Module, tokenizer) -> Callable:
        """(labels, noise) -> tokens: each token the flow map of its own noise under the teacher's recipe law."""

    def teacher_sampler(self, teacher: nn.Module, tokenizer, recipe: RecipeConfig) -> Callable:
        """The teacher's own sampler under `recipe`, (labels, noise) -> tokens."""

    def teacher_continuation(self, teacher: nn.Module, tokenizer, recipe: RecipeConfig) -> Callable:
        """The teacher's sampler from given first tokens up to a timestep: hybrid DD sampling's teacher steps."""

    def baselines(self, config: Config, teacher: nn.Module, tokenizer, marginals) -> tuple[dict, dict]:
        """{method: sampler} of the methods that need no student (teacher, onestep, the skip baselines), and the
        skip baselines again as completions of the teacher's own samples."""

    def steps(self, config: Config, teacher_config) -> dict[str, int]:
        """Sequential model steps of the teacher's and the baselines' samplers: {method: steps} (the distilled
        rows count their own, pipeline/sample_dd.py `distilled_steps`)."""


class DD2Family(Protocol):
    def dd2_parts(self, teacher: nn.Module, tokenizer, recipe: RecipeConfig) -> DD2Parts:
        """DD2's networks of this teacher, distilling its distribution after `recipe`."""


class StudentFamily(Protocol):
    def student_parts(self, teacher: nn.Module) -> StudentParts:
        """The DD student of this teacher."""

    def empty_student(self, teacher: nn.Module, code_dim: int) -> nn.Module:
        """A student of the teacher's shape (on the meta device if built there), to load trained weights into."""
