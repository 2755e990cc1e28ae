"""DD2 (dd/dd2.py) on a finished run's raster teacher, before DD2 has stages of its own: both training stages, the
unit figures issue 44 asks for, and the 1-step validation FID, printed as one JSON line.

    stage 1 (GTS)  the AR-diffusion model from the teacher, on the pair shards' tokens (teacher samples); its
                   velocity's relative error against the teacher's on the last 1,000 pairs (held out), before and after
    stage 2 (CSD)  generator and guidance network from it; the generator's per-position token laws against the
                   teacher's samples (total variation of the marginals, averaged over positions) at
                   initialisation and after, beside the same distance between two halves of the teacher's samples
                   (the distance's floor at this sample size)
    evaluation     validation FID of the generator's EMA, 1 step, sample i from the sample stage's noise i, beside
                   eval.json's teacher and DD rows (their validation_fid) when the run has them

Needs the pairs stage of TEACHER (`dvc repro pairs@llamagen-tiny`). Checkpoints go under --out, and a rerun with
the same arguments resumes them (dd/training.py, dd/dd2.py).

    python scripts/dd2_trial.py llamagen-tiny --gts-steps 600 --csd-steps 600
"""
from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import torch

from dd.artifacts import load_frozen_teacher, load_tokenizer, teacher_classes
from dd.config import TrainConfig, load_config
from dd.dd2 import CSDConfig, csd_losses, gts_loss_fn, sample_dd2, snap, train_csd
from dd.evaluation import frechet_distance, load_classifier, predict
from dd.families import family_of
from dd.layout import Layout, load_images
from dd.pairs import read_pairs
from dd.raster.dd2 import ARDiffusion, Generator, recipe_probs
from dd.sampling import run_sampler
from dd.score_distillation import noisy, sample_times, teacher_velocity
from dd.training import train

