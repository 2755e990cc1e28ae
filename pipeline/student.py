"""Stage `student`: the DD student, initialised from the teacher and trained on the pair shards."""
import dataclasses
import functools

import torch

from dd.artifacts import Layout, compute_device, load_frozen_teacher, load_tokenizer, teacher_weights
from dd.checkpoint import file_sha256, save_json, save_weights
from dd.config import Config, fingerprint
from dd.pairs import MANIFEST, read_pairs
from dd.student import DDStudent, soft_targets, student_inputs, student_loss
from dd.training import train


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    teacher, codebook = load_frozen_teacher(layout), load_tokenizer(layout).codebook
    noise, tokens, labels = read_pairs(layout.pairs_dir)
    timesteps = torch.tensor(config.student.timesteps)
    if timesteps.max() >= tokens.shape[1]:
        raise ValueError(f"student.timesteps {config.student.timesteps} must be below the {tokens.shape[1]} tokens")
    device = compute_device()
    student = DDStudent.from_teacher(teacher, codebook).to(device)   # the teacher's copy stays behind on the CPU
    on_device = functools.partial(torch.Tensor.to, device=device)
    targets = on_device(soft_targets(codebook, config.student.target_width))     # (V, V)

    def loss_fn(model, indices, generator):
        # Each example is trained at one of the timesteps, drawn uniformly.
        sample_timesteps = timesteps[torch.randint(len(timesteps), (len(indices),), generator=generator)]
        batch = map(on_device, (labels[indices], noise[indices], tokens[indices], codebook, sample_timesteps))
        return student_loss(model, *batch, targets)

    run_fingerprint = fingerprint(config.student.timesteps, config.student.target_width, config.student.train,
                                  file_sha256(layout.pairs_dir / MANIFEST), file_sha256(teacher_weights(layout)))
    ema = train(student, loss_fn, len(tokens), config.student.train, layout.student_dir,
                layout.metrics_dir / "student_log.jsonl", run_fingerprint, f"student {layout.teacher}", progress)
    held = [on_device(x) for x in (codebook, noise[:2000], tokens[:2000], labels[:2000])]
    metrics = {f"token_agreement_t{t}": _agreement(ema, *held, t) for t in config.student.timesteps}
    save_weights(layout.student_dir / "model.pt", ema.state_dict(),
                 {"teacher": layout.teacher, "timesteps": list(config.student.timesteps),
                  "train": dataclasses.asdict(config.student.train), **metrics})
    save_json(layout.metrics_dir / "student.json", metrics)
    return metrics


@torch.inference_mode()
def _agreement(student, codebook, noise, tokens, labels, timestep: int) -> float:
    """Fraction of the teacher's tokens (at positions still noise) the EMA student reproduces at a timestep."""
    predicted = student.predict(labels, student_inputs(tokens, noise, codebook, timestep), timestep)
    return float((predicted == tokens)[:, timestep:].double().mean())
