"""The GPU check script's samplers run (on the CPU, at tiny presets), so a GPU session spends its few minutes
measuring, not debugging: same code path as the full-size presets, bf16 included."""
import importlib.util
from pathlib import Path

import pytest
import torch

from dd.sampling import balanced_labels, per_sample_noise

spec = importlib.util.spec_from_file_location("gpu_check", Path(__file__).parents[1] / "scripts" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


@pytest.mark.parametrize("preset", ["llamagen-tiny", "var-tiny"])
def test_teacher_and_dd_samplers_run_at_tiny_presets(preset):
    torch.manual_seed(0)
    teacher, dd, num_tokens, code_dim, num_classes = gpu_check.samplers(preset, torch.device("cpu"))
    labels = balanced_labels(range(2), num_classes)
    noise = per_sample_noise(0, range(2), num_tokens, code_dim)
    teacher_tokens = teacher(labels, noise)
    if isinstance(teacher_tokens, list):                      # VAR: one tensor per scale
        teacher_tokens = torch.cat(teacher_tokens, dim=1)
    assert teacher_tokens.shape == (2, num_tokens)
    assert dd(labels, noise).shape == (2, num_tokens)


def test_the_published_pipeline_check_runs_every_stage_at_a_tiny_preset(monkeypatch):
    from dd.models.llamagen_vq import PRESETS as VQ_PRESETS
    from dd.presets import PUBLISHED, Published
    from tests.test_published import VQ_TEST
    monkeypatch.setitem(VQ_PRESETS, "vq-test", VQ_TEST)
    monkeypatch.setitem(PUBLISHED, "llamagen-tiny", Published("llamagen", "", "vq-test", "",
                                                              PUBLISHED["llamagen-b"].paper_recipe))
    report = gpu_check.published_pipeline("llamagen-tiny", {"pairs": {"num_pairs": 32, "shard_size": 16, "batch_size": 16},
        "student": {"timesteps": [0, 32], "train": {
        "train_steps": 2, "batch_size": 4, "checkpoint_every": 2, "log_every": 1}}, "sample": {
        "num_samples": 8, "batch_size": 4, "skip_tokens": 32}, "latency": {"batch_sizes": [2], "repeats": 1},
        "evaluate": {"reference": "unused.npz", "latency_batch_size": 2}})
    assert list(report["stage_seconds"]) == list(gpu_check.PIPELINE_STAGES)
    assert report["recipe"]["top_k"] == 8000 and report["dd_images_shape"] == [8, 128, 128, 3]
    assert report["latency"]["batch_2"]["dd"]["speedup"] > 0
