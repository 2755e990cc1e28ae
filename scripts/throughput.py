"""Throughput of the real stages at a published preset, and the projected wall time of the paper's scale.

Runs the stages as `dvc repro` does (scripts/published_pipeline.py: random weights in the published format, the
paper's recipe, params.yaml's training settings) twice, at a small and a larger count of pairs, student steps
and samples, and takes each stage's marginal cost: (seconds at the larger count - at the smaller) / (the
difference in count), what one more pair, training step or sample costs once loading, compiling, capturing and
warm-up are paid. Beside it, the teacher's own sampling throughput as the stages sample it (fp32 weights through
dd/fast_path.py) at the pairs' batch, the bar pair generation is held to (>= 80% of it: the flow map nearly free).

Then the paper's scale on G GPUs of this kind: the preset's pairs.num_pairs (1.2M, the paper's order; not
published), student.train.train_steps at student.train.batch_size (params.yaml's unless --student-steps /
--student-batch say otherwise: the paper's are not published either) and sample.num_samples per method
(50,000). Pairs and samples split by sample index over G processes and training over G DDP ranks at the same
global batch, so each stage's time is taken as 1/G of one GPU's; communication is not measured, so the figures are
a lower bound for G > 1. The fixed costs (loading, compiling) are not in the projection.

    python scripts/throughput.py llamagen-b --gpus 8 --out metrics/gpu/    # on a GPU
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from dd.config import resolve
from dd.device import compute_device
from dd.latency import time_methods
from gpu_check import samplers                     # sibling scripts, run from here
from published_pipeline import published_pipeline, repository_sections, small_counts

# stage -> (what its count is, the small_counts argument that sets it)
UNITS = {"pairs": ("pair", "num_pairs"), "student": ("step", "student_steps"),
         "sample": ("sample", "num_samples"), "sample_dd": ("sample", "num_samples")}


def marginal_costs(small: dict, large: dict, counts: tuple[dict, dict]) -> dict:
    """Seconds per unit of each stage of UNITS, from two published_pipeline reports at two counts. The student's
    comes from the larger run's training log instead (its clock at the first and last logged step): the first
    run's first steps also pay the process's one-time warm-up (kernels, allocator), which the two runs' stage
    seconds would not cancel."""
    costs = {}
    for stage, (unit, key) in UNITS.items():
        if stage == "student":
            first, last = large["student_log"][0], large["student_log"][-1]
            seconds = (last["train/seconds"] - first["train/seconds"]) / (last["step"] - first["step"])
        else:
            extra = counts[1][key] - counts[0][key]
            seconds = (large["stage_seconds"][stage] - small["stage_seconds"][stage]) / extra
        costs[stage] = {"unit": unit, "seconds_per_unit": seconds}
    return costs


def paper_scale(config, student_steps: int | None, student_batch: int | None) -> dict:
    """The count of each stage's unit at the paper's scale: pairs, student steps, samples per sampling stage (the
    sample stage draws the teacher, its reference set and the baselines; sample_dd each DD row)."""
    return {"pairs": config.pairs.num_pairs, "student": student_steps or config.student.train.train_steps,
            "sample": config.sample.num_samples, "sample_dd": config.sample.num_samples,
            "student_batch": student_batch or config.student.train.batch_size}


def project(costs: dict, scale: dict, gpus: int) -> dict:
    """Hours of each stage (and the total) at the paper's scale on `gpus` GPUs: the marginal cost times the count,
    over the GPUs."""
    hours = {stage: costs[stage]["seconds_per_unit"] * scale[stage] / gpus / 3600 for stage in UNITS}
    return {**{stage: round(value, 2) for stage, value in hours.items()}, "total": round(sum(hours.values()), 2)}


def teacher_throughput(preset: str, batch_size: int, batches: int) -> float:
    """Samples per second of the teacher as the stages sample it, at one batch size, over `batches` batches after
    a warm-up batch (on CUDA that batch captures the graph)."""
    device = compute_device()
    named, num_tokens, code_dim, num_classes = samplers(preset, device)
    seconds = time_methods({"teacher": named["teacher_stage"]}, lambda tokens: tokens, batch_size, num_tokens, code_dim,
                           num_classes, batches, device)                      # per image, tokens only (no decoding)
    return 1 / seconds["teacher"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", help="a published preset (dd/presets.py), e.g. llamagen-b or var-d16")
    parser.add_argument("--pairs", nargs=2, type=int, default=[256, 1024], metavar=("SMALL", "LARGE"))
    parser.add_argument("--steps", nargs=2, type=int, default=[10, 40], metavar=("SMALL", "LARGE"),
                        help="student training steps of the two runs")
    parser.add_argument("--samples", nargs=2, type=int, default=[128, 512], metavar=("SMALL", "LARGE"))
    parser.add_argument("--batch-size", type=int, default=64, help="the pairs' and samplers' batch")
    parser.add_argument("--student-batch", type=int, help="the student's training batch (default: params.yaml's)")
    parser.add_argument("--student-steps", type=int, help="student steps at the paper's scale (default: params.yaml's)")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs of this kind the projection spreads the work over")
    parser.add_argument("--out", type=Path, help="a folder: throughput_<teacher>.json is written there")
    args = parser.parse_args()

    # The projection's counts, as `dvc repro` would resolve them (evaluate's reference is not read here)
    config = resolve({**repository_sections(), "teachers": [args.teacher],
                      "overrides": {args.teacher: {"evaluate": {"reference": "unused.npz"}}}}, args.teacher)
    scale = paper_scale(config, args.student_steps, args.student_batch)
    counts = [{"num_pairs": p, "student_steps": s, "num_samples": n} for p, s, n in zip(args.pairs, args.steps, args.samples)]
    reports = []
    for count in counts:
        overrides = small_counts(**count, batch_size=args.batch_size)
        overrides["student"]["train"]["batch_size"] = scale["student_batch"]
        reports.append(published_pipeline(args.teacher, overrides))
    costs = marginal_costs(*reports, counts)
    teacher = teacher_throughput(args.teacher, args.batch_size, batches=3)
    pairs_per_second = 1 / costs["pairs"]["seconds_per_unit"]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    result = {"teacher": args.teacher, "device": device, "torch": torch.__version__, "batch_size": args.batch_size,
              "counts": counts, "stage_seconds": [report["stage_seconds"] for report in reports],
              "marginal_costs": costs, "teacher_samples_per_second": round(teacher, 2),
              "pairs_per_second": round(pairs_per_second, 2),
              "pairs_over_teacher_sampling": round(pairs_per_second / teacher, 3),      # bar: >= 0.8
              "paper_scale": scale, "gpus": args.gpus, "projected_hours": project(costs, scale, args.gpus)}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"throughput_{args.teacher}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result), flush=True)
    print(f"\n{args.teacher} on {device}, batch {args.batch_size}, marginal cost per unit after warm-up:")
    for stage, cost in costs.items():
        print(f"  {stage:<10}{cost['seconds_per_unit'] * 1e3:>10.2f} ms per {cost['unit']}")
    print(f"  teacher sampling {teacher:.1f} samples/s; pairs {pairs_per_second:.1f}/s "
          f"({pairs_per_second / teacher:.0%} of it)")
    print(f"Paper's scale ({scale['pairs']:,} pairs, {scale['student']:,} student steps at batch "
          f"{scale['student_batch']}, {scale['sample']:,} samples per method) on {args.gpus} GPUs: "
          + ", ".join(f"{stage} {hours} h" for stage, hours in result["projected_hours"].items()))


if __name__ == "__main__":
    main()
