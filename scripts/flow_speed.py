"""Time one compiled flow-map solve (dd/flow.py) per code layout and CPU vector width, side by side.

The pairs stage solves the flow map for every token of every pair. Under a top-k recipe that leaves a small
share of the codebook, each row solves over its own k candidates, a (rows, k, d) tensor; otherwise over the
shared (V, d) codebook. This prints the median seconds of one 20-step solve for each, compiled with Inductor's
default vector width (512 bits on an AVX-512 CPU) and with 256 bits, over interleaved rounds so that machine
drift hits every variant alike, and checks that every variant picks the same tokens.

    python scripts/flow_speed.py                      # var-tiny's last scale: 500 pairs x 64 tokens, k = 8, d = 8
    python scripts/flow_speed.py --code-dim 32 --rows 8000
"""
from __future__ import annotations

import statistics
import time
from unittest import mock

import torch
import typer

from dd import flow


def main(rows: int = typer.Option(32000, help="tokens solved at once (var-tiny: 500 pairs x 64 at its last scale)"),
         top_k: int = typer.Option(8, help="candidates per row (the recipe's top-k)"),
         codebook_size: int = typer.Option(256, help="V"),
         code_dim: int = typer.Option(8, help="d"),
         rounds: int = typer.Option(5, help="timed rounds, after one warm-up round that compiles")) -> None:
    generator = torch.Generator().manual_seed(0)
    codebook = torch.randn(codebook_size, code_dim, generator=generator)                       # (V, d)
    probs, candidates = torch.softmax(3 * torch.randn(rows, codebook_size, generator=generator), -1).topk(top_k, -1)
    probs = probs / probs.sum(-1, keepdim=True)                                                # (rows, k)
    full_probs = torch.zeros(rows, codebook_size).scatter(1, candidates, probs)                # (rows, V)
    eps = torch.randn(rows, code_dim, generator=generator)                                     # (rows, d)

    # Each variant: (its compiled step, the solve's probs, its codes, and how its tokens map to codebook ids).
    variants = {}
    for bits in (None, 256):
        name = f"{'default' if bits is None else bits}-bit"
        step = flow._compiled_rk4_step(bits)                                  # what flow_map compiles
        variants[f"candidates, {name}"] = (step, probs, codebook[candidates], candidates)
        variants[f"codebook, {name}"] = (step, full_probs, codebook, None)
    seconds = {name: [] for name in variants}
    tokens = {}
    for round_ in range(rounds + 1):
        for name, (step, p, codes, ids) in variants.items():
            # flow_map picks the width by the codes' layout; here each variant forces its own.
            with mock.patch.object(flow, "_compiled_rk4_step", lambda bits, step=step: step):
                start = time.perf_counter()
                chosen = flow.flow_map(eps, p, codes, compile=True)
                elapsed = time.perf_counter() - start
            tokens[name] = chosen if ids is None else ids.gather(1, chosen[:, None]).squeeze(1)
            if round_:
                seconds[name].append(elapsed)
    reference = next(iter(tokens.values()))
    print(f"CPU {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, rows {rows}, "
          f"k {top_k}, V {codebook_size}, d {code_dim}; median of {rounds} interleaved rounds")
    differ = []
    for name in variants:
        same = bool((tokens[name] == reference).all())
        print(f"{name:26s} {statistics.median(seconds[name]):8.3f} s   same tokens: {same}")
        if not same:
            differ.append(name)
    if differ:     # a faster solve that picks other tokens would change the pairs: not a speed-up
        raise SystemExit(f"{', '.join(differ)} picked other tokens than {next(iter(variants))}")


if __name__ == "__main__":
    typer.run(main)
