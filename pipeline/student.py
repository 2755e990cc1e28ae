"""Stage `student`: the DD student, initialised from the teacher and trained on the pair shards.

Timesteps count what is already data: tokens for a raster (LlamaGen) teacher, scales for a next-scale (VAR)
one; the few functions that differ come from the teacher's family (`StudentFamily`).
"""
import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dd import var_student
from dd.artifacts import compute_device, load_frozen_teacher, load_tokenizer, teacher_weights
from dd.checkpoint import file_sha256, save_json, save_weights
from dd.config import Config
from dd.layout import Layout
from dd.pairs import MANIFEST, read_pairs
from dd.provenance import record, stage_entry
from dd.student import DDStudent, soft_targets, student_inputs, student_loss
from dd.teachers import family
from dd.training import train


@dataclass(frozen=True)
class StudentFamily:
    build: Callable           # (teacher, codebook) -> a student initialised from the teacher
    loss: Callable            # (student, labels, noise, tokens, codebook, timesteps (B,), targets (V, V)) -> loss
    inputs: Callable          # (tokens, noise, codebook, timestep) -> the trajectory state at the timestep (B, L, d)
    first_noise: Callable     # timestep -> index of the first token still noise
    num_timesteps: int        # timesteps lie below this
    unit: str                 # what a timestep counts


def _raster_family(teacher) -> StudentFamily:
    return StudentFamily(DDStudent.from_teacher, student_loss, student_inputs, lambda t: t,
                         teacher.config.num_image_tokens, "tokens")


def _next_scale_family(teacher) -> StudentFamily:
    config = teacher.config
    return StudentFamily(var_student.VARStudent.from_teacher, var_student.student_loss,
                         functools.partial(var_student.student_inputs, config=config),
                         lambda t: config.scale_slices[t][0], config.num_scales, "scales")


def student_family(teacher_name: str, teacher) -> StudentFamily:
    """What differs by the teacher's family (also for scripts/heldout_agreement.py)."""
    return {"llamagen": _raster_family, "var": _next_scale_family}[family(teacher_name)](teacher)


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    teacher, codebook = load_frozen_teacher(layout), load_tokenizer(layout).codebook
    parts = student_family(layout.teacher, teacher)
    noise, tokens, labels = read_pairs(layout.pairs_dir)
    timesteps = torch.tensor(config.student.timesteps)
    if timesteps.max() >= parts.num_timesteps:
        raise ValueError(f"student.timesteps {config.student.timesteps} must be below the teacher's "
                         f"{parts.num_timesteps} {parts.unit}")
    device = compute_device()
    # No weight is random (the teacher's copies, zeros, the codebook), so nothing here needs the global seed.
    student = parts.build(teacher, codebook).to(device)   # the teacher's copy stays behind on the CPU
    on_device = functools.partial(torch.Tensor.to, device=device)
    targets = on_device(soft_targets(codebook, config.student.target_width))     # (V, V)

    def loss_fn(model, indices, generator):
        # Each example is trained at one of the timesteps, drawn uniformly.
        sample_timesteps = timesteps[torch.randint(len(timesteps), (len(indices),), generator=generator)]
        batch = map(on_device, (labels[indices], noise[indices], tokens[indices], codebook, sample_timesteps))
        return parts.loss(model, *batch, targets)

    provenance = record(stage_entry("student"), config.student.timesteps, config.student.target_width,
                        config.student.train, file_sha256(layout.pairs_dir / MANIFEST), file_sha256(teacher_weights(layout)))
    ema = train(student, loss_fn, len(tokens), config.student.train, layout.student_dir,
                layout.metrics_dir / "student_log.jsonl", provenance, f"student {layout.teacher}", progress)
    # Measured on the first 1,000 training pairs: for llamagen-tiny 64,000 tokens at t = 0 (a standard error of
    # about 0.2%) and 32,000 at t = 32 (about 0.3%).
    probe = slice(0, 1000)
    probe_set = [on_device(x) for x in (codebook, noise[probe], tokens[probe], labels[probe])]
    metrics = {f"token_agreement_t{t}": _agreement(parts, ema, *probe_set, t)
               for t in config.student.distinct_timesteps}
    save_weights(layout.student_dir / "model.pt", ema.state_dict(),
                 {"teacher": layout.teacher, "timesteps": list(config.student.timesteps),
                  "train": dataclasses.asdict(config.student.train), **metrics})
    save_json(layout.metrics_dir / "student.json", metrics)
    return metrics


@torch.inference_mode()
def _agreement(parts: StudentFamily, student, codebook, noise, tokens, labels, timestep: int) -> float:
    """Fraction of the teacher's tokens (at positions still noise) the EMA student reproduces at a timestep."""
    predicted = student.predict(labels, parts.inputs(tokens, noise, codebook, timestep), timestep)
    return float((predicted == tokens)[:, parts.first_noise(timestep):].double().mean())
