"""DD2's networks for raster-order (LlamaGen) teachers (dd/dd2.py has the method, design/dd2.md the paper).

AR-diffusion model (stage 1, and the guidance network psi of stage 2): the teacher itself, reading discrete
tokens through its own embedding table, with its logits head replaced by a diffusion head (dd/diffusion_head.py)
over (noisy token, time, feature). The feature of token i is the teacher's final hidden state at sequence
position i, the one whose logits predict token i: it has seen the class and tokens 0..i-1. So at initialisation
the features are exactly the teacher's and only the head is new. The generator's earlier outputs reach psi
snapped to codes (dd/dd2.py), so the paper's input adaptation (teaching the backbone to read continuous vectors)
is not needed here.

Generator G (stage 2): the same backbone and head, reading NOISE: input i + 1 is eps_i projected to the model
width, so the feature of token i has seen the class and eps_0..eps_{i-1}, the noise its earlier tokens come
from, and the head takes one Euler step from pure noise, q_i = eps_i - v(eps_i, t = 1 | feature_i). The
projection Linear(d -> C) starts as the least-squares fit of the token embeddings from the code vectors (as the
DD1 student's, dd/raster/student.py), so a noise vector enters as the embedding of the code it resembles.

Dimensions: B batch, L image tokens, C model width, V codebook size, d code dimension.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from dd.checkpoint import with_weights
from dd.config import RecipeConfig
from dd.diffusion_head import DiffusionHead
from dd.families import DD2Parts
from dd.models.llamagen import GPT
from dd.raster.student import fitted_input_projection
from dd.raster.teacher import apply_recipe, guided


def recipe_probs(teacher: GPT, recipe: RecipeConfig):
    """(labels (B,), tokens (B, L)) -> the teacher's law of each token given the earlier ones after the recipe,
    (B, L, V) float32: one teacher-forced pass, the distributions the KV-cached sampler draws from."""
    def probs(labels: Tensor, tokens: Tensor) -> Tensor:
        batch, length = tokens.shape
        if guided(recipe):
            labels = torch.cat([labels, torch.full_like(labels, teacher.config.num_classes)])          # (2B,)
            tokens = tokens.repeat(2, 1)                                                             # (2B, L)
        logits = teacher(labels, tokens).flatten(0, 1)                                               # (2B*L or B*L, V)
        # apply_recipe reads the conditional rows first, the null-class rows second: flattening keeps that order.
        return apply_recipe(logits, recipe).view(batch, length, -1)                                  # (B, L, V)
    return probs


def _backbone_state(model: nn.Module, drop: tuple[str, ...]) -> dict:
    """Copies of a GPT's weights without its logits head and the tables in `drop` (the copies are trained, the
    source never moves)."""
    return {f"gpt.{key}": value.detach().clone() for key, value in model.state_dict().items()
            if not key.startswith(("output.", *drop))}


class ARDiffusion(nn.Module):
    """psi: features(labels, tokens) (B, L, C) from the class and earlier tokens; head(x_t, t, feature) -> velocity."""

    def __init__(self, teacher_like: GPT, code_dim: int, head_width: int, head_depth: int):
        super().__init__()
        self.gpt = GPT(teacher_like.config)
        del self.gpt.output                          # the diffusion head replaces the logits head
        self.head = DiffusionHead(code_dim, teacher_like.config.dim, head_width, head_depth)

    @classmethod
    def from_teacher(cls, teacher: GPT, code_dim: int, head_width: int = 256, head_depth: int = 3,
                     seed: int = 0) -> "ARDiffusion":
        """The teacher's backbone (copied) and a new head, drawn from `seed` (not the global RNG)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = DiffusionHead(code_dim, teacher.config.dim, head_width, head_depth)
        state = _backbone_state(teacher, drop=()) | {f"head.{k}": v for k, v in head.state_dict().items()}
        return with_weights(lambda: cls(teacher, code_dim, head_width, head_depth), state)

    def features(self, labels: Tensor, tokens: Tensor) -> Tensor:
        h = torch.cat([self.gpt.embed_class(labels), self.gpt.embed_tokens(tokens[:, :-1])], dim=1)  # (B, L, C)
        return self.gpt.backbone(h)                                                                 # (B, L, C)


class Generator(nn.Module):
    """G: (labels (B,), noise (B, L, d)) -> continuous tokens q (B, L, d) in one forward pass."""

    def __init__(self, teacher_like: GPT, code_dim: int, head_width: int, head_depth: int):
        super().__init__()
        self.gpt = GPT(teacher_like.config)
        del self.gpt.output, self.gpt.tok_embeddings     # G reads noise vectors, never discrete tokens
        self.input_projection = nn.Linear(code_dim, teacher_like.config.dim)
        self.head = DiffusionHead(code_dim, teacher_like.config.dim, head_width, head_depth)

    @classmethod
    def from_diffusion(cls, model: ARDiffusion, codebook: Tensor) -> "Generator":
        """G from the AR-diffusion model: its backbone and head (copied), the input projection fitted (above)."""
        head = model.head
        weight, bias = fitted_input_projection(codebook, model.gpt.tok_embeddings.weight)
        state = (_backbone_state(model.gpt, drop=("tok_embeddings.",))
                 | {f"head.{k}": v.detach().clone() for k, v in head.state_dict().items()}
                 | {"input_projection.weight": weight, "input_projection.bias": bias})
        return with_weights(lambda: cls(model.gpt, codebook.shape[1], head.input_projection.out_features,
                                        len(head.blocks)), state)

    def forward(self, labels: Tensor, noise: Tensor) -> Tensor:
        h = torch.cat([self.gpt.embed_class(labels), self.input_projection(noise[:, :-1])], dim=1)   # (B, L, C)
        features = self.gpt.backbone(h)                                                             # (B, L, C)
        t = torch.ones(noise.shape[:2], device=noise.device)                                        # (B, L)
        return noise - self.head(noise, t, features)                                                # (B, L, d)


# ---------------------------------------------------------------------------------------------------------
# The family interface (dd/families/__init__.py)
# ---------------------------------------------------------------------------------------------------------

def dd2_parts(teacher: GPT, tokenizer, recipe: RecipeConfig) -> DD2Parts:
    """Timesteps count tokens: the teacher remaking the last K leaves the generator's first L - K."""
    num_tokens = teacher.config.num_image_tokens

    def kept_tokens(teacher_steps: int) -> int:
        if not 1 <= teacher_steps < num_tokens:
            raise ValueError(f"dd2.teacher_steps holds {teacher_steps}: the teacher can remake 1 to {num_tokens - 1} "
                             f"of its {num_tokens} tokens; change it in params.yaml")
        return num_tokens - teacher_steps

    return DD2Parts(diffusion_model=ARDiffusion.from_teacher, generator=Generator.from_diffusion,
                    empty_generator=Generator, features=lambda model, labels, tokens: model.features(labels, tokens),
                    generate=lambda generator, labels, noise: generator(labels, noise),
                    recipe_probs=recipe_probs(teacher, recipe), kept_tokens=kept_tokens,
                    num_timesteps=num_tokens)
