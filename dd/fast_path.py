"""The samplers' fast path: bf16 matrix products, and on CUDA the whole sampling loop replayed as one CUDA graph.

Every sampler of the stages (the teacher's KV-cached loop, DD's steps, hybrid sampling, the baselines) is a pure
function of (labels, noise) with a static KV cache and no host synchronisation inside, so it can be captured as
one CUDA graph: the GPU then runs the loop's hundreds of small kernels without the CPU launching each (the
eager loop at batch 1 is launch-bound; on an H200 a captured llamagen-b teacher took 368.8 ms an image against
2,150.7 ms eager, metrics/gpu/gpu_check_h200.json). A graph is captured once per input shape, so the samples of
a run come from one or two graphs (a last, smaller batch gets its own).

bf16 is autocast, not a bf16 copy of the weights: the matrix products run in bf16 while softmax, cumulative
sums and the inverse-CDF draws stay in fp32 (autocast's policy), and the fp32 inputs (noise, codebook) need no
cast. bf16 can move a token whose inverse-CDF draw falls within rounding of a boundary, so the samples have the
fp32 path's law rather than its exact tokens (tests/test_fast_path.py measures the agreement on the CPU).
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import Tensor

from dd.config import SampleConfig
from dd.sampling import Sampler

# capture(function) -> (replay, output): run function once as a recording, then replay() recomputes output in place
Capture = Callable[[Callable[[], Tensor]], tuple[Callable[[], None], Tensor]]


def fast_sampler(sampler: Sampler, config: SampleConfig, device: torch.device) -> Sampler:
    """The sampler as the stages run it on `device`: in bf16 where sample.precision asks for it, and on CUDA
    replayed as CUDA graphs where sample.cuda_graphs allows."""
    mode = fast_path_mode(config, device)
    if mode["precision"] == "bf16":
        sampler = functools.partial(_autocast_bf16, sampler, device.type)
    if mode["cuda_graphs"]:
        sampler = GraphedSampler(sampler, cuda_graph)
    return sampler


def fast_path_mode(config: SampleConfig, device: torch.device) -> dict:
    """What fast_sampler does on `device`: {"precision": "bf16" or "fp32", "cuda_graphs": bool}."""
    bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    return {"precision": "bf16" if bf16 else "fp32", "cuda_graphs": config.cuda_graphs and device.type == "cuda"}


def fast_samplers(samplers: dict[str, Sampler], config: SampleConfig, device: torch.device) -> dict[str, Sampler]:
    return {name: fast_sampler(sampler, config, device) for name, sampler in samplers.items()}


def _autocast_bf16(sampler: Sampler, device_type: str, labels: Tensor, noise: Tensor) -> Tensor:
    with torch.autocast(device_type, torch.bfloat16):
        return sampler(labels, noise)


class GraphedSampler:
    """A sampler captured once per input shape and replayed: each call copies its labels and noise into the
    graph's static inputs, replays, and returns a copy of the static output (the next replay overwrites it)."""

    def __init__(self, sampler: Sampler, capture: Capture):
        self.sampler, self.capture = sampler, capture
        self.graphs: dict[tuple, tuple[Tensor, Tensor, Callable[[], None], Tensor]] = {}

    def __call__(self, labels: Tensor, noise: Tensor) -> Tensor:
        key = (labels.shape, labels.dtype, noise.shape, noise.dtype, noise.device)
        if key not in self.graphs:
            static_labels, static_noise = labels.clone(), noise.clone()
            try:
                replay, output = self.capture(lambda: self.sampler(static_labels, static_noise))
            except RuntimeError as error:
                raise RuntimeError(f"this sampler could not be captured as a CUDA graph ({error}); "
                                   "set sample.cuda_graphs: false in params.yaml to sample eagerly") from error
            self.graphs[key] = static_labels, static_noise, replay, output
        static_labels, static_noise, replay, output = self.graphs[key]
        static_labels.copy_(labels)
        static_noise.copy_(noise)
        replay()
        return output.clone()


def cuda_graph(function: Callable[[], Tensor]) -> tuple[Callable[[], None], Tensor]:
    """Capture function() as one CUDA graph after a warm-up run on a side stream (kernel selection, the
    allocator's first blocks); its output tensor is the graph's static output."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        function()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = function()
    return graph.replay, output
