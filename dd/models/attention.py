"""softmax(q k^T * scale + bias) v, the attention every model here computes, with the kernel chosen by device.

On CUDA: torch's scaled_dot_product_attention, whose fused kernels never hold the (S, S) scores in memory (at
the published sizes, 680 or 256 tokens at batch 256, those would be gigabytes per layer).

On CPU: the same formula written out as matmul, softmax, matmul. PyTorch's CPU flash-attention kernel is slow
at our shapes, its backward above all: 21 ms per call for var-tiny (batch 32, 3 heads, 130 tokens, head dim 64),
against 6 ms forward. Written out, a compiled bf16 training step took 184 against 253 ms for var-tiny's teacher
and 226 against 314 ms for llamagen-tiny's (batch 64); the var-tiny VQVAE's fp32 step 240 against 267 ms.

Which branch runs depends on the tensor's device only (a Python-level test), so a compiled graph or a captured
CUDA graph contains one of them and no host synchronisation.

Dimensions: B batch, H heads, Q queries, S keys, D head dim.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None, causal: bool = False,
              scale: float | None = None) -> Tensor:
    """q (B, H, Q, D), k and v (B, H, S, D) -> (B, H, Q, D).

    bias: additive, broadcastable to (B, H, Q, S) (-inf hides a key); causal: query i sees keys <= i (Q == S);
    scale: multiplies q k^T, D ** -0.5 by default.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if q.device.type == "cuda":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=causal, scale=scale)
    scores = torch.einsum("bhqd,bhsd->bhqs", q, k) * scale                         # (B, H, Q, S)
    if causal:
        scores = scores.masked_fill(~torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril(),
                                    float("-inf"))
    if bias is not None:
        scores = scores + bias
    return torch.einsum("bhqs,bhsd->bhqd", scores.softmax(-1), v)


def visibility_bias(visible: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """The additive `bias` for a boolean mask (True where the query sees the key): 0 there, -inf elsewhere.

    One form of mask for every caller: VAR's published checkpoints store theirs as such a bias (a float buffer).
    """
    return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill(~visible, float("-inf"))


def activation_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the keys and values `model` computes, which its static KV cache must hold: autocast's where
    autocast is on for the weights' device (bf16 sampling, dd/fast_path.py), else the weights' own."""
    weight = next(model.parameters())
    if torch.is_autocast_enabled(weight.device.type):
        return torch.get_autocast_dtype(weight.device.type)
    return weight.dtype
