"""A published teacher at full size through every stage `dvc repro` runs for it, on random weights.

Writes the teacher and its tokenizer in the published file format (LlamaGen: {"model": state_dict} in
c2i_B_256.pt and vq_ds16_c2i.pt; VAR: the bare state_dicts of var_d16.pth and vae_ch160v4096z32.pth) and serves
them as file:// URLs. The tokenizer and teacher stages fetch them with the download code the hub URLs use
(resumable, atomic, sha256 recorded; strict key matching), then pairs, student, sample, sample_dd and latency
run on them with params.yaml's sections under the preset's paper recipe (as `dvc repro` layers them: training
precision, compilation and learning rates come from params.yaml), through the stage modules exactly as `dvc
repro` calls them, at small counts. Only evaluate is left out: its Inception weights are a download an offline
machine cannot make.

Speed does not depend on the weights, so the stage seconds are those of the real models at these counts. It runs
where the stages run: on the GPU when there is one (scripts/gpu_check.py --pipeline-presets calls it there), else on
the CPU, where var-d16 first ran at its published size (README, "Published teachers").

    python scripts/published_pipeline.py var-d16                  # 15 minutes and 19 GiB on 2 CPU cores
    python scripts/published_pipeline.py llamagen-b --num-pairs 256 --student-steps 10 --num-samples 128
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from dd.config import resolve
from dd.device import compute_device
from dd.layout import Layout
from dd.models.llamagen import GPT, PRESETS as GPT_PRESETS
from dd.models.llamagen_vq import PRESETS as VQ_PRESETS, VQModel
from dd.models.var import VAR, PRESETS as VAR_PRESETS
from dd.models.var_vqvae import MultiScaleVQVAE, PRESETS as VQVAE_PRESETS
from dd.presets import PUBLISHED
from dd.training import read_log

STAGES = ("tokenizer", "teacher", "pairs", "student", "sample", "sample_dd", "latency")
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def repository_sections() -> dict:
    """params.yaml's sections, without its teachers and overrides: what `dvc repro` puts under a published preset's
    paper recipe (training precision, compilation, learning rates...)."""
    data = yaml.safe_load(PARAMS.read_text())
    return {key: value for key, value in data.items() if key not in ("teachers", "overrides")}


def published_files(teacher_preset: str, hub: Path) -> dict:
    """Random-weight checkpoints of the preset in its published format, in hub; their URLs as params overrides."""
    spec = PUBLISHED[teacher_preset]
    if spec.family == "llamagen":
        teacher = GPT(GPT_PRESETS[teacher_preset], head_std=0.02)
        teacher_file = {"model": teacher.state_dict()}
        tokenizer_file = {"model": VQModel(VQ_PRESETS[spec.tokenizer_preset]).state_dict()}
    else:                                                         # VAR publishes bare state_dicts
        teacher_file = VAR(VAR_PRESETS[teacher_preset]).state_dict()
        tokenizer_file = MultiScaleVQVAE(VQVAE_PRESETS[spec.tokenizer_preset]).state_dict()
    urls = {}
    for section, weights, name in (("teacher", teacher_file, Path(spec.weights_url).name),
                                   ("tokenizer", tokenizer_file, Path(spec.tokenizer_url).name)):
        torch.save(weights, hub / name)
        urls[section] = {"url": (hub / name).as_uri()}
    return urls


def small_counts(num_pairs: int, student_steps: int, num_samples: int, batch_size: int) -> dict:
    """Params overrides that keep every stage short: pairs, student steps, samples and the latency batch."""
    return {"pairs": {"num_pairs": num_pairs, "shard_size": num_pairs, "batch_size": batch_size},
            "student": {"train": {"train_steps": student_steps, "batch_size": batch_size,
                                  "checkpoint_every": student_steps, "log_every": 1}},
            "sample": {"num_samples": num_samples, "batch_size": batch_size},
            "latency": {"batch_sizes": [1, batch_size], "repeats": 1},
            # A published teacher must name Inception reference statistics; evaluate, which reads them, is not run.
            "evaluate": {"reference": "unused.npz", "latency_batch_size": batch_size}}


def published_pipeline(teacher_preset: str, overrides: dict | None = None) -> dict:
    """Seconds per stage of the published path on random weights, run by the stage modules on this machine.

    overrides: params sections, each replacing that section of the default small_counts() whole.
    """
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "hub").mkdir()
        started = time.perf_counter()
        settings = {**small_counts(8, 2, 8, 4), **published_files(teacher_preset, root / "hub"), **(overrides or {})}
        print(json.dumps({"published_files_seconds": round(time.perf_counter() - started, 2)}), flush=True)
        config = resolve({**repository_sections(), "teachers": [teacher_preset],
                          "overrides": {teacher_preset: settings}}, teacher_preset)
        layout = Layout(teacher_preset, data_root=root / "data", metrics_root=root / "metrics")
        report = {"teacher": teacher_preset, "device": str(compute_device()),
                  "recipe": dataclasses.asdict(config.recipe), "student_timesteps": list(config.student.timesteps),
                  "student_train": dataclasses.asdict(config.student.train),
                  "stage_seconds": {}, "peak_rss_gib": {}}
        for stage in STAGES:
            started = time.perf_counter()
            importlib.import_module(f"pipeline.{stage}").run(config, layout, progress=False)
            report["stage_seconds"][stage] = round(time.perf_counter() - started, 2)
            # The process's peak so far (Linux: KiB): what a machine needs to run the stages up to this one.
            report["peak_rss_gib"][stage] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
            if torch.cuda.is_available():   # the GPU's own peak (tensors the stage allocated), what a card needs
                report.setdefault("peak_gpu_gib", {})[stage] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            # As each stage ends, so a run stopped at a time limit still says how far it got.
            print(json.dumps({"stage": stage, "seconds": report["stage_seconds"][stage],
                              "peak_rss_gib": report["peak_rss_gib"][stage]}), flush=True)
        report["latency"] = json.loads((layout.metrics_dir / "latency.json").read_text())
        report["student_log"] = read_log(layout.metrics_dir / "student_log.json")
        with np.load(layout.dd_samples_dir / "dd.npz") as samples:
            report["dd_images_shape"] = list(samples["images"].shape)
        report["sample_methods"] = sorted(path.stem for path in layout.samples_dir.glob("*.npz"))
    print(json.dumps(report), flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", choices=sorted(PUBLISHED), help="a published preset (dd/presets.py)")
    parser.add_argument("--num-pairs", type=int, default=8, help="pairs the pairs stage writes (one shard)")
    parser.add_argument("--student-steps", type=int, default=2, help="student training steps")
    parser.add_argument("--num-samples", type=int, default=8, help="samples per method (sample, sample_dd)")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs, training, sampling and latency batch")
    parser.add_argument("--out", type=Path, help="also write the report to this JSON file")
    args = parser.parse_args()
    report = published_pipeline(args.teacher, small_counts(args.num_pairs, args.student_steps, args.num_samples,
                                                           args.batch_size))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    print(f"\n{args.teacher} on {report['device']}, random weights, recipe {report['recipe']}")
    for stage, seconds in report["stage_seconds"].items():
        gpu = f", GPU {report['peak_gpu_gib'][stage]:.1f} GiB" if "peak_gpu_gib" in report else ""
        print(f"  {stage:<10}{seconds:>9.1f} s   peak RSS so far {report['peak_rss_gib'][stage]:.1f} GiB{gpu}")
    for batch, row in report["latency"].items():
        if batch.startswith("batch_"):
            print(f"  latency {batch}: " + ", ".join(f"{method} {values['seconds_per_image'] * 1e3:.1f} ms/img"
                                                     for method, values in sorted(row.items())))


if __name__ == "__main__":
    main()
