"""Sampling shared by every family: the sampler signature, running a sampler over sample indices, and the
onestep baseline's per-position marginals. A family's own samplers (its teacher, its DD student, its skip
baselines) live in its package (dd/raster/, dd/next_scale/).

Every method draws its randomness from one per-sample Gaussian noise tensor (B, L, d), made by
`per_sample_noise` (dd/seeding.py) from (seed, sample index) alone, so sample i is the same image whatever the
batch size or the number of processes. Methods that need a uniform draw per token (the teacher's multinomial,
the onestep baseline) take it from the noise's first channel through the normal CDF, u = Phi(noise[..., 0]).

Methods (method.md section 6):
  teacher   the teacher's KV-cached AR sampling with its recipe (inverse-CDF draw of each token)
  dd        the DD student: 1 step on pure noise; 2 steps re-runs it at t2 on (first t2 tokens, same noise);
            hybrid: the teacher remakes the last tokens before t2 between the two
  onestep   every token drawn independently from its per-position, per-class marginal (no model trained)
  skip      the teacher stops early (raster: `skip_tokens` tokens before the end, the rest drawn like onestep;
            next scale: before its last 1 or 2 scales, decoded from the partial reconstruction)

Dimensions: B batch, L image tokens, V codebook size, d code dimension, K classes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from dd.progress import progress_bar
from dd.seeding import class_labels, per_sample_noise, token_uniforms

# sampler(labels (B,), noise (B, L, d)) -> tokens (B, L)
Sampler = Callable[[Tensor, Tensor], Tensor]

# teacher(labels (B,), noise (B, L, d), stop, given (B, n) or None) -> tokens (B, L_stop): the teacher's own
# sampler up to timestep `stop` (tokens; scales for a next-scale teacher), its first n tokens given (hybrid DD)
TeacherContinuation = Callable[[Tensor, Tensor, int, Tensor | None], Tensor]


@dataclass(frozen=True)
class TokenMarginals:
    """Per-class, per-position empirical token laws of N teacher samples, kept as the samples themselves.

    A dense (K, L, V) table would need K*L*V entries, 4.2e9 for ImageNet LlamaGen (1000 x 256 x 16384). Instead
    column l of `sorted_tokens` holds position l's tokens sorted by (class, token): rows starts[c] to
    starts[c] + counts[c] are class c's law in token order, so its inverse CDF at u is the row of rank
    ceil(u counts[c]) - 1, the same token an inverse-CDF draw from the frequency table gives. A class without
    samples uses every class's (a block of all N rows appended after the classes').
    """
    sorted_tokens: Tensor     # (N or 2N, L)
    starts: Tensor            # (K,)
    counts: Tensor            # (K,)

    @classmethod
    def from_samples(cls, tokens: Tensor, labels: Tensor, num_classes: int, vocab_size: int) -> "TokenMarginals":
        """From teacher tokens (N, L) and their labels (N,)."""
        keys = (labels[:, None] * vocab_size + tokens).sort(dim=0).values            # (N, L) by (class, token)
        sorted_tokens = (keys % vocab_size).int()
        counts = torch.bincount(labels, minlength=num_classes)                        # (K,)
        starts = counts.cumsum(0) - counts
        if (counts == 0).any():
            sorted_tokens = torch.cat([sorted_tokens, tokens.sort(dim=0).values.int()])  # the pooled block
            starts = torch.where(counts == 0, len(tokens), starts)
            counts = torch.where(counts == 0, len(tokens), counts)
        return cls(sorted_tokens, starts, counts)

    def positions_from(self, first: int) -> "TokenMarginals":
        """The laws of positions first.. only."""
        return dataclasses.replace(self, sorted_tokens=self.sorted_tokens[:, first:])

    def to(self, device) -> "TokenMarginals":
        return TokenMarginals(*(t.to(device) for t in (self.sorted_tokens, self.starts, self.counts)))

    def draw(self, labels: Tensor, uniforms: Tensor) -> Tensor:
        """labels (B,), uniforms (B, L) -> tokens (B, L): each the inverse CDF of its class's law at u."""
        counts = self.counts[labels][:, None]                                        # (B, 1)
        rank = (uniforms * counts).ceil().long().clamp(1) - 1                        # (B, L), in [0, count)
        rows = self.starts[labels][:, None] + rank.clamp(max=counts - 1)             # (B, L)
        return self.sorted_tokens.gather(0, rows).long()                             # (B, L)


def run_sampler(sampler: Sampler, indices: range, seed: int, num_tokens: int, code_dim: int, num_classes: int,
                batch_size: int, description: str = "sample", progress: bool = True,
                device: torch.device = torch.device("cpu"), labels_mode: str = "balanced") -> tuple[Tensor, Tensor]:
    """Samples `indices` in batches on `device`: tokens (N, L) and labels (N,) on the CPU. Batching never
    changes a sample."""
    tokens, labels = [], []
    with progress_bar(description, len(indices), enabled=progress) as advance:
        for start in range(indices.start, indices.stop, batch_size):
            batch = range(start, min(start + batch_size, indices.stop))
            labels.append(class_labels(labels_mode, seed, batch, num_classes))
            noise = per_sample_noise(seed, batch, num_tokens, code_dim).to(device)
            tokens.append(sampler(labels[-1].to(device), noise).cpu())
            advance(len(batch))
    return torch.cat(tokens), torch.cat(labels)


# ---------------------------------------------------------------------------------------------------------
# The methods
# ---------------------------------------------------------------------------------------------------------


@torch.inference_mode()
def sample_onestep(marginals: TokenMarginals, labels: Tensor, noise: Tensor) -> Tensor:
    return marginals.draw(labels, token_uniforms(noise))                   # (B, L)


