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
    named, num_tokens, code_dim, num_classes = gpu_check.samplers(preset, torch.device("cpu"))
    labels = balanced_labels(range(2), num_classes)
    noise = per_sample_noise(0, range(2), num_tokens, code_dim)
    tokens = {}
    for name, sampler in named.items():
        tokens[name] = sampler(labels, noise)
        if isinstance(tokens[name], list):                      # VAR's bf16 teacher: one tensor per scale
            tokens[name] = torch.cat(tokens[name], dim=1)
        assert tokens[name].shape == (2, num_tokens), name
    hybrids = {"llamagen-tiny": [20], "var-tiny": [1, 2]}[preset]       # the paper's K below m
    assert set(named) == {"teacher", "teacher_stage", "dd_1step", "dd_1step_stage", *(f"dd_hybrid{k}" for k in hybrids)}
