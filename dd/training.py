"""One explicit training loop, used for the teacher and the DD student.

Progress is counted in steps of `batch_size` examples drawn with replacement by a generator seeded from
(seed, step): the batch at step s is a function of the params alone, so a resumed run sees exactly the batches
an uninterrupted one would, and under torchrun each rank trains on its rows of the same global batch and of
the same draws (`Batch`), so N ranks make the updates one makes (to float rounding).

Resuming: rerun the same command. Every `checkpoint_every` steps the loop writes checkpoint.pt (model, EMA,
optimizer, step, and the record of the params and code that produced it, dd/provenance.py) atomically into its
run folder; a later run with the same record continues from it, and one with other params or other code (or a
damaged checkpoint) starts afresh and says why.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from dd.checkpoint import atomic_write, save_torch
from dd.config import TrainConfig
from dd.progress import progress_bar
from dd.provenance import changes
from dd.seeding import indexed_generator



@dataclass(frozen=True)
class Batch:
    """One step's global batch, as every rank sees it. Each rank draws the per-example randomness (class dropout,
    timesteps, noise) for the WHOLE batch from `generator`, the same on every rank, and trains on its own rows of
    it (`local`): N ranks then see exactly the examples and the draws of one, and DDP's average of their mean
    losses' gradients is the gradient of the global batch's mean loss."""
    indices: Tensor                 # (B,) the examples of the global batch
    generator: torch.Generator      # the step's other randomness, a function of (seed, step)
    rank: int = 0
    world_size: int = 1

    @property
    def size(self) -> int:
        return len(self.indices)

    def local(self, rows: Tensor) -> Tensor:
        """This rank's rows of a per-example tensor of the global batch (B, ...)."""
        return rows[self.rank::self.world_size]


