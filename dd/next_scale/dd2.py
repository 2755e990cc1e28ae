"""DD2's networks for next-scale (VAR) teachers (dd/dd2.py has the method, design/dd2.md the paper; dd/raster/dd2.py
is the raster family's counterpart, which this one follows).

Timesteps count scales. Tokens (B, L) are all K scales' tokens coarse to fine, raster order within a scale, as
everywhere in dd/next_scale/. Like the VAR teacher, none of the networks here holds the VQVAE: each reads the
continuous next-scale inputs the VQVAE builds (VAR.forward's `scale_inputs`, (B, L - first_len, d)), and
`dd2_parts` binds the tokenizer that builds them, so the family interface's calls take tokens or noise as the
raster family's do.

AR-diffusion model (stage 1, and the guidance network psi of stage 2): the teacher itself, reading the
next-scale inputs built from the tokens of the coarser scales (teacher forcing, dd/next_scale/teacher.py), with
its logits Linear `head` replaced by a diffusion head (dd/diffusion_head.py) over (noisy token, time, feature).
The feature of a token is the teacher's hidden state at its position after the class-conditioned AdaLN norm
`head_nm`, exactly what the logits head reads: it has seen the class and the coarser scales only (the teacher's
block-causal mask and inputs). So at initialisation the features are the teacher's and only the head is new.

Generator G (stage 2): the same network, reading NOISE eps (B, L, d). Its next-scale inputs are built by the
VQVAE's f_hat machinery (upsample, phi, accumulate f_hat, area-downsample to the next scale) from the noise
vectors of the coarser scales taken as code vectors, the path the teacher's inputs take from the codes of its
tokens, so the feature of a token of scale k has seen the class and the noise of scales < k; the head then
takes one Euler step from pure noise, q_i = eps_i - v(eps_i, t = 1 | feature_i). The noise lives in the flow's
code space (the tokenizer's `codebook`, normalised to unit variance, dd/next_scale/tokenizer.py), the VQVAE
in its own: a noise vector enters as the VQVAE code that the flow code it resembles stands for (`vqvae_codes`),
as the raster generator's input projection makes a noise vector enter as the embedding of the code it resembles.
Given noise equal to the flow codes of some tokens, G's features are the AR-diffusion model's for those tokens.

Dimensions: B batch, L tokens of all scales, P tokens of one scale, K scales, C model width, V codebook size,
d code dimension (Cvae).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from dd.checkpoint import with_weights
from dd.config import RecipeConfig
from dd.diffusion_head import DiffusionHead
from dd.families import DD2Parts
from dd.models.var import VAR
from dd.next_scale.teacher import guided_by, guided_probs, teacher_forcing


def recipe_probs(teacher: VAR, tokenizer, recipe: RecipeConfig) -> Callable[[Tensor, Tensor], Tensor]:
    """(labels (B,), tokens (B, L)) -> the teacher's law of each token given the coarser scales after the recipe,
    (B, L, V) float32: one teacher-forced pass (conditional and null-class rows in one batch when guided), the
    distributions the KV-cached sampler draws from (dd/next_scale/teacher.py `generate_var`)."""
    config, (_, forward) = teacher.config, teacher_forcing(teacher, tokenizer)

    def probs(labels: Tensor, tokens: Tensor) -> Tensor:
        batch = len(tokens)
        if guided_by(recipe):
            labels = torch.cat([labels, torch.full_like(labels, config.num_classes)])               # (2B,)
            tokens = tokens.repeat(2, 1)                                                           # (2B, L)
        logits = forward(teacher, labels, tokens)                                                  # (2B or B, L, V)
        # guided_probs reads the conditional rows first, the null-class rows second, and ramps guidance by scale.
        per_scale = [guided_probs(logits[:, start:stop], recipe, k, config.num_scales)             # (B*P, V) each
                     for k, (start, stop) in enumerate(config.scale_slices)]
        return torch.cat([p.view(batch, -1, p.shape[-1]) for p in per_scale], dim=1)               # (B, L, V)
    return probs


def vqvae_codes(tokenizer) -> Callable[[Tensor], Tensor]:
    """Vectors in the flow's code space (the tokenizer's `codebook`, where the noise lives) -> the VQVAE's own code
    space: the inverse of the tokenizer's normalisation (a shift and one factor, MultiScaleTokenizer.normalisation)."""
    shift, factor = (x.float() for x in tokenizer.normalisation())
    return lambda vectors: vectors * factor.to(vectors.device) + shift.to(vectors.device)


