"""Seconds per training step of an embedded model on this CPU, and where a step's time goes.

Runs the pipeline's own training loop (dd/training.py) on random tokens or images, since speed does not depend
on the values: a teacher's teacher-forcing step (llamagen-tiny, var-tiny) or the VQVAE's (vae-tiny). Prints
the median seconds per step over logging intervals after the first (which holds torch.compile's compiling),
and with --profile the operators that took most of an eager step's time.

A CPU without AVX-512 can be imitated on one with it by forcing the AVX2 kernels of ATen, oneDNN and MKL
(set before Python starts; the times then bound an AVX2-only CPU's from below, docs/experiments.md):

    python scripts/train_step_profile.py llamagen-tiny --precision fp32 --profile 20
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        python scripts/train_step_profile.py vae-tiny --no-compile --batch-size 32 --channels-last
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import typer
from torch.profiler import ProfilerActivity, profile

from dd.config import TrainConfig
from dd.models.var_vqvae import PRESETS as VQVAE_PRESETS
from dd.teachers import build_model
from dd.training import train
from dd.var_tokenizer import MultiScaleTokenizer, MultiScaleVQVAE, vqvae_loss

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.teacher import forcing_loss, teacher_forcing  # noqa: E402

EXAMPLES = 20_000


def model_and_loss(name: str, channels_last: bool):
    """(model, loss_fn) as the teacher or tokenizer stage builds them, on random data."""
    generator = torch.Generator().manual_seed(0)
    if name == "vae-tiny":
        model = MultiScaleVQVAE(VQVAE_PRESETS[name])
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        images = torch.randint(256, (EXAMPLES, 32, 32, 1), dtype=torch.uint8, generator=generator)  # (N, H, W, C)
        return model, lambda model, indices, generator: vqvae_loss(model, images[indices], 0.25)
    model = build_model(name)
    tokenizer = MultiScaleTokenizer(MultiScaleVQVAE(VQVAE_PRESETS["vae-tiny"])) if name.startswith("var") else None
    num_tokens, forward = teacher_forcing(name, model, tokenizer)
    tokens = torch.randint(model.config.vocab_size, (EXAMPLES, num_tokens), generator=generator)  # (N, L)
    labels = torch.randint(model.config.num_classes, (EXAMPLES,), generator=generator)          # (N,)
    return model, forcing_loss(forward, tokens, labels, model.config.num_classes, 0.1)


def main(model_name: str = typer.Argument(..., metavar="MODEL", help="llamagen-tiny, var-tiny or vae-tiny"),
         precision: str = typer.Option("fp32", help="fp32, bf16 or auto (as in params.yaml)"),
         compile: bool = typer.Option(True, help="torch.compile the model, as the teacher and student stages do"),
         channels_last: bool = typer.Option(False, help="vae-tiny: channels-last convolutions"),
         batch_size: int = typer.Option(64, help="the teacher's is 64, the VQVAE's 32"),
         steps: int = typer.Option(200, help="timed steps, after the first interval"),
         interval: int = typer.Option(20, help="steps per timed interval"),
         profile_steps: int = typer.Option(0, "--profile", help="also profile this many eager steps (0: off)")) -> None:
    if channels_last and model_name != "vae-tiny":
        raise typer.BadParameter("--channels-last applies to vae-tiny only")
    config = TrainConfig(train_steps=steps + interval, batch_size=batch_size, learning_rate=1e-3, warmup_steps=10,
                         weight_decay=0.0, ema_decay=0.999, checkpoint_every=10 ** 9, log_every=interval,
                         precision=precision, compile=compile, seed=0)
    torch.manual_seed(0)
    model, loss_fn = model_and_loss(model_name, channels_last)
    print(f"{model_name}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, batch {batch_size}, "
          f"{precision}, compile {compile}, channels-last {channels_last}; ATen kernels "
          f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as run_dir:
        log = Path(run_dir) / "log.jsonl"
        train(model, loss_fn, EXAMPLES, config, Path(run_dir), log, "timing", progress=False)
        seconds = [json.loads(line)["train/seconds"] for line in log.read_text().splitlines()]
    per_step = [(later - earlier) / interval for earlier, later in zip(seconds, seconds[1:])]
    print(f"first interval {seconds[0]:.1f} s (compiling, if any, included); median {statistics.median(per_step):.4f} s a step "
          f"over {len(per_step)} intervals of {interval}")
    if profile_steps:
        eager, loss_fn = model_and_loss(model_name, channels_last)
        config = dataclasses.replace(config, train_steps=profile_steps, compile=False)
        with tempfile.TemporaryDirectory() as run_dir, profile(activities=[ProfilerActivity.CPU]) as profiled:
            train(eager, loss_fn, EXAMPLES, config, Path(run_dir), Path(run_dir) / "log.jsonl", "profile", progress=False)
        print(profiled.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    typer.run(main)
