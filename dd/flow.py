"""The per-token flow map of Distilled Decoding (Liu et al., ICLR 2025, arXiv 2412.17153, section 3.1).

An AR teacher draws each token from a categorical p over a codebook c_1..c_V in R^d. DD replaces that random
draw by a deterministic map from Gaussian noise eps ~ N(0, I_d) to a code, built so that the token's law is
still exactly p. The map is the probability-flow ODE of the rectified-flow path between N(0, I) and the
discrete target sum_j p_j delta(x - c_j):

    x_t = (1 - t) x_data + t eps,          t = 1 (noise) -> 0 (data)
    w_j(x, t) = softmax_j( log p_j - ||x - (1 - t) c_j||^2 / (2 t^2) )     posterior over codes
    D(x, t)   = sum_j w_j(x, t) c_j                                         data prediction
    dx/dt     = (x - D(x, t)) / t

Every code's basin has Gaussian mass p_j, so token = lim_{t->0} argmax_j w_j(x(t), t) is distributed as p
(tests/test_flow.py checks this statistically).

Solver. Near t = 1 the posterior w barely depends on x, yet that is where most tokens are decided (the basin
a trajectory enters is fixed early, while the noise still dominates); near t = 0 the field is stiff but w is
already one-hot, so nothing changes any more. A classical fourth-order Runge-Kutta on a grid uniform in t
spends its evaluations where decisions happen: 20 steps (80 evaluations) agree with a 400-step solve on
>= 99.9% of tokens (tests/test_flow.py), where a second-order solver needed twice the evaluations and a grid
uniform in log-SNR (DPM-Solver style) did worse still. At t = 1 the field is exact in closed form: w = p for
every x, so D = sum_j p_j c_j. Everything is a pure tensor function with static shapes and no host
synchronisation, so a whole sampling loop can be captured in a CUDA graph.

Dimensions: B rows (tokens mapped in parallel), V codebook size, d code dimension.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor


def code_logits(x: Tensor, t: float | Tensor, log_probs: Tensor, codebook: Tensor, codebook_sq_norms: Tensor) -> Tensor:
    """log w_j(x, t) up to a per-row constant.

    ||x - (1-t) c_j||^2 = ||x||^2 - 2 (1-t) x.c_j + (1-t)^2 ||c_j||^2, and ||x||^2 is the same for every j,
    so it drops out of the softmax: one (B, d) x (d, V) product per evaluation.
    """
    alpha = 1.0 - t
    distance_terms = (alpha * _rows_dot_codes(x, codebook) - 0.5 * alpha**2 * codebook_sq_norms) / t**2  # (B, V)
    return log_probs + distance_terms


def _rows_dot_codes(x: Tensor, codebook: Tensor) -> Tensor:
    """x (B, d) against a shared codebook (V, d) or per-row candidates (B, V, d) -> (B, V)."""
    return x @ codebook.T if codebook.ndim == 2 else torch.einsum("bvd,bd->bv", codebook, x)


def _weights_times_codes(weights: Tensor, codebook: Tensor) -> Tensor:
    """weights (B, V) times codes (V, d) or (B, V, d) -> (B, d)."""
    return weights @ codebook if codebook.ndim == 2 else torch.einsum("bv,bvd->bd", weights, codebook)


# Solving over per-row candidates gathers a (B, k, d) copy of their codes and turns both products of the field
# into batched matrix-vector products, several times slower per code than the shared codebook's matrix products:
# with V = 256 on 2 CPU cores (compiled), 64 candidates per row took 2x the time of all 256 codes at 65,000 rows
# (a VAR batch) and 3x at 1,000 (a LlamaGen token), for the same tokens. So the candidates pay only where they
# remove most of the codebook (LlamaGen's V = 16,384 under a small top-k).
SUPPORT_SPEEDUP = 8

# Compiled for the CPU, the candidates' (B, k, d) products vectorise along d. Inductor's 512-bit code (AVX-512)
# for d = 8, half a vector, was 35x slower than its 256-bit code on a 2-core AVX-512 Xeon (32,000 rows x 8
# candidates: 3.99 s against 0.115 s a solve, the same tokens; scripts/flow_speed.py), so narrow codes get
# 256-bit vectors, which AVX2 CPUs use anyway. The shared codebook's matrix products do not care, nor does d = 32.
NARROW_CODE_DIM = 16      # fp32 lanes of a 512-bit vector


def flow_map(eps: Tensor, probs: Tensor, codebook: Tensor, num_steps: int = 20, t_end: float = 1e-3,
             support_size: int = 0, compile: bool = False) -> Tensor:
    """Map noise to tokens deterministically, with token law equal to `probs`.

    eps: (B, d) noise; probs: (B, V) the teacher's distribution after its sampling recipe (zeros allowed);
    codebook: (V, d). Returns tokens (B,) int64. support_size > 0 says the recipe left at most that many
    nonzero per row (a top-k recipe); where the codebook is over SUPPORT_SPEEDUP times larger, the map then
    solves over each row's support_size most probable codes only, which is exact since a code of probability 0
    has no basin. Computes in float32 (or float64 if given), autocast or not: float32 picked the
    same tokens as float64 on every one of 3,000 test rows at half the cost. compile: run each RK4 step through
    torch.compile, which fuses its dozens of small elementwise kernels (3x faster on 2 CPU cores at 1,000 rows
    x 64 candidates, after ~13 s of compiling once per process).
    """
    if 0 < support_size and SUPPORT_SPEEDUP * support_size < probs.shape[-1]:
        probs, candidates = probs.topk(support_size, dim=-1)                         # (B, k), (B, k)
        chosen = flow_map(eps, probs, codebook[candidates], num_steps, t_end, compile=compile)  # codes (B, k, d)
        return candidates.gather(1, chosen[:, None]).squeeze(1)

    with torch.autocast(eps.device.type, enabled=False):   # a bf16 caller (dd/fast_path.py) keeps the map's fp32
        return _solve(eps, probs, codebook, num_steps, t_end, compile)


def _solve(eps: Tensor, probs: Tensor, codebook: Tensor, num_steps: int, t_end: float, compile: bool) -> Tensor:
    dtype = torch.promote_types(eps.dtype, torch.float32)
    probs, eps, codebook = probs.to(dtype), eps.to(dtype), codebook.to(dtype)
    log_probs = torch.log(probs)                            # -inf where the recipe removed a token
    codebook_sq_norms = (codebook**2).sum(-1)               # (V,) or (B, V)
    mean_code = _weights_times_codes(probs, codebook)       # D(x, 1) for every x, (B, d)
    field = (log_probs, codebook, codebook_sq_norms, mean_code)         # _velocity's arguments after (x, t)
    # Classical RK4 from t = 1 down to t_end on a uniform grid; times as tensors, so one compiled step serves all.
    times = torch.linspace(1.0, t_end, num_steps + 1, dtype=dtype, device=eps.device)
    narrow_candidates = codebook.ndim == 3 and codebook.shape[-1] < NARROW_CODE_DIM
    step = _compiled_rk4_step(256 if narrow_candidates else None) if compile else _rk4_step
    x = eps
    for i in range(num_steps):
        x = step(x, times[i], times[i + 1], *field)
    return code_logits(x, t_end, log_probs, codebook, codebook_sq_norms).argmax(dim=-1)


def _velocity(x: Tensor, t: Tensor, log_probs: Tensor, codebook: Tensor, codebook_sq_norms: Tensor,
              mean_code: Tensor) -> Tensor:
    """dx/dt = (x - D(x, t)) / t, (B, d); at t = 1 the closed form x - sum_j p_j c_j."""
    weights = torch.softmax(code_logits(x, t, log_probs, codebook, codebook_sq_norms), dim=-1)
    return torch.where(t >= 1.0, x - mean_code, (x - _weights_times_codes(weights, codebook)) / t)


def _rk4_step(x: Tensor, t_cur: Tensor, t_next: Tensor, *field: Tensor) -> Tensor:
    h, t_mid = t_next - t_cur, 0.5 * (t_cur + t_next)                 # h < 0: from noise towards data
    k1 = _velocity(x, t_cur, *field)
    k2 = _velocity(x + 0.5 * h * k1, t_mid, *field)
    k3 = _velocity(x + 0.5 * h * k2, t_mid, *field)
    k4 = _velocity(x + h * k3, t_next, *field)
    return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


@functools.cache
def _compiled_rk4_step(vector_bits: int | None):
    """The RK4 step through torch.compile, with CPU vectors of vector_bits (None: Inductor's choice for the CPU).

    Static shapes first; a second row count (VAR's scales) makes them dynamic.
    """
    return torch.compile(_rk4_step, options=None if vector_bits is None else {"cpp.simdlen": vector_bits})