def noise_scale_inputs(tokenizer) -> Callable[[Tensor], Tensor]:
    """noise (B, L, d) -> the generator's next-scale inputs (B, L - first_len, d): the VQVAE's teacher-forcing
    inputs (MultiScaleVQVAE.next_scale_inputs) with each token's noise, taken to the VQVAE's code space, in
    place of its code. They carry no gradient: nothing in them is trained."""
    to_codes, vqvae = vqvae_codes(tokenizer), tokenizer.model

    def inputs(noise: Tensor) -> Tensor:
        with torch.no_grad():
            per_scale = to_codes(noise).split(list(vqvae.config.tokens_per_scale), dim=1)      # K x (B, P, d)
            return vqvae.next_scale_inputs(list(per_scale))                                   # (B, L - first_len, d)
    return inputs


class _VARWithDiffusionHead(nn.Module):
    """A VAR of the teacher's config without its logits head, and a diffusion head: the network both DD2 models are."""

    def __init__(self, teacher_like: VAR, code_dim: int, head_width: int, head_depth: int):
        super().__init__()
        self.var = VAR(teacher_like.config)
        del self.var.head                            # the diffusion head replaces the logits head
        self.head = DiffusionHead(code_dim, teacher_like.config.dim, head_width, head_depth)

    def features(self, labels: Tensor, scale_inputs: Tensor) -> Tensor:
        """labels (B,), next-scale inputs (B, L - first_len, d) -> (B, L, C): each token's hidden state after
        head_nm, what the teacher's logits head reads (it sees the class and the coarser scales' inputs only)."""
        h, cond = self.var._over_scales(labels, scale_inputs)                                   # (B, L, C), (B, C)
        return self.var.head_nm(h, cond)                                                        # (B, L, C)


class ARDiffusion(_VARWithDiffusionHead):
    """psi: features(labels, scale_inputs) (B, L, C) from the class and coarser scales; head(x_t, t, feature) ->
    velocity. The tokens' scale inputs are the teacher's (MultiScaleTokenizer.next_scale_inputs)."""

    @classmethod
    def from_teacher(cls, teacher: VAR, code_dim: int, head_width: int = 256, head_depth: int = 3,
                     seed: int = 0) -> "ARDiffusion":
        """Copies of the teacher's weights (all but `head`; the source never moves) and a new head, drawn from
        `seed` (not the global RNG)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = DiffusionHead(code_dim, teacher.config.dim, head_width, head_depth)
        state = ({f"var.{key}": value.detach().clone() for key, value in teacher.state_dict().items()
                  if not key.startswith("head.")}
                 | {f"head.{key}": value for key, value in head.state_dict().items()})
        return with_weights(lambda: cls(teacher, code_dim, head_width, head_depth), state)


class Generator(_VARWithDiffusionHead):
    """G: (labels (B,), noise (B, L, d), its scale inputs (B, L - first_len, d) from `noise_scale_inputs`) ->
    continuous tokens q (B, L, d) in one forward pass."""

    @classmethod
    def from_diffusion(cls, model: ARDiffusion, codebook: Tensor) -> "Generator":
        """G from the AR-diffusion model: its backbone and head, copied (training G never moves the model)."""
        head = model.head
        state = {key: value.detach().clone() for key, value in model.state_dict().items()}
        return with_weights(lambda: cls(model.var, codebook.shape[1], head.input_projection.out_features,
                                        len(head.blocks)), state)

    def forward(self, labels: Tensor, noise: Tensor, scale_inputs: Tensor) -> Tensor:
        features = self.features(labels, scale_inputs)                                          # (B, L, C)
        t = torch.ones(noise.shape[:2], device=noise.device)                                    # (B, L)
        return noise - self.head(noise, t, features)                                            # (B, L, d)


# ---------------------------------------------------------------------------------------------------------
# The family interface (dd/families/__init__.py)
# ---------------------------------------------------------------------------------------------------------

def dd2_parts(teacher: VAR, tokenizer, recipe: RecipeConfig) -> DD2Parts:
    """Timesteps count scales: the teacher remaking the last K scales leaves the generator's tokens of the first
    K_all - K (K in 1..K_all - 1: remaking all of them is the teacher's own row)."""
    config, scale_inputs = teacher.config, noise_scale_inputs(tokenizer)

    def kept_tokens(teacher_steps: int) -> int:
        if not 0 < teacher_steps < config.num_scales:
            raise ValueError(f"dd2.teacher_steps holds {teacher_steps}: the teacher can remake 1 to "
                             f"{config.num_scales - 1} of its {config.num_scales} scales; change it in params.yaml "
                             f"(overrides.<teacher>.dd2.teacher_steps)")
        return config.scale_slices[config.num_scales - teacher_steps][0]

    return DD2Parts(diffusion_model=ARDiffusion.from_teacher, generator=Generator.from_diffusion,
                    empty_generator=Generator,
                    features=lambda model, labels, tokens: model.features(labels, tokenizer.next_scale_inputs(tokens)),
                    generate=lambda generator, labels, noise: generator(labels, noise, scale_inputs(noise)),
                    recipe_probs=recipe_probs(teacher, tokenizer, recipe), kept_tokens=kept_tokens,
                    num_timesteps=config.num_scales)
