"""Distilled Decoding (DD1; Liu et al., ICLR 2025): the pieces its students share across teacher families.

Each family has its own student (dd/raster/student.py, dd/next_scale/student.py); these are the parts they
share: the soft targets of the loss, the noise logits added to the teacher's head, and the checks of the
sampler's settings. See dd/raster/student.py for why each exists and what it measured.

Dimensions: B batch, V codebook size, d code dimension.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from dd.sampling import TeacherContinuation


class NoiseLogits(nn.Linear):
    """Linear(d -> V), no bias: <W_j, x_i> added to the logit of code j at position i, x_i the position's input
    (noise, or a code where the position is already data: those logits are never used). Zero when built; a
    student from a teacher starts it at the codebook (start_from), the flow-map rule above."""

    def __init__(self, code_dim: int, codebook_size: int):
        super().__init__(code_dim, codebook_size, bias=False)
        nn.init.zeros_(self.weight)

    @torch.no_grad()
    def start_from(self, codebook: Tensor) -> None:
        self.weight.copy_(codebook)         # (V, d); copy_ converts to the weight's dtype and device


def soft_targets(codebook: Tensor, target_width: float) -> Tensor:
    """The target distribution of each token over the codes (V, V), row y for token y (see Loss above)."""
    if target_width <= 0:
        return torch.eye(len(codebook), dtype=codebook.dtype, device=codebook.device)
    distances = torch.cdist(codebook.double(), codebook.double())                              # (V, V)
    nearest = distances.masked_fill(torch.eye(len(codebook), dtype=torch.bool, device=codebook.device),
                                    float("inf")).min(1).values                                 # (V,)
    sigma = target_width * nearest.median()
    return torch.softmax(-distances**2 / (2 * sigma**2), dim=1).to(codebook.dtype)             # (V, V)


def check_dd_steps(steps: int, intermediate: int, last_timestep: int, teacher: TeacherContinuation | None,
                   teacher_steps: int) -> None:
    """DD sampling's settings, in timesteps (tokens or scales): a clear error instead of wrong samples."""
    if steps not in (1, 2):
        raise ValueError(f"DD samples in 1 or 2 student steps, not {steps}")
    if steps == 2 and not 0 < intermediate < last_timestep:
        raise ValueError(f"the second step starts at timestep {intermediate}, outside 1..{last_timestep - 1}")
    if teacher_steps and (steps != 2 or teacher is None or not 0 < teacher_steps <= intermediate):
        raise ValueError(f"hybrid sampling needs 2 steps, a teacher and 0 < teacher_steps <= {intermediate} "
                         f"(got steps={steps}, teacher_steps={teacher_steps})")
