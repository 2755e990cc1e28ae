"""Distilled Decoding 2 (DD2; Liu et al., NeurIPS 2025, arXiv 2510.21003): the two training stages and the one-step
sampler, shared by both AR families. The losses are dd/score_distillation.py's; each family builds its own
networks (dd/raster/dd2.py): an AR-diffusion model that reads the earlier tokens as the teacher does and a
one-step generator that reads noise.

    stage 1 (GTS)   the AR-diffusion model psi = the teacher's backbone + a diffusion head, regressed on the
                    teacher's exact velocity at noisy versions of teacher samples (the pair shards' tokens).
                    One model, one loss: the ordinary training loop (dd/training.py `train`).
    stage 2 (CSD)   a generator G and a guidance network psi, both initialised from stage 1. Per generator
                    update, K guidance updates teach psi the velocity of G's current per-token laws; then G moves
                    its outputs so that, token by token, the teacher's velocity and psi's agree (`train_csd`).
    sampling        q = G(class, noise) in one forward pass, each q_i snapped to its nearest code (`snap`).

The teacher and psi read the generator's earlier outputs SNAPPED to codes (design choice, ours): the teacher is
a model of discrete tokens, and what is decoded are the snapped tokens, so the law DD2 matches is the teacher's
law of the next token given the earlier ones as they will be decoded. The paper instead adapts the raster
teacher to read continuous vectors (its section 3 input adaptation); snapping needs no adaptation and keeps the
target exactly the distribution DD1 distils.

Dimensions: B batch, L image tokens, d code dimension, V codebook size.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from dd.checkpoint import save_torch
from dd.config import CSDConfig
from dd.families import DD2Parts
from dd.progress import progress_bar
from dd.sampling import TeacherContinuation
from dd.score_distillation import generator_loss, gts_loss, guidance_loss, noisy, sample_times, teacher_velocity
from dd.seeding import indexed_generator
from dd.training import Batch, read_log, resume, update_ema, uses_bf16, write_log

# loss(generator, guidance, rng) -> scalar: one update's loss, its randomness (classes, noise, times) from rng
CSDLoss = Callable[[nn.Module, nn.Module, torch.Generator], Tensor]


def snap(q: Tensor, codebook: Tensor) -> Tensor:
    """The nearest code of each vector: q (..., d), codebook (V, d) -> tokens (...) int64.
    argmin_j ||q - c_j||^2 = argmax_j (q . c_j - ||c_j||^2 / 2): one matrix product, no (..., V, d) difference."""
    codebook = codebook.float()
    return (q.float() @ codebook.T - 0.5 * (codebook**2).sum(-1)).argmax(-1)


STUDENT_TEMPERATURE = 0.1    # DD1's soft targets spread its softmax (mean top probability 0.22 on llamagen-tiny),
                             # so its plain expected code snaps to its argmax for only 18% of tokens; at 0.1, 93%


class StudentGenerator(nn.Module):
    """A DD1 student as DD2's generator (dd2.generator_init: dd1): q = softmax(logits / STUDENT_TEMPERATURE) @
    codebook, the student's sharpened expected code at pure noise (timestep 0), a continuous token the CSD
    gradient reaches through the softmax.
    It starts where DD1 ends (its snapped tokens are the student's argmax wherever the student is sure), so CSD
    refines a map that already makes images instead of building one from the Euler step's posterior mean, which
    is the same code for every noise (dd/raster/dd2.py). The paper starts from the AR-diffusion model only."""

    def __init__(self, student: nn.Module, codebook: Tensor):
        super().__init__()
        self.student = student
        self.register_buffer("codebook", codebook.detach().clone(), persistent=False)     # (V, d), never trained

    def forward(self, labels: Tensor, noise: Tensor) -> Tensor:
        logits = self.student(labels, noise, 0)                                            # (B, L, V)
        return (logits.float() / STUDENT_TEMPERATURE).softmax(-1) @ self.codebook.float()   # (B, L, d)


def with_student_generator(parts: DD2Parts, student: Callable[[], nn.Module], empty_student: Callable,
                           codebook: Tensor) -> DD2Parts:
    """`parts` whose generator is a StudentGenerator: built from `student()` (the trained DD1 student), loaded into
    one over empty_student(teacher, code_dim), and called on (labels, noise) directly in every family."""
    return dataclasses.replace(
        parts, generator=lambda model, codebook: StudentGenerator(student(), codebook),
        empty_generator=lambda teacher, code_dim, *_: StudentGenerator(empty_student(teacher, code_dim), codebook),
        generate=lambda generator, labels, noise: generator(labels, noise))


@torch.inference_mode()
def sample_dd2(generate: Callable[[Tensor, Tensor], Tensor], codebook: Tensor, labels: Tensor, noise: Tensor,
               teacher: TeacherContinuation | None = None, kept: int = 0, last_timestep: int = 0) -> Tensor:
    """DD2's sampler: labels (B,), noise (B, L, d) -> tokens (B, L); sample i depends on its own noise only.
    generate(labels, noise) -> continuous tokens (B, L, d) is the trained generator (DD2Parts.generate bound to it).

    One step: the generator's tokens. Multi-step (design/dd2.md section 6, the paper's VAR multi-step): the
    generator's first `kept` tokens, then the teacher's own sampler (with its static KV cache) remakes the rest
    up to `last_timestep` (tokens, or scales for a next-scale teacher, where `kept` must end a scale)."""
    tokens = snap(generate(labels, noise), codebook)                                         # (B, L)
    return tokens if teacher is None else teacher(labels, noise, last_timestep, tokens[:, :kept])


def warmup(step: int, peak: float, warmup_steps: int) -> float:
    return peak * min(1.0, (step + 1) / max(1, warmup_steps))


def train_csd(generator: nn.Module, guidance: nn.Module, generator_loss_fn: CSDLoss, guidance_loss_fn: CSDLoss,
              config: CSDConfig, run_dir: Path, log_path: Path, provenance: dict, description: str = "csd",
              progress: bool = True) -> nn.Module:
    """Stage 2: train `generator` and `guidance` in place; returns the generator's EMA (what is sampled).

    The first `guidance_warmup_steps` steps update the guidance network alone, once each, on the generator's
    samples; then each step makes K guidance updates and one generator update. Resumable like dd/training.py's
    loop: every `checkpoint_every` steps checkpoint.pt holds both networks, the EMA, both optimisers, the step
    and `provenance`; a rerun under the same record continues from it, one under another record (or from a
    damaged file) starts afresh and says why. Update u of step s draws from the generator indexed (seed, s, u),
    so a resumed run makes exactly the updates an uninterrupted one makes.
    """
    run_dir, log_path = Path(run_dir), Path(log_path)
    device = next(generator.parameters()).device
    ema = copy.deepcopy(generator).eval().requires_grad_(False)
    generator_optimizer = torch.optim.Adam(generator.parameters(), lr=config.generator_learning_rate, betas=(0.9, 0.95))
    guidance_optimizer = torch.optim.Adam(guidance.parameters(), lr=config.guidance_learning_rate, betas=(0.9, 0.95))
    parts = {"generator": generator, "guidance": guidance, "ema": ema,
             "generator_optimizer": generator_optimizer, "guidance_optimizer": guidance_optimizer}
    step = resume(run_dir / "checkpoint.pt", provenance, parts)
    log_rows = [row for row in read_log(log_path) if row["step"] <= step] if step else []
    bf16 = uses_bf16(config.precision, device)

    def update(loss_fn: CSDLoss, trained: nn.Module, frozen: nn.Module, optimizer, rate: float, rng) -> tuple[float, float]:
        # The frozen network's parameters get no gradient (the loss still flows through its inputs), so only
        # `trained` moves; requires_grad is restored even if the loss fails.
        for group in optimizer.param_groups:
            group["lr"] = rate
        frozen.requires_grad_(False)
        try:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(generator, guidance, rng)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        finally:
            frozen.requires_grad_(True)
        grad_norm = nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
        optimizer.step()
        return loss.item(), grad_norm.item()

    started, aligning, total = time.time(), config.guidance_warmup_steps, config.guidance_warmup_steps + config.train_steps
    generator_row = (None, None)                          # logged as null until the generator's first update
    with progress_bar(f"{description} ({'bf16' if bf16 else 'fp32'})", total, enabled=progress) as advance:
        advance(step)
        while step < total:
            updates = 1 if step < aligning else config.guidance_updates
            for u in range(updates):
                guidance_row = update(guidance_loss_fn, guidance, generator, guidance_optimizer,
                                      warmup(step, config.guidance_learning_rate, config.warmup_steps),
                                      indexed_generator(config.seed, step, stream=1 + u))
            if step >= aligning:
                generated = step - aligning                   # the generator's updates so far
                generator_row = update(generator_loss_fn, generator, guidance, generator_optimizer,
                                       warmup(generated, config.generator_learning_rate, config.warmup_steps),
                                       indexed_generator(config.seed, step))
                update_ema(ema, generator, min(config.ema_decay, (1 + generated) / (10 + generated)))
            step += 1

            if step % config.log_every == 0 or step == total:
                log_rows.append({"step": step, "train/generator_loss": generator_row[0],
                                 "train/generator_grad_norm": generator_row[1],
                                 "train/guidance_loss": guidance_row[0],
                                 "train/generator_updates": max(0, step - aligning),
                                 "train/examples": step * config.batch_size, "train/bf16": bf16,
                                 "train/seconds": round(time.time() - started, 2)})
            if step % config.checkpoint_every == 0 or step == total:
                write_log(log_path, log_rows)
                save_torch(run_dir / "checkpoint.pt", {name: part.state_dict() for name, part in parts.items()}
                           | {"step": step, "provenance": provenance})
            advance(1, **({"loss": generator_row[0]} if generator_row[0] is not None else {}))
    return ema


# ---------------------------------------------------------------------------------------------------------
# The losses of one update, for any family's networks
# ---------------------------------------------------------------------------------------------------------
# A family provides its networks and how to call them (dd/families/__init__.py `DD2Parts`): the AR-diffusion
# model's features(model, labels, tokens) -> (B, L, C), each token's from the class and the EARLIER tokens only,
# and its head(x_t, t, feature) -> velocity; generate(generator, labels, noise (B, L, d)) -> continuous tokens
# (B, L, d); and recipe_probs(labels, tokens) -> (B, L, V), the teacher's law of each token given the earlier
# ones, after the recipe DD1 distils.

def _token_noise(batch_size: int, num_tokens: int, code_dim: int, rng: torch.Generator) -> tuple[Tensor, Tensor]:
    """A noise vector and a time for each token of a batch: eps (B, L, d), t (B, L), on the CPU."""
    eps = torch.randn(batch_size, num_tokens, code_dim, generator=rng)
    return eps, sample_times(batch_size * num_tokens, rng).view(batch_size, num_tokens)


def _noisy(q: Tensor, eps: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Tokens q (B, L, d) at times t (B, L) under noise eps (B, L, d): (x0, eps, t, x_t), tokens as rows (B*L, ...)."""
    x0, eps, t = q.flatten(0, 1), eps.flatten(0, 1).to(q.device), t.flatten().to(q.device)
    return x0, eps, t, noisy(x0, eps, t)


