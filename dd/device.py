"""Where the stages compute."""
from __future__ import annotations

import os

import torch


def compute_device() -> torch.device:
    """Where the stages compute: this process's GPU when there is one (cuda:LOCAL_RANK under torchrun)."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")