HELD_OUT = 1000        # pairs kept out of stage 1 for its error and the token laws (a fifth of a smaller set)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", help="a raster teacher of params.yaml `teachers`, e.g. llamagen-tiny")
    parser.add_argument("--gts-steps", type=int, default=600)
    parser.add_argument("--gts-learning-rate", type=float, default=1e-3)
    parser.add_argument("--csd-steps", type=int, default=600, help="generator updates")
    parser.add_argument("--guidance-updates", type=int, default=2, help="K: guidance updates per generator update")
    parser.add_argument("--generator-learning-rate", type=float, default=1e-4)
    parser.add_argument("--guidance-learning-rate", type=float, default=2e-4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--head-width", type=int, default=256)
    parser.add_argument("--head-depth", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=Path("data"), help="the pipeline's data folder")
    parser.add_argument("--out", type=Path, help="checkpoints (default: DATA/TEACHER/dd2_trial)")
    parser.add_argument("--progress", action="store_true", help="progress bars")
    args = parser.parse_args()
    if family_of(args.teacher) != "raster":
        parser.error(f"{args.teacher} is a next-scale teacher: DD2's networks exist for raster teachers only so far")

    config, layout = load_config(teacher=args.teacher), Layout(args.teacher, args.data)
    out = args.out or layout.data_root / args.teacher / "dd2_trial"
    teacher, tokenizer = load_frozen_teacher(layout), load_tokenizer(layout)
    codebook, num_classes = tokenizer.codebook, teacher_classes(layout)
    _, tokens, labels = read_pairs(layout.pairs_dir)
    probs_of = recipe_probs(teacher, config.recipe)
    held = min(HELD_OUT, len(tokens) // 5)
    train_tokens, train_labels = tokens[:-held], labels[:-held]
    held_tokens, held_labels = tokens[-held:], labels[-held:]
    # What each stage's checkpoints are resumed under: its own arguments (stage 2's include stage 1's).
    gts_args = ("teacher", "gts_steps", "gts_learning_rate", "batch_size", "head_width", "head_depth", "seed")
    gts_record = {"params": json.dumps({k: str(getattr(args, k)) for k in gts_args}), "code": {}}
    csd_record = {"params": json.dumps(vars(args), default=str), "code": {}}
    result = {"teacher": args.teacher, **{k: v for k, v in vars(args).items() if k not in ("data", "out", "progress")}}

    # Stage 1: GTS.
    started = time.perf_counter()
    model = ARDiffusion.from_teacher(teacher, codebook.shape[1], args.head_width, args.head_depth, seed=args.seed)
    result["gts_relative_error_at_start"] = relative_error(model, probs_of, codebook, held_labels, held_tokens)
    gts = TrainConfig(train_steps=args.gts_steps, batch_size=args.batch_size, learning_rate=args.gts_learning_rate,
                      warmup_steps=50, weight_decay=0.0, ema_decay=0.999, checkpoint_every=100, precision="auto",
                      seed=args.seed)
    model = train(model, gts_loss_fn(probs_of, codebook, train_labels, train_tokens), len(train_tokens), gts,
                  out / "gts", out / "gts_log.json", gts_record, "GTS", args.progress)
    result["gts_relative_error"] = relative_error(model, probs_of, codebook, held_labels, held_tokens)
    result["gts_seconds"] = round(time.perf_counter() - started, 1)

    # Stage 2: CSD.
    started = time.perf_counter()
    guidance, generator = model.requires_grad_(True), Generator.from_diffusion(model, codebook)
    result["marginal_tv_floor"] = marginal_tv(held_tokens[: held // 2], held_tokens[held // 2:], len(codebook))
    result["marginal_tv_at_start"] = generator_tv(generator, codebook, held_labels, held_tokens)
    csd = CSDConfig(train_steps=args.csd_steps, guidance_updates=args.guidance_updates, batch_size=args.batch_size,
                    generator_learning_rate=args.generator_learning_rate,
                    guidance_learning_rate=args.guidance_learning_rate, seed=args.seed)
    losses = csd_losses(probs_of, codebook, num_classes, tokens.shape[1], args.batch_size)
    ema = train_csd(generator, guidance, *losses, csd, out / "csd", out / "csd_log.json", csd_record, "CSD", args.progress)
    result["marginal_tv"] = generator_tv(ema, codebook, held_labels, held_tokens)
    result["csd_seconds"] = round(time.perf_counter() - started, 1)

    # Evaluation: 1 step on the validation split.
    classifier = load_classifier(layout.classifier_dir)
    real, _ = predict(classifier, load_images(layout, "validation").images)
    samples, _ = run_sampler(functools.partial(sample_dd2, ema, codebook), range(args.num_samples), config.sample.seed,
                             tokens.shape[1], codebook.shape[1], num_classes, config.sample.batch_size,
                             "DD2 1-step", args.progress)
    result["dd2_validation_fid"] = round(frechet_distance(real, predict(classifier, tokenizer.decode(samples))[0]), 3)
    eval_path = layout.metrics_dir / "eval.json"
    if eval_path.exists():
        table = json.loads(eval_path.read_text())
        result |= {f"{m}_validation_fid": table[m].get("validation_fid") for m in ("teacher", "dd") if m in table}
    print(json.dumps(result), flush=True)


@torch.no_grad()
def relative_error(model, probs_of, codebook, labels, tokens) -> float:
    """E ||v_psi - v_T||^2 / E ||v_T||^2 over the tokens, one noise and time each (fixed seed)."""
    rng = torch.Generator().manual_seed(1)
    probs = probs_of(labels, tokens).flatten(0, 1)
    x0 = codebook[tokens].flatten(0, 1)
    eps, t = torch.randn(x0.shape, generator=rng), sample_times(len(x0), rng)
    x_t = noisy(x0, eps, t)
    v_teacher = teacher_velocity(x_t, t, probs, codebook)
    v_model = model.head(x_t, t, model.features(labels, tokens).flatten(0, 1))
    return round(float(((v_model - v_teacher) ** 2).sum() / (v_teacher**2).sum()), 4)


def marginal_tv(a: torch.Tensor, b: torch.Tensor, vocab: int) -> float:
    """Total variation between the per-position token laws of two sample sets (N, L), averaged over positions."""
    counts = [torch.zeros(x.shape[1], vocab).scatter_add_(1, x.T, torch.ones(x.T.shape)) / len(x) for x in (a, b)]
    return round(float(0.5 * (counts[0] - counts[1]).abs().sum(1).mean()), 4)


@torch.no_grad()
def generator_tv(generator, codebook, labels, tokens) -> float:
    """The generator's per-position laws (its tokens for the held-out pairs' classes) against the teacher's."""
    noise = torch.randn(len(labels), tokens.shape[1], codebook.shape[1], generator=torch.Generator().manual_seed(2))
    return marginal_tv(snap(generator(labels, noise), codebook), tokens, len(codebook))


if __name__ == "__main__":
    main()
