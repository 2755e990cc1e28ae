"""Seeds derived from (stage seed, index): the one source of randomness for samples and training steps.

Sample i and training step s each get their own torch.Generator, so results never depend on batch size,
process count or resumption. torch's CPU generator (mt19937) keeps only 32 bits of a seed, so combining
seed and index by bit-shifting silently drops the seed; numpy's SeedSequence hashes the pair instead.

Every sample's randomness is one Gaussian noise tensor (L, d) from its own generator, and its class; a
uniform draw per token (a teacher's multinomial, the onestep baseline) is read off the noise's first channel.
Pairs, samplers and the latency benchmark all draw through these functions.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import Tensor


def indexed_generator(seed: int, index: int, stream: int = 0) -> torch.Generator:
    """The generator of item `index`; another `stream` gives the same item a second, independent one."""
    entropy = [seed, index] if stream == 0 else [seed, index, stream]
    state = np.random.SeedSequence(entropy).generate_state(1)[0]   # 32 well-mixed bits
    return torch.Generator().manual_seed(int(state))


def per_sample_noise(seed: int, indices: Iterable[int], num_tokens: int, code_dim: int) -> Tensor:
    """N(0, I) noise (B, L, d), row b drawn from its own generator seeded by (seed, indices[b])."""
    return torch.stack([torch.randn(num_tokens, code_dim, generator=indexed_generator(seed, int(index)))
                        for index in indices])


def balanced_labels(indices: Iterable[int], num_classes: int) -> Tensor:
    """Sample i gets class i % num_classes: every class equally often, as in the balanced test split."""
    return torch.tensor([int(i) % num_classes for i in indices], dtype=torch.long)


def uniform_labels(seed: int, indices: Iterable[int], num_classes: int) -> Tensor:
    """Sample i gets a uniformly random class from its own generator (the paper's 50k protocol), a stream apart
    from the one its noise comes from, so the two are independent."""
    return torch.tensor([int(torch.randint(num_classes, (1,), generator=indexed_generator(seed, int(i), stream=1)))
                         for i in indices], dtype=torch.long)


def class_labels(mode: str, seed: int, indices: Iterable[int], num_classes: int) -> Tensor:
    """sample.labels: "balanced" or "uniform"."""
    return balanced_labels(indices, num_classes) if mode == "balanced" else uniform_labels(seed, indices, num_classes)


def inverse_cdf(probs: Tensor, uniform: Tensor) -> Tensor:
    """Draw from each row of probs (..., V) with its uniform (...): the first token whose CDF reaches u."""
    cdf = probs.cumsum(-1)
    return torch.searchsorted(cdf, (uniform * cdf[..., -1]).unsqueeze(-1).contiguous()).squeeze(-1)


def token_uniforms(noise: Tensor) -> Tensor:
    """One uniform per token from the noise's first channel: (B, L, d) -> (B, L)."""
    return torch.special.ndtr(noise[..., 0])
