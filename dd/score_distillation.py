"""Conditional score distillation, DD2 (Liu et al., NeurIPS 2025, arXiv 2510.21003): the teacher's velocity for a
noisy token and the losses of DD2's two stages, per token and family-agnostic.

Path (rectified flow, as dd/flow.py): x_t = (1 - t) x_0 + t eps, t = 0 data, t = 1 noise; networks predict the
velocity v = eps - x_0 (its conditional expectation given x_t). For a token whose teacher law given the earlier
tokens is p over codes c_1..c_V, the teacher's velocity is exact in closed form, the field of the DD1 flow map:

    w_j = softmax_j( log p_j - ||x - (1 - t) c_j||^2 / (2 t^2) ),   D = sum_j w_j c_j,   v_T = (x - D) / t.

Stage 1 (GTS, design/dd2.md section 3): an AR-diffusion model psi regresses v_T on teacher samples,
    L_GTS = || v_psi(x_t, t | q_<i) - v_T(x_t, t | p_i) ||^2,   x_t = (1 - t) c_{q_i} + t eps.
Stage 2 (section 4): the guidance network psi follows the generator's samples q = G(eps) with the denoising loss
    L_psi = || v_psi(x_t, t | q_<i) - (eps' - q_i) ||^2,        x_t = (1 - t) q_i + t eps',
and the generator follows the teacher with SiD's loss (alpha = 1) in velocity space,
    l_i = t^2 (v_T - v_psi) . (v_psi - v_tgt) / n,   v_tgt = eps' - q_i,   n = mean_{i,d} |t (v_T - v_tgt)| (no grad),
whose gradient in q_i is that of the KL between the generator's and the teacher's per-token laws (SiD, arXiv
2404.04057, written with x_0-predictions f = x_t - t v: (f_T - f_psi) . (f_psi - q) = t^2 (v_T - v_psi) . (v_psi -
v_tgt)); n is DMD's and SiD's normaliser mean |q - f_T|, taken as theirs per sample (an image there, a token
sequence here: the mean over its tokens i and dimensions d). Per token it divided by ~0 wherever the generator's
token is a code the teacher agrees with: a DD1 student as the generator gave losses of -165 to -840 and
gradients led by those tokens. The prefix q_<i enters only through the networks'
features, under stop-gradient: the gradient reaches q_i directly and through x_t.

Dimensions: N tokens (rows), d code dimension, V codebook size.
"""
from __future__ import annotations

import torch
from torch import Tensor

from dd.flow import code_logits

T_MIN = 1e-3        # times are drawn in [T_MIN, 1 - T_MIN]: v_T = (x - D) / t is stiff at t = 0


def sample_times(count: int, generator: torch.Generator, device=None) -> Tensor:
    """One time per token, uniform on [T_MIN, 1 - T_MIN] (design/dd2.md section 8's default): (count,)."""
    return (T_MIN + (1 - 2 * T_MIN) * torch.rand(count, generator=generator)).to(device)


def noisy(x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """x_t = (1 - t) x_0 + t eps; x0, eps (N, d), t (N,)."""
    t = t[:, None].to(x0.dtype)
    return (1 - t) * x0 + t * eps


def teacher_velocity(x: Tensor, t: Tensor, probs: Tensor, codebook: Tensor) -> Tensor:
    """v_T(x, t | p) = (x - D(x, t)) / t for rows x (N, d) at times t (N,) under laws probs (N, V) over codebook (V, d).

    Differentiable in x (the generator's loss needs that). Zeros in probs (a top-k recipe) get no weight."""
    x32, t32 = x.float(), t.float()[:, None]
    codebook = codebook.float()
    logits = code_logits(x32, t32, torch.log(probs.float()), codebook, (codebook**2).sum(-1))         # (N, V)
    return ((x32 - torch.softmax(logits, dim=-1) @ codebook) / t32).to(x.dtype)                    # (N, d)


def gts_loss(v_model: Tensor, v_teacher: Tensor) -> Tensor:
    """Stage 1: mean over tokens of || v_psi - v_T ||^2 (summed over d); v_teacher carries no gradient."""
    return ((v_model.float() - v_teacher.detach().float()) ** 2).sum(-1).mean()


def guidance_loss(v_psi: Tensor, x0: Tensor, eps: Tensor) -> Tensor:
    """Stage 2, guidance network: mean over tokens of || v_psi - (eps - x_0) ||^2, x_0 the generator's (detached)."""
    return ((v_psi.float() - (eps - x0.detach()).float()) ** 2).sum(-1).mean()


def generator_loss(v_teacher: Tensor, v_psi: Tensor, x0: Tensor, eps: Tensor, t: Tensor,
                   tokens_per_sample: int = 1) -> Tensor:
    """Stage 2, generator: mean over tokens of t^2 (v_T - v_psi) . (v_psi - v_tgt) / n, n each sample's (module
    docstring): rows are tokens, `tokens_per_sample` consecutive rows one sample.

    v_teacher and v_psi are evaluated at x_t = noisy(x0, eps, t) with x0 = the generator's output, so the loss
    reaches the generator through x0 and x_t; only the generator's parameters should be stepped with it."""
    v_teacher, v_psi, target = v_teacher.float(), v_psi.float(), (eps - x0).float()
    t = t.float()[:, None]
    gap = (t * (v_teacher - target)).abs().detach()                                                 # (N, d)
    normaliser = gap.view(-1, tokens_per_sample * gap.shape[1]).mean(-1).repeat_interleave(tokens_per_sample)
    normaliser = normaliser.clamp_min(1e-6)[:, None]                                                # (N, 1)
    return (t**2 * ((v_teacher - v_psi) * (v_psi - target)).sum(-1, keepdim=True) / normaliser).mean()
