"""Latency of every sampling method, measured side by side in one process (a benchmark, not a test).

Seconds per image = the median over `repeats` timed runs of one batch (noise in, decoded images out),
divided by the batch size, after one untimed warm-up run. All methods are timed in the same process, with
the same thread count, interleaved repeat by repeat, so a noisy shared machine slows them alike.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from dd.sampling import Sampler
from dd.seeding import balanced_labels, per_sample_noise


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_methods(samplers: dict[str, Sampler], decode: Callable, batch_size: int, num_tokens: int, code_dim: int,
                 num_classes: int, repeats: int, device: torch.device = torch.device("cpu")) -> dict[str, float]:
    """Median seconds per image of each sampler (+ decode) at one batch size."""
    labels = balanced_labels(range(batch_size), num_classes).to(device)
    noise = per_sample_noise(0, range(batch_size), num_tokens, code_dim).to(device)
    timings = {name: [] for name in samplers}
    for repeat in range(repeats + 1):
        for name, sampler in samplers.items():
            _synchronize(device)
            started = time.perf_counter()
            decode(sampler(labels, noise))
            _synchronize(device)
            if repeat > 0:   # the first round warms up caches and allocators
                timings[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) / batch_size for name, values in timings.items()}
