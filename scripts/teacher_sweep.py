"""Which next-scale teacher to train for the CPU time it costs: depth, batch, steps and learning rate.

var-tiny's DD is judged against its teacher and against the onestep baseline drawn from that teacher's own
marginals, so the teacher's quality bounds every DD row of eval.json. For each `--config` this trains a VAR
teacher of that shape on the pipeline's tokenizer and train split (the teacher stage's loss: next-scale teacher
forcing, class dropout), then prints one JSON line: its validation NLL, its FID and the onestep FID under the
params.yaml recipe (5,000 samples each, as scripts/recipe_sweep.py measures them), the milliseconds a warm
training step took and the seconds of the whole config.
A config names the VAR depth (width 64 x depth, as every VAR preset) and any field of the teacher's train
params; unnamed fields keep params.yaml's values.

With --patch-nums the teacher reads another scale schedule: the script first trains a VQVAE with those scales
(vqvae.preset with its patch_nums replaced, the tokenizer stage's params; resumable in --vqvae-dir) and every
config's teacher is the preset with those scales; the line then also gives the VQVAE's validation reconstruction FID
and its training seconds. On 2 AVX2 cores, the 3,000 VQVAE steps take about 23 minutes (the tokenizer stage's
1,393 s in the README's AVX2 run).

Needs the data, classifier and tokenizer stages of TEACHER (with --patch-nums: data and classifier). Runs on the
GPU where there is one, which trains a config in a minute or two; what the pipeline pays for it on the CPU is
`step_ms` of a short CPU run of the same config (e.g. train_steps=150, --num-samples 500; the first logged
interval, compiling, is left out).

    python scripts/teacher_sweep.py var-tiny --config depth=3,batch_size=32,train_steps=3200 \\
        --config depth=2,batch_size=64,train_steps=3200,learning_rate=0.004
    python scripts/teacher_sweep.py var-tiny --patch-nums 1,2,3,4,5,6,8 --config depth=2 --num-samples 10000
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import tempfile
import time
from pathlib import Path

import torch

from dd.artifacts import compute_device, load_tokenizer
from dd.config import Config, load_config
from dd.evaluation import load_classifier
from dd.evaluation import frechet_distance, predict
from dd.layout import Layout, load_images
from dd.models.var import VAR
from dd.models.var_vqvae import PRESETS as VQVAE_PRESETS
from dd.provenance import record
from dd.sampling import TokenMarginals, run_sampler, sample_onestep
from dd.teachers import preset_config
from dd.training import train
from dd.var_tokenizer import MultiScaleTokenizer, train_vqvae
from pipeline.sample import teacher_sampler
from pipeline.teacher import forcing_loss, heldout_nll, teacher_forcing


def parse_config(text: str) -> dict:
    """'depth=2,batch_size=64' -> {'depth': 2, 'batch_size': 64}: ints where they parse, else floats."""
    pairs = [item.split("=") for item in text.split(",")]
    if any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"--config {text!r}: expected key=value pairs separated by commas")
    return {key: int(value) if value.lstrip("-").isdigit() else float(value) for key, value in pairs}


def steady_step_ms(log_rows: list[dict]) -> float | None:
    """Milliseconds a training step takes once warm: from the training log, leaving out the first logged
    interval (which holds torch.compile's compiling). None for runs too short to log twice."""
    if len(log_rows) < 2:
        return None
    first, last = log_rows[0], log_rows[-1]
    return round(1000 * (last["train/seconds"] - first["train/seconds"]) / (last["step"] - first["step"]), 1)


def parse_scales(text: str) -> tuple[int, ...]:
    """'1,2,3,4,5,6,8' -> (1, 2, 3, 4, 5, 6, 8)."""
    try:
        return tuple(int(item) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected scale sides separated by commas, e.g. 1,2,3,4,6,8")


def train_scale_tokenizer(config: Config, teacher: str, patch_nums: tuple[int, ...], images: torch.Tensor,
                          run_dir: Path, device: torch.device) -> MultiScaleTokenizer:
    """The tokenizer stage's VQVAE (vqvae.* params) with the scales `patch_nums`, trained (resumably) in run_dir."""
    vqvae_config = dataclasses.replace(VQVAE_PRESETS[config.vqvae.preset], patch_nums=patch_nums)
    provenance = record(Path(__file__), config.vqvae, config.data, teacher, vqvae_config)
    trained = train_vqvae(vqvae_config, images, config.vqvae.train, config.vqvae.commitment, config.vqvae.seed,
                          run_dir, run_dir / "train_log.jsonl", provenance, f"vqvae {patch_nums}",
                          progress=False, device=device)
    return MultiScaleTokenizer(trained)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", help="a next-scale teacher of params.yaml `teachers`, e.g. var-tiny")
    parser.add_argument("--config", action="append", required=True, type=parse_config,
                        metavar="depth=D,KEY=VALUE,...", help="a teacher to train; repeat for each")
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=500, help="sampling batch")
    parser.add_argument("--seed", type=int, default=2, help="the teacher's noise; onestep's is seed + 1")
    parser.add_argument("--data", type=Path, default=Path("data"), help="the pipeline's data folder")
    parser.add_argument("--tokens-out", type=Path, help="also save each config's teacher and onestep tokens here")
    parser.add_argument("--patch-nums", type=parse_scales, metavar="S1,S2,...",
                        help="train a VQVAE with this scale schedule first and teachers that read it (see above)")
    parser.add_argument("--vqvae-dir", type=Path, help="with --patch-nums: where the VQVAE trains (rerun to resume; "
                        "default: a temporary folder)")
    args = parser.parse_args()

    config, layout, device = load_config(teacher=args.teacher), Layout(args.teacher, args.data), compute_device()
    classifier = load_classifier(layout.classifier_dir)
    train_set, validation = load_images(layout, "train"), load_images(layout, "validation")
    real_features, _ = predict(classifier, validation.images)
    preset, schedule = preset_config(args.teacher), {}
    if args.patch_nums:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            run_dir = args.vqvae_dir or Path(scratch)
            tokenizer = train_scale_tokenizer(config, args.teacher, args.patch_nums,
                                              torch.from_numpy(train_set.images), run_dir, device)
        preset = dataclasses.replace(preset, patch_nums=args.patch_nums)
        reconstruction_fid = frechet_distance(real_features, predict(classifier, tokenizer.decode(
            tokenizer.encode(validation.images)))[0])
        schedule = {"patch_nums": list(args.patch_nums), "num_tokens": tokenizer.num_tokens,
                    "reconstruction_fid": round(reconstruction_fid, 2),
                    "vqvae_seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps(schedule), flush=True)
    else:
        tokenizer = load_tokenizer(layout, device)
    tokens = tokenizer.encode(train_set.images).to(device)                                  # (N, L)
    labels = torch.from_numpy(train_set.labels).long().to(device)                           # (N,)
    held_out = slice(0, config.teacher.nll_images or None)
    nll_tokens = tokenizer.encode(validation.images[held_out]).to(device)
    nll_labels = torch.from_numpy(validation.labels[held_out]).long().to(device)
    num_classes = preset.num_classes
    run = functools.partial(run_sampler, indices=range(args.num_samples), num_tokens=tokenizer.num_tokens,
                            code_dim=tokenizer.codebook.shape[1], num_classes=num_classes,
                            batch_size=args.batch_size, progress=False)

    def fid(sampled: torch.Tensor) -> float:
        return frechet_distance(real_features, predict(classifier, tokenizer.decode(sampled))[0])

    saved = []
    for overrides in args.config:
        depth = int(overrides.pop("depth", preset.depth))
        train_config = dataclasses.replace(config.teacher.train, **{"compile": device.type == "cpu", **overrides})
        start = time.perf_counter()
        torch.manual_seed(train_config.seed)
        model = VAR(dataclasses.replace(preset, depth=depth)).to(device)
        _, forward = teacher_forcing(args.teacher, model, tokenizer)
        loss_fn = forcing_loss(forward, tokens, labels, model.config.num_classes, config.teacher.class_dropout)
        with tempfile.TemporaryDirectory() as run_dir:
            log_path = Path(run_dir) / "log.jsonl"
            ema = train(model, loss_fn, len(tokens), train_config, Path(run_dir), log_path, record(Path(__file__), "sweep"),
                        f"depth {depth}", progress=False)
            step_ms = steady_step_ms([json.loads(line) for line in log_path.read_text().splitlines()])
        train_seconds = time.perf_counter() - start
        nll = heldout_nll(forward, ema, nll_tokens, nll_labels)
        sampled, sample_labels = run(teacher_sampler(ema, tokenizer, config.recipe), seed=args.seed, device=device)
        marginals = TokenMarginals.from_samples(sampled, sample_labels, num_classes, tokenizer.codebook_size)
        onestep, _ = run(functools.partial(sample_onestep, marginals), seed=args.seed + 1)
        if args.tokens_out:   # before the FIDs, so that they can be recomputed elsewhere
            saved.append({"depth": depth, **overrides, "teacher": sampled.to(torch.int16), "labels": sample_labels,
                          "onestep": onestep.to(torch.int16), "validation_nll_per_token": nll})
            torch.save(saved, args.tokens_out)
        teacher_fid, onestep_fid = fid(sampled), fid(onestep)
        parameters = sum(p.numel() for p in ema.parameters())
        print(json.dumps({**schedule, "depth": depth, **overrides, "parameters_m": round(parameters / 1e6, 3),
                          "validation_nll_per_token": round(nll, 4), "teacher_fid": round(teacher_fid, 2),
                          "onestep_fid": round(onestep_fid, 2),
                          "teacher_over_onestep": round(teacher_fid / onestep_fid, 3), "step_ms": step_ms,
                          "train_seconds": round(train_seconds, 1), "seconds": round(time.perf_counter() - start, 1),
                          "device": device.type}), flush=True)


if __name__ == "__main__":
    main()
