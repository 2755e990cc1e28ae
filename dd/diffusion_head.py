"""The per-token diffusion head of DD2's networks (arXiv 2510.21003 section 3; MAR's SimpleMLPAdaLN, arXiv 2406.11838).

DD2's AR-diffusion model, its one-step generator and its guidance network are each an AR backbone (the teacher's
transformer) plus this head: a small residual MLP that maps one noisy continuous token x_t (a code vector plus
noise, d numbers), its time t and the backbone's feature z at that position (C numbers: what the earlier tokens
say) to a velocity v (d numbers) on the rectified-flow path x_t = (1 - t) x_0 + t eps. The time and the feature
condition every block through adaptive LayerNorm (shift, scale, gate), which starts at zero, and the output layer
starts at zero, so a new head predicts v = 0 whatever its input.

Dimensions: N tokens (any leading shape), d code dimension, C backbone width, W head width.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def time_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal features of t in [0, 1] (..., ) -> (..., dim); t is scaled by 1000 as in DiT and MAR."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = 1000.0 * t.float()[..., None] * frequencies                     # (..., dim / 2)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class ResidualBlock(nn.Module):
    """LayerNorm, AdaLN shift and scale, MLP, AdaLN gate, residual."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))
        nn.init.zeros_(self.adaln[1].weight)
        nn.init.zeros_(self.adaln[1].bias)

    def forward(self, h: Tensor, condition: Tensor) -> Tensor:
        shift, scale, gate = self.adaln(condition).chunk(3, dim=-1)
        return h + gate * self.mlp(modulate(self.norm(h), shift, scale))


class DiffusionHead(nn.Module):
    """v(x_t, t | z): x (..., d), t (...) in [0, 1], z (..., C) -> velocity (..., d)."""

    def __init__(self, code_dim: int, feature_dim: int, width: int = 256, depth: int = 3):
        super().__init__()
        self.input_projection = nn.Linear(code_dim, width)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.feature_projection = nn.Linear(feature_dim, width)
        self.blocks = nn.ModuleList([ResidualBlock(width) for _ in range(depth)])
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_adaln = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.output = nn.Linear(width, code_dim)
        for layer in (self.final_adaln[1], self.output):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, t: Tensor, features: Tensor) -> Tensor:
        width = self.input_projection.out_features
        condition = self.time_mlp(time_embedding(t, width).to(x.dtype)) + self.feature_projection(features)  # (..., W)
        h = self.input_projection(x)                                                                      # (..., W)
        for block in self.blocks:
            h = block(h, condition)
        shift, scale = self.final_adaln(condition).chunk(2, dim=-1)
        return self.output(modulate(self.final_norm(h), shift, scale))                                    # (..., d)
