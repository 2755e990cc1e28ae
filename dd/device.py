"""Where the stages compute."""
from __future__ import annotations

import os

import torch


def compute_device() -> torch.device:
    """Where the stages compute: this process's GPU when there is one (cuda:LOCAL_RANK under torchrun)."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device`. A CPU tensor bound for CUDA goes through pinned memory without blocking the host: a
    pageable copy waits for the GPU's queued work, which would stop the host preparing the next batch (its noise,
    dd/pairs.py) while the GPU still computes this one."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
