"""Stage `student`: the DD student (DD1), initialised from the teacher and trained on the pair shards, when
`methods` lists dd1.

Timesteps count what is already data: tokens for a raster (LlamaGen) teacher, scales for a next-scale (VAR)
one; the student itself, its inputs and its loss come from the teacher's family (dd/families/student.py).
"""
import dataclasses
import functools

import torch

from dd.artifacts import load_frozen_teacher, load_tokenizer, teacher_weights
from dd.checkpoint import file_sha256, save_json, save_weights
from dd.config import Config
from dd.dd1 import soft_targets
from dd.device import compute_device, to_device
from dd.families import StudentParts
from dd.families.student import student_family
from dd.layout import Layout
from dd.pairs import MANIFEST, read_pairs
from dd.provenance import record, stage_entry
from dd.training import train


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    if "dd1" not in config.methods:
        metrics = {"trained": False}
        save_json(layout.metrics_dir / "student.json", metrics)
        layout.student_dir.mkdir(parents=True, exist_ok=True)    # the stage's outputs, kept for a later run
        if not (layout.metrics_dir / "student_log.json").exists():
            save_json(layout.metrics_dir / "student_log.json", [])
        return metrics
    teacher, codebook = load_frozen_teacher(layout), load_tokenizer(layout).codebook
    parts = student_family(layout.teacher).student_parts(teacher)
    pairs = read_pairs(layout.pairs_dir)
    tokens, labels = pairs.tokens, pairs.labels
    timesteps = torch.tensor(config.student.timesteps)
    if timesteps.max() >= parts.num_timesteps:
        raise ValueError(f"student.timesteps {config.student.timesteps} must be below the teacher's "
                         f"{parts.num_timesteps} {parts.unit}")
    device = compute_device()
    # No weight is random (the teacher's copies, zeros, the codebook), so nothing here needs the global seed.
    student = parts.build(teacher, codebook).to(device)   # the teacher's copy stays behind on the CPU
    on_device = functools.partial(to_device, device=device)
    targets = on_device(soft_targets(codebook, config.student.target_width))     # (V, V)
    codes = on_device(codebook)                                                  # (V, d), moved once

    def loss_fn(model, batch):
        # Each example is trained at one of the timesteps, drawn uniformly.
        drawn = timesteps[torch.randint(len(timesteps), (batch.size,), generator=batch.generator)]
        indices = batch.local(batch.indices)
        rows = map(on_device, (labels[indices], pairs.noise(indices), tokens[indices], batch.local(drawn)))
        batch_labels, batch_noise, batch_tokens, batch_timesteps = rows
        return parts.loss(model, batch_labels, batch_noise, batch_tokens, codes, batch_timesteps, targets)

    provenance = record(stage_entry("student"), config.student.timesteps, config.student.target_width,
                        config.student.train, file_sha256(layout.pairs_dir / MANIFEST), file_sha256(teacher_weights(layout)))
    ema = train(student, loss_fn, len(tokens), config.student.train, layout.student_dir,
                layout.metrics_dir / "student_log.json", provenance, f"student {layout.teacher}", progress)
    # Measured on the first 1,000 training pairs: for llamagen-tiny 64,000 tokens at t = 0 (a standard error of
    # about 0.2%) and 32,000 at t = 32 (about 0.3%).
    probe = torch.arange(min(1000, len(tokens)))
    probe_set = [codes, *(on_device(x) for x in (pairs.noise(probe), tokens[probe], labels[probe]))]
    metrics = {f"token_agreement_t{t}": _agreement(parts, ema, *probe_set, t)
               for t in config.student.distinct_timesteps}
    save_weights(layout.student_dir / "model.pt", ema.state_dict(),
                 {"teacher": layout.teacher, "timesteps": list(config.student.timesteps),
                  "train": dataclasses.asdict(config.student.train), **metrics})
    save_json(layout.metrics_dir / "student.json", metrics)
    return metrics


@torch.inference_mode()
def _agreement(parts: StudentParts, student, codebook, noise, tokens, labels, timestep: int) -> float:
    """Fraction of the teacher's tokens (at positions still noise) the EMA student reproduces at a timestep."""
    predicted = student.predict(labels, parts.inputs(tokens, noise, codebook, timestep), timestep)
    return float((predicted == tokens)[:, parts.first_noise(timestep):].double().mean())
