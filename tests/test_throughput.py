"""scripts/throughput.py's arithmetic: marginal costs from two runs cancel every fixed cost, and the projection
scales them to the paper's counts over G GPUs; its teacher throughput runs the stages' sampler (tiny preset, CPU)."""
import importlib.util
import sys
from pathlib import Path

import pytest

from dd.config import resolve

SCRIPTS = Path(__file__).parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))                                # its sibling imports (gpu_check, published_pipeline)
spec = importlib.util.spec_from_file_location("throughput", SCRIPTS / "throughput.py")
throughput = importlib.util.module_from_spec(spec)
spec.loader.exec_module(throughput)


def _report(counts: dict, fixed: float) -> dict:
    """A published_pipeline report whose stages cost `fixed` seconds plus 2 ms a pair, 0.5 s a step, 30 ms a
    sample (sample) and 4 ms a sample (sample_dd), and its training log."""
    steps = range(1, counts["student_steps"] + 1)
    return {"stage_seconds": {"pairs": fixed + 0.002 * counts["num_pairs"], "student": fixed + 0.5 * counts["student_steps"],
                              "sample": fixed + 0.03 * counts["num_samples"], "sample_dd": fixed + 0.004 * counts["num_samples"],
                              "latency": fixed},
            # the training clock: the first step also pays a warm-up of 3 s
            "student_log": [{"step": step, "train/seconds": 3.0 + 0.5 * step} for step in steps]}


def test_marginal_costs_cancel_the_fixed_costs_and_the_projection_scales_them():
    counts = [{"num_pairs": 256, "student_steps": 10, "num_samples": 128},
              {"num_pairs": 1024, "student_steps": 40, "num_samples": 512}]
    costs = throughput.marginal_costs(_report(counts[0], 7.0), _report(counts[1], 90.0 - 83.0), counts)
    assert {stage: round(cost["seconds_per_unit"], 6) for stage, cost in costs.items()} == \
        {"pairs": 0.002, "student": 0.5, "sample": 0.03, "sample_dd": 0.004}
    config = resolve({"teachers": ["llamagen-b"], "overrides": {"llamagen-b": {"evaluate": {"reference": "x.npz"}}}},
                     "llamagen-b")
    scale = throughput.paper_scale(config, student_steps=36_000, student_batch=None)
    assert scale == {"pairs": 1_200_000, "student": 36_000, "sample": 50_000, "sample_dd": 50_000,
                     "student_batch": config.student.train.batch_size}
    hours = throughput.project(costs, scale, gpus=8)
    assert hours["pairs"] == round(0.002 * 1_200_000 / 8 / 3600, 2) and hours["student"] == round(0.5 * 36_000 / 8 / 3600, 2)
    assert hours["total"] == pytest.approx(sum(v for k, v in hours.items() if k != "total"), abs=0.02)


def test_teacher_throughput_runs_the_stages_sampler():
    assert throughput.teacher_throughput("llamagen-tiny", batch_size=4, batches=2) > 0