def gts_loss_fn(parts: DD2Parts, codebook: Tensor, labels: Tensor, tokens: Tensor) -> Callable:
    """Stage 1's loss for dd/training.py `train`: (model, batch) -> the GTS loss on this rank's rows of the batch
    of teacher samples tokens (N, L) with labels (N,), on the codebook's device."""
    device = codebook.device

    def loss(model, batch: Batch) -> Tensor:
        indices = batch.local(batch.indices)
        batch_labels, batch_tokens = labels[indices].to(device), tokens[indices].to(device)
        eps, t = (batch.local(x) for x in _token_noise(batch.size, tokens.shape[1], codebook.shape[1], batch.generator))
        with torch.no_grad():
            probs = parts.recipe_probs(batch_labels, batch_tokens).flatten(0, 1)     # (B*L, V)
        features = parts.features(model, batch_labels, batch_tokens).flatten(0, 1)  # (B*L, C)
        x0, eps, t, x_t = _noisy(codebook[batch_tokens], eps, t)
        return gts_loss(model.head(x_t, t, features), teacher_velocity(x_t, t, probs, codebook))
    return loss


def csd_losses(parts: DD2Parts, codebook: Tensor, num_classes: int, num_tokens: int,
               batch_size: int) -> tuple[CSDLoss, CSDLoss]:
    """Stage 2's (generator loss, guidance loss) for `train_csd`. Each update draws its own classes and noise:
    stage 2 needs no data. The teacher and psi read the generator's earlier tokens snapped to codes, without
    gradient (the module docstring); the generator's gradient reaches q_i directly and through x_t."""
    device, code_dim = codebook.device, codebook.shape[1]

    def draw(generator: nn.Module, rng: torch.Generator) -> tuple[Tensor, Tensor]:
        labels = torch.randint(num_classes, (batch_size,), generator=rng).to(device)             # (B,)
        noise = torch.randn(batch_size, num_tokens, code_dim, generator=rng).to(device)          # (B, L, d)
        return labels, parts.generate(generator, labels, noise)                                  # q (B, L, d)

    def generator_loss_fn(generator: nn.Module, guidance: nn.Module, rng: torch.Generator) -> Tensor:
        labels, q = draw(generator, rng)
        tokens = snap(q.detach(), codebook)                                                      # (B, L)
        with torch.no_grad():
            probs = parts.recipe_probs(labels, tokens).flatten(0, 1)                             # (B*L, V)
            features = parts.features(guidance, labels, tokens).flatten(0, 1)                    # (B*L, C)
        x0, eps, t, x_t = _noisy(q, *_token_noise(batch_size, num_tokens, code_dim, rng))
        return generator_loss(teacher_velocity(x_t, t, probs, codebook), guidance.head(x_t, t, features), x0, eps, t,
                              tokens_per_sample=num_tokens)

    def guidance_loss_fn(generator: nn.Module, guidance: nn.Module, rng: torch.Generator) -> Tensor:
        with torch.no_grad():
            labels, q = draw(generator, rng)                                                     # fresh samples
        features = parts.features(guidance, labels, snap(q, codebook)).flatten(0, 1)             # (B*L, C)
        x0, eps, t, x_t = _noisy(q, *_token_noise(batch_size, num_tokens, code_dim, rng))
        return guidance_loss(guidance.head(x_t, t, features), x0, eps)

    return generator_loss_fn, guidance_loss_fn
