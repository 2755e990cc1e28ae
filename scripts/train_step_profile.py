"""Seconds per training step of a teacher's training stage on this CPU, and where a step's time goes.

Runs the pipeline's own training loop (dd/training.py) on random tokens or images, since speed does not depend
on the values, with the stage's params from params.yaml (resolved for the teacher): the teacher stage's
teacher-forcing step, or with --stage tokenizer a next-scale teacher's VQVAE step. Prints the median seconds
per step over logging intervals after the first (which holds torch.compile's compiling), and with --profile
the operators that took most of an eager step's time.

A CPU without AVX-512 can be imitated on one with it by forcing the AVX2 kernels of ATen, oneDNN and MKL
(set before Python starts; the times then bound an AVX2-only CPU's from below, docs/experiments.md):

    python scripts/train_step_profile.py llamagen-tiny --precision fp32 --profile 20
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        python scripts/train_step_profile.py var-tiny --stage tokenizer --channels-last
"""
from __future__ import annotations

import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Optional

import torch
import typer
from torch.profiler import ProfilerActivity, profile

from dd.config import Config, load_config
from dd.families import family_of
from dd.families.teacher import teacher_family
from dd.next_scale.tokenizer import MultiScaleTokenizer, vqvae_loss
from dd.provenance import record
from dd.teachers import build_model
from dd.tokenizers import build_tokenizer_model
from dd.training import read_log, train

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.teacher import forcing_loss  # noqa: E402

EXAMPLES = 20_000
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def model_and_loss(teacher: str, stage: str, config: Config, channels_last: bool):
    """(model, loss_fn) as the teacher or tokenizer stage builds them, on random data."""
    generator = torch.Generator().manual_seed(0)
    if stage == "tokenizer":
        model = build_tokenizer_model(config.vqvae.preset)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        size, channels = model.config.image_size, model.config.in_channels
        images = torch.randint(256, (EXAMPLES, size, size, channels), dtype=torch.uint8, generator=generator)  # (N, H, W, C)
        return model, lambda model, batch: vqvae_loss(model, images[batch.local(batch.indices)], config.vqvae.commitment)
    model = build_model(teacher)
    is_next_scale = family_of(teacher) == "next_scale"         # its teacher forcing reads the VQVAE's inputs
    tokenizer = MultiScaleTokenizer(build_tokenizer_model(config.vqvae.preset)) if is_next_scale else None
    num_tokens, forward = teacher_family(teacher).teacher_forcing(model, tokenizer)
    tokens = torch.randint(model.config.vocab_size, (EXAMPLES, num_tokens), generator=generator)  # (N, L)
    labels = torch.randint(model.config.num_classes, (EXAMPLES,), generator=generator)          # (N,)
    return model, forcing_loss(forward, tokens, labels, model.config.num_classes, config.teacher.class_dropout)


def main(teacher: str = typer.Argument(..., metavar="TEACHER", help="a teacher preset, e.g. llamagen-tiny or var-tiny"),
         stage: str = typer.Option("teacher", help="teacher, or tokenizer (a next-scale teacher's VQVAE)"),
         precision: Optional[str] = typer.Option(None, help="fp32, bf16 or auto (default: the stage's params)"),
         compile: Optional[bool] = typer.Option(None, "--compile/--no-compile",
                                                help="torch.compile the model (default: the stage's params)"),
         channels_last: bool = typer.Option(False, help="--stage tokenizer: channels-last convolutions"),
         batch_size: Optional[int] = typer.Option(None, help="default: the stage's params"),
         steps: int = typer.Option(200, help="timed steps, after the first interval"),
         interval: int = typer.Option(20, help="steps per timed interval"),
         profile_steps: int = typer.Option(0, "--profile", help="also profile this many eager steps (0: off)"),
         params: Path = typer.Option(PARAMS, help="the params file")) -> None:
    if stage not in ("teacher", "tokenizer"):
        raise typer.BadParameter(f"--stage {stage}: use teacher or tokenizer")
    if stage == "tokenizer" and family_of(teacher) != "next_scale":
        raise typer.BadParameter(f"{teacher}'s tokenizer stage fits k-means, with no training loop: "
                                 "--stage tokenizer is for a next-scale (VAR) teacher")
    if channels_last and stage != "tokenizer":
        raise typer.BadParameter("--channels-last applies to --stage tokenizer only (the VQVAE's convolutions)")
    config = load_config(params, teacher)
    given = {"precision": precision, "compile": compile, "batch_size": batch_size}
    train_config = dataclasses.replace(
        config.vqvae.train if stage == "tokenizer" else config.teacher.train, train_steps=steps + interval,
        log_every=interval, checkpoint_every=10 ** 9, **{key: value for key, value in given.items() if value is not None})
    torch.manual_seed(0)
    model, loss_fn = model_and_loss(teacher, stage, config, channels_last)
    print(f"{teacher} {stage}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, batch "
          f"{train_config.batch_size}, {train_config.precision}, compile {train_config.compile}, channels-last "
          f"{channels_last}; ATen kernels {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as run_dir:
        log = Path(run_dir) / "log.json"
        train(model, loss_fn, EXAMPLES, train_config, Path(run_dir), log, record(Path(__file__), "timing"),
              progress=False)
        seconds = [row["train/seconds"] for row in read_log(log)]
    per_step = [(later - earlier) / interval for earlier, later in zip(seconds, seconds[1:])]
    print(f"first interval {seconds[0]:.1f} s (compiling, if any, included); median {statistics.median(per_step):.4f} s a step "
          f"over {len(per_step)} intervals of {interval}")
    if profile_steps:
        eager, loss_fn = model_and_loss(teacher, stage, config, channels_last)
        train_config = dataclasses.replace(train_config, train_steps=profile_steps, compile=False)
        with tempfile.TemporaryDirectory() as run_dir, profile(activities=[ProfilerActivity.CPU]) as profiled:
            train(eager, loss_fn, EXAMPLES, train_config, Path(run_dir), Path(run_dir) / "log.json",
                  record(Path(__file__), "profile"), progress=False)
        print(profiled.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    typer.run(main)
