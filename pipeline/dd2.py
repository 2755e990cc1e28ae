"""Stage `dd2`: DD2 (dd/dd2.py), when `methods` lists it: the AR-diffusion model tuned on the pair shards' tokens
(GTS, stage 1), then the one-step generator distilled against the teacher with a guidance network (CSD, stage 2).

Both stages resume like every training stage (data/<teacher>/dd2/gts, csd). The figures of dd2.json, on teacher
samples no stage trained on (their own seed):
  gts_relative_error     ||v_psi - v_T||^2 / ||v_T||^2 of the stage-1 model (1.0 for its new head at the start)
  marginal_tv            per-position token laws of the generator against the teacher's (total variation,
                         averaged over positions), at initialisation (`_at_start`) and after CSD, beside
                         `marginal_tv_floor`, the same distance between two teacher sample sets of that size
"""
import time

import torch

from dd.artifacts import load_frozen_teacher, load_tokenizer, teacher_classes, teacher_weights
from dd.checkpoint import file_sha256, save_json, save_weights
from dd.config import Config, to_dict
from dd.dd2 import csd_losses, gts_loss_fn, snap, train_csd
from dd.device import compute_device
from dd.families.dd2 import dd2_parts
from dd.families.sampling import sampling_family
from dd.fast_path import fast_sampler
from dd.layout import Layout
from dd.pairs import MANIFEST, read_pairs
from dd.provenance import record, stage_entry
from dd.sampling import run_sampler
from dd.score_distillation import noisy, sample_times, teacher_velocity
from dd.training import train

PROBE_SAMPLES = 1000      # fresh teacher samples for the figures above


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    if "dd2" not in config.methods:
        metrics = {"trained": False}
        save_json(layout.metrics_dir / "dd2.json", metrics)
        layout.dd2_dir.mkdir(parents=True, exist_ok=True)      # the stage's outputs, kept for a later run
        for log in ("dd2_gts_log.json", "dd2_log.json"):
            if not (layout.metrics_dir / log).exists():
                save_json(layout.metrics_dir / log, [])
        return metrics
    device = compute_device()
    teacher, tokenizer = load_frozen_teacher(layout, device), load_tokenizer(layout, device)
    codebook, dd2 = tokenizer.codebook.to(device), config.dd2
    parts = dd2_parts(config, layout, teacher, tokenizer)
    for teacher_steps in dd2.teacher_steps:      # sample_dd's hybrid rows: a bad value fails now, not after training
        parts.kept_tokens(teacher_steps)
    pairs = read_pairs(layout.pairs_dir)
    tokens, labels = pairs.tokens, pairs.labels
    probe_tokens, probe_labels = _teacher_samples(config, layout, teacher, tokenizer, progress)

    # Stage 1: GTS on the pair tokens.
    started = time.time()
    inputs = [to_dict(config.recipe), dd2.head_width, dd2.head_depth, dd2.seed, file_sha256(layout.pairs_dir / MANIFEST),
              file_sha256(teacher_weights(layout))]
    model = parts.diffusion_model(teacher, codebook.shape[1], dd2.head_width, dd2.head_depth, dd2.seed).to(device)
    model = train(model, gts_loss_fn(parts, codebook, labels, tokens), len(tokens), dd2.gts, layout.dd2_dir / "gts",
                  layout.metrics_dir / "dd2_gts_log.json", record(stage_entry("dd2"), *inputs, dd2.gts),
                  f"DD2 GTS {layout.teacher}", progress)
    metrics = {"gts_relative_error": _relative_error(parts, model, codebook, probe_labels, probe_tokens),
               "gts_seconds": round(time.time() - started, 1)}

    # Stage 2: CSD; the guidance network and the generator both start from the stage-1 model.
    started = time.time()
    guidance, generator = model.requires_grad_(True), parts.generator(model, codebook).to(device)
    metrics["marginal_tv_at_start"] = _marginal_tv_of(parts, generator, codebook, probe_labels, probe_tokens)
    losses = csd_losses(parts, codebook, teacher_classes(layout), tokens.shape[1], dd2.csd.batch_size)
    start = [dd2.generator_init] + ([file_sha256(layout.student_dir / "model.pt")] if dd2.generator_init == "dd1" else [])
    ema = train_csd(generator, guidance, *losses, dd2.csd, layout.dd2_dir / "csd", layout.metrics_dir / "dd2_log.json",
                    record(stage_entry("dd2"), *inputs, dd2.gts, dd2.csd, *start), f"DD2 CSD {layout.teacher}", progress)
    half = len(probe_tokens) // 2
    metrics |= {"marginal_tv": _marginal_tv_of(parts, ema, codebook, probe_labels, probe_tokens),
                "marginal_tv_floor": _marginal_tv(probe_tokens[:half], probe_tokens[half:], len(codebook)),
                "csd_seconds": round(time.time() - started, 1)}
    save_weights(layout.dd2_dir / "model.pt", ema.state_dict(),
                 {"teacher": layout.teacher, "head_width": dd2.head_width, "head_depth": dd2.head_depth,
                  "generator_init": dd2.generator_init,
                  "gts": to_dict(dd2.gts), "csd": to_dict(dd2.csd), **metrics})
    save_json(layout.metrics_dir / "dd2.json", {"trained": True, **metrics})
    return metrics