# loss_fn(model, batch) -> this rank's mean loss over its rows of the batch
LossFn = Callable[[nn.Module, Batch], Tensor]


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether `precision` ("fp32", "bf16" or "auto") autocasts to bf16 on `device`.

    "auto" asks for native bf16 only: any CUDA device of ours (H100, H200), or a CPU with AVX512-BF16 or AMX,
    where oneDNN runs bf16 matrix products natively (on our 2-core EPYC: var-tiny's teacher and student steps
    1.3x faster, llamagen-tiny's no faster). Other CPUs emulate bf16, 8x slower than fp32, so there "auto"
    means fp32.
    """
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    return device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.train_steps - config.warmup_steps)
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for ema_param, param in zip(ema.parameters(), model.parameters()):
        ema_param.lerp_(param, 1.0 - decay)


def train(model: nn.Module, loss_fn: LossFn, num_examples: int, config: TrainConfig, run_dir: Path,
          log_path: Path, provenance: dict, description: str = "train", progress: bool = True) -> nn.Module:
    """Train `model` in place; returns its EMA copy (what the stage saves). `provenance` records what makes this
    run (dd.provenance.record): a checkpoint is resumed only if it was written under the same record."""
    run_dir, log_path = Path(run_dir), Path(log_path)
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if config.batch_size % world_size:
        raise ValueError(f"batch_size {config.batch_size} does not split evenly over {world_size} ranks: the ranks' "
                         f"mean losses then weigh examples unequally; use a multiple of {world_size}")
    device = next(model.parameters()).device
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    decay_params = [p for p in model.parameters() if p.ndim >= 2]   # no weight decay on norms, biases
    other_params = [p for p in model.parameters() if p.ndim < 2]
    # On CUDA the fused kernel: one launch for every parameter's update instead of several per tensor.
    optimizer = torch.optim.AdamW([{"params": decay_params, "weight_decay": config.weight_decay},
                                   {"params": other_params, "weight_decay": 0.0}], lr=config.learning_rate,
                                  betas=(0.9, 0.95), fused=device.type == "cuda")
    step = resume(run_dir / "checkpoint.pt", provenance, {"model": model, "ema": ema, "optimizer": optimizer})
    log_rows = [row for row in read_log(log_path) if row["step"] <= step] if step else []
    if config.compile and step < config.train_steps:
        model.compile()     # in place: the parameters and state-dict keys stay the model's own
    trained = nn.parallel.DistributedDataParallel(model) if world_size > 1 else model

    bf16 = uses_bf16(config.precision, device)
    started = time.time()
    description = f"{description} ({'bf16' if bf16 else 'fp32'})"
    with progress_bar(description, config.train_steps, enabled=progress and rank == 0) as advance:
        advance(step)
        while step < config.train_steps:
            # Draw this step's global batch; this rank trains on its rows of it.
            generator = indexed_generator(config.seed, step)
            batch = Batch(torch.randint(num_examples, (config.batch_size,), generator=generator), generator,
                          rank, world_size)

            # Forward and backward, bf16 autocast on the matrix products.
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, config)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(trained, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()

            # Update EMA; warm it up so early steps are not dominated by the random start. The warm-up decay
            # (1 + s) / (10 + s) stays below 0.999 until step 8,990: in runs of 1,000-1,500 steps it ends at
            # 0.991-0.994 and any ema_decay above that has no effect (extra student EMAs at 0.995, 0.998 and
            # 0.9995 beside the stage's 0.999 gave the same weights and FIDs).
            update_ema(ema, model, min(config.ema_decay, (1 + step) / (10 + step)))
            step += 1

            # Log and checkpoint. Only here does the host wait for the device (.item()), so on a GPU the steps
            # between two logged ones queue up without a pause.
            logged = step % config.log_every == 0 or step == config.train_steps
            if logged:
                log_rows.append({"step": step, "train/loss": loss.item(), "train/grad_norm": grad_norm.item(),
                                 "train/learning_rate": learning_rate(step - 1, config),
                                 "train/examples": step * config.batch_size, "train/bf16": bf16,
                                 "train/seconds": round(time.time() - started, 2)})
            if rank == 0 and (step % config.checkpoint_every == 0 or step == config.train_steps):
                write_log(log_path, log_rows)
                save_torch(run_dir / "checkpoint.pt", {"model": model.state_dict(), "ema": ema.state_dict(),
                                                       "optimizer": optimizer.state_dict(), "step": step,
                                                       "provenance": provenance})
            advance(1, **({"loss": log_rows[-1]["train/loss"]} if logged else {}))
    return ema


def resume(path: Path, provenance: dict, parts: dict) -> int:
    """Load a training checkpoint's `parts` ({name: module or optimizer}, saved under those names) and return its
    step, or return 0 (and say why) when it cannot be resumed: unreadable, made under another record (other
    params or code), or holding other models (names or shapes differ). Nothing is loaded unless all of it fits."""
    if not path.exists():
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:          # written atomically, so only damage after the fact gets here
        print(f"{path} cannot be read ({type(error).__name__}: {error}); starting this training afresh")
        return 0
    reason = changes(state.get("provenance"), provenance)
    if not reason and any(isinstance(part, nn.Module) and (name not in state or _shapes(state[name]) !=
                                                          _shapes(part.state_dict())) for name, part in parts.items()):
        reason = "holds another model's weights (names or shapes differ)"    # the code changed a model since
    if reason:
        print(f"{path} {reason}; starting this training afresh")
        return 0
    for name, part in parts.items():
        part.load_state_dict(state[name])
    print(f"resuming from {path} at step {state['step']}")
    return state["step"]


def _shapes(state: dict) -> dict:
    return {name: tuple(value.shape) for name, value in state.items()}


def read_log(path: Path) -> list[dict]:
    """A training log: one object per logged step ({"step", "train/loss", ...}); [] where there is none yet."""
    return json.loads(Path(path).read_text()) if Path(path).exists() else []


def write_log(path: Path, rows: list[dict]) -> None:
    # A JSON list, one row a line: what `dvc plots show` and `dvc plots diff` read (they do not read JSON lines).
    atomic_write(path, lambda tmp: tmp.write_text("[\n" + ",\n".join(json.dumps(row) for row in rows) + "\n]\n"))
