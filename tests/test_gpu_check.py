"""The GPU check script's samplers run (on the CPU, at tiny presets), so a GPU session spends its few minutes
measuring, not debugging: same code path as the full-size presets, bf16 included."""
import importlib.util
from pathlib import Path

import pytest
import torch

from dd.seeding import balanced_labels, per_sample_noise

spec = importlib.util.spec_from_file_location("gpu_check", Path(__file__).parents[1] / "scripts" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


@pytest.mark.parametrize("preset", ["llamagen-tiny", "var-tiny"])
def test_teacher_and_dd_samplers_run_at_tiny_presets(preset):
    torch.manual_seed(0)
    teacher, dd, hybrids, num_tokens, code_dim, num_classes = gpu_check.samplers(preset, torch.device("cpu"))
    labels = balanced_labels(range(2), num_classes)
    noise = per_sample_noise(0, range(2), num_tokens, code_dim)
    teacher_tokens = teacher(labels, noise)
    if isinstance(teacher_tokens, list):                      # VAR: one tensor per scale
        teacher_tokens = torch.cat(teacher_tokens, dim=1)
    assert teacher_tokens.shape == (2, num_tokens)
    assert dd(labels, noise).shape == (2, num_tokens)
    assert list(hybrids) == {"llamagen-tiny": [20], "var-tiny": [1, 2]}[preset]     # the paper's K below m
    for hybrid in hybrids.values():
        assert hybrid(labels, noise).shape == (2, num_tokens)