def _teacher_samples(config: Config, layout: Layout, teacher, tokenizer, progress: bool):
    """PROBE_SAMPLES teacher samples under the recipe, of a seed no other set uses (pairs.seed + 1000)."""
    device = compute_device()
    sampler = fast_sampler(sampling_family(layout.teacher).teacher_sampler(teacher, tokenizer, config.recipe),
                           config.sample, device)
    return run_sampler(sampler, range(PROBE_SAMPLES), config.pairs.seed + 1000, tokenizer.num_tokens,
                       tokenizer.codebook.shape[1], teacher_classes(layout), config.sample.batch_size,
                       "teacher samples (DD2 figures)", progress, device=device)


@torch.no_grad()
def _relative_error(parts, model, codebook, labels, tokens) -> float:
    """E ||v_psi - v_T||^2 / E ||v_T||^2 over the tokens, one noise and time each (fixed seed)."""
    rng, device = torch.Generator().manual_seed(0), codebook.device
    labels, tokens = labels.to(device), tokens.to(device)
    x0 = codebook[tokens].flatten(0, 1)                                                            # (N*L, d)
    eps, t = torch.randn(x0.shape, generator=rng).to(device), sample_times(len(x0), rng, device)
    x_t = noisy(x0, eps, t)
    v_teacher = teacher_velocity(x_t, t, parts.recipe_probs(labels, tokens).flatten(0, 1), codebook)
    v_model = model.head(x_t, t, parts.features(model, labels, tokens).flatten(0, 1))
    return round(float(((v_model - v_teacher) ** 2).sum() / (v_teacher**2).sum()), 4)


def _marginal_tv(a: torch.Tensor, b: torch.Tensor, vocab: int) -> float:
    """Total variation between the per-position token laws of two sample sets (N, L), averaged over positions."""
    laws = [torch.zeros(x.shape[1], vocab).scatter_add_(1, x.T.cpu(), torch.ones(x.T.shape)) / len(x) for x in (a, b)]
    return round(float(0.5 * (laws[0] - laws[1]).abs().sum(1).mean()), 4)


@torch.no_grad()
def _marginal_tv_of(parts, generator, codebook, labels, tokens) -> float:
    """The generator's tokens for the probe's classes (fixed noise) against the teacher's probe samples."""
    noise = torch.randn(len(labels), tokens.shape[1], codebook.shape[1], generator=torch.Generator().manual_seed(1))
    q = parts.generate(generator, labels.to(codebook.device), noise.to(codebook.device))
    return _marginal_tv(snap(q, codebook), tokens, len(codebook))
