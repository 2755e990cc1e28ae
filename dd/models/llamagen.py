"""LlamaGen class-conditional GPT (Sun et al., arXiv 2406.06525), written from scratch.

A Llama-style decoder over VQ image tokens: the class label is embedded as one "class token" placed before
the image tokens, which follow in raster order. Module names and shapes match the reference implementation
(https://github.com/FoundationVision/LlamaGen, autoregressive/models/gpt.py) so the published checkpoints
c2i_B_256.pt, c2i_L_256.pt and c2i_XL_384.pt load with ``load_state_dict(strict=True)``.

Training-time regularisers of the reference (token/residual/FFN dropout, label dropout, drop path) are left
out: the caller chooses labels, and ``num_classes`` is the null class for classifier-free guidance.

Dimension letters used in shape comments:
    B batch, S sequence (positions), T image tokens, L cache length (= max_seq_len),
    C channels (model dim), H heads, D head dim, F feed-forward hidden, V vocabulary, N layers.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from dd.models.attention import attention, visibility_bias


def find_multiple(n: int, k: int) -> int:
    """Smallest multiple of k that is >= n."""
    return -(-n // k) * k


@dataclass(frozen=True)
class GPTConfig:
    dim: int
    n_layer: int
    n_head: int
    vocab_size: int
    num_classes: int  # labels are 0..num_classes-1; index num_classes is the null class
    grid_size: int  # image tokens per side
    cls_token_num: int = 1
    rope_base: float = 10000.0
    # LlamaGen zeroes the class token's rotary row, so its query and key vanish and every query gives it the
    # attention logit 0 (the published checkpoints need this). False rotates it by angle 0 instead (identity):
    # its key is kept, and attention can find the class token by content.
    zero_class_rope: bool = True
    norm_eps: float = 1e-5
    multiple_of: int = 256

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def ffn_dim(self) -> int:
        # Llama's SwiGLU sizing: 2/3 of 4*dim keeps the parameter count of a plain 4*dim MLP.
        return find_multiple(int(2 * 4 * self.dim / 3), self.multiple_of)

    @property
    def num_image_tokens(self) -> int:
        return self.grid_size**2

    @property
    def max_seq_len(self) -> int:
        return self.cls_token_num + self.num_image_tokens


def rope_table_2d(config: GPTConfig) -> Tensor:
    """(cos, sin) of the 2-D rotary embedding for every sequence position: (max_seq_len, D/2, 2), float32.

    Same layout as LlamaGen's ``precompute_freqs_cis_2d``: the D/2 rotated pairs are split in two; the first
    D/4 pairs turn with the token's grid row, the last D/4 with its grid column, each half using the
    frequencies base^(-4i/D). The class positions get all-zero rows (cos = sin = 0), which zeroes the class
    token's query and key: every query gives it the attention logit 0, yet its value still flows. The published
    checkpoints were trained this way, so we keep it.
    """
    # Made on the CPU even under a meta-device context: it is not in the checkpoints, so a model built on meta and
    # given a file's weights (dd.checkpoint.with_weights) still needs its real values.
    cpu = torch.device("cpu")
    half = config.head_dim // 2
    freqs = 1.0 / (config.rope_base ** (torch.arange(0, half, 2, device=cpu).float() / half))  # (D/4,)
    angle = torch.outer(torch.arange(config.grid_size, device=cpu).float(), freqs)  # (grid, D/4)
    g = config.grid_size
    grid = torch.cat([angle[:, None, :].expand(g, g, -1), angle[None, :, :].expand(g, g, -1)], dim=-1)  # (row, col, D/2)
    table = torch.stack([grid.cos(), grid.sin()], dim=-1).flatten(0, 1)  # (T, D/2, 2), raster order
    class_rows = torch.zeros(config.cls_token_num, half, 2, device=cpu)  # (cos, sin) = (0, 0): q = k = 0
    if not config.zero_class_rope:
        class_rows[..., 0] = 1.0  # (cos, sin) = (1, 0): identity rotation
    return torch.cat([class_rows, table])  # (S, D/2, 2)


def apply_rope(x: Tensor, rope: Tensor) -> Tensor:
    """Rotate interleaved pairs (x[2i], x[2i+1]) of x (B, H, S, D) by the angles in rope (S, D/2, 2)."""
    x0, x1 = rearrange(x.float(), "b h s (d two) -> two b h s d", two=2)  # (B, H, S, D/2) each
    cos, sin = rope.unbind(-1)  # (S, D/2)
    out = torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1)  # (B, H, S, D/2, 2)
    return rearrange(out, "b h s d two -> b h s (d two)").type_as(x)  # (B, H, S, D)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in float32 (as the reference does) so bf16/fp16 activations keep their statistics exact.
        return F.rms_norm(x.float(), x.shape[-1:], eps=self.eps).type_as(x) * self.weight


@dataclass
class KVCache:
    """Preallocated keys and values for all layers, indexed by absolute sequence position.

    Static shapes make a decoding step capturable in a CUDA graph. The tensors are plain data owned by the
    caller (one cache per sampling run), not module state.
    """

    k: Tensor  # (N, B, H, L, D)
    v: Tensor  # (N, B, H, L, D)

    @classmethod
    def allocate(cls, config: GPTConfig, batch_size: int, dtype: torch.dtype, device: torch.device | str) -> "KVCache":
        shape = (config.n_layer, batch_size, config.n_head, config.max_seq_len, config.head_dim)
        # Zeros, not empty: masked-out slots still enter softmax(QK)V with weight 0, and 0 * NaN garbage is NaN.
        return cls(k=torch.zeros(shape, dtype=dtype, device=device), v=torch.zeros(shape, dtype=dtype, device=device))


class Attention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.wqkv = nn.Linear(config.dim, 3 * config.dim, bias=False)
        self.wo = nn.Linear(config.dim, config.dim, bias=False)

    def forward(self, x: Tensor, rope: Tensor, cache: tuple[Tensor, Tensor, Tensor, Tensor] | None = None) -> Tensor:
        """Causal attention over x alone, or (cache given) over the cached positions its bias leaves visible.

        cache = (k_layer (B, H, L, D), v_layer (B, H, L, D), pos (S,), bias (S, slots), 0 or -inf): k/v of x are
        written at pos; attention reads the first `slots` cache positions.
        """
        q, k, v = rearrange(self.wqkv(x), "b s (three h d) -> three b h s d", three=3, h=self.n_head)  # (B, H, S, D)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        if cache is None:
            # q and k cover the same window of positions, so the lower-triangular mask is right for any start.
            out = attention(q, k, v, causal=True)  # (B, H, S, D)
        else:
            k_all, v_all, pos, bias = cache
            k_all.index_copy_(2, pos, k)
            v_all.index_copy_(2, pos, v)
            slots = bias.shape[-1]
            out = attention(q, k_all[:, :, :slots], v_all[:, :, :slots], bias=bias)  # (B, H, S, D)
        return self.wo(rearrange(out, "b h s d -> b s (h d)"))  # (B, S, C)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.w1 = nn.Linear(config.dim, config.ffn_dim, bias=False)
        self.w3 = nn.Linear(config.dim, config.ffn_dim, bias=False)
        self.w2 = nn.Linear(config.ffn_dim, config.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # (B, S, C)


class TransformerBlock(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention = Attention(config)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.feed_forward = FeedForward(config)

    def forward(self, x: Tensor, rope: Tensor, cache: tuple[Tensor, Tensor, Tensor, Tensor] | None = None) -> Tensor:
        h = x + self.attention(self.attention_norm(x), rope, cache)  # (B, S, C)
        return h + self.feed_forward(self.ffn_norm(h))  # (B, S, C)


class ClassEmbedding(nn.Module):
    """Label table with one extra row (index num_classes) for the null class; named as in the checkpoints."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.embedding_table = nn.Embedding(config.num_classes + 1, config.dim)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig, head_std: float = 0.0):
        super().__init__()
        if config.cls_token_num != 1:
            raise ValueError("class-conditional LlamaGen embeds a label as exactly one token (cls_token_num=1)")
        if config.head_dim % 4:
            raise ValueError("2-D RoPE needs a head dim divisible by 4")
        self.config = config
        self.cls_embedding = ClassEmbedding(config)
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        # Not in the checkpoints (non-persistent). Stored as the int32 bit pattern of the float32 table so that
        # model.to(bfloat16) / .half() leave it alone (they cast floating buffers only): the reference keeps
        # RoPE in float32 whatever the weight dtype, and bf16 angles would visibly change the logits.
        self.register_buffer("rope_bits", rope_table_2d(config).view(torch.int32), persistent=False)
        self.init_weights(head_std)

    def init_weights(self, head_std: float = 0.0) -> None:
        """LlamaGen's init: N(0, 0.02) for every Linear and Embedding, then the output head N(0, head_std).

        The reference zeroes the head (head_std 0), so a fresh model predicts the uniform distribution. Timing
        runs on random weights (scripts/gpu_check.py, published_pipeline.py) build GPT(config, head_std=0.02) so
        that the logits spread and top-k / top-p see a realistic law.
        """
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if head_std:
            nn.init.normal_(self.output.weight, mean=0.0, std=head_std)
        else:
            nn.init.zeros_(self.output.weight)      # draws nothing: what the pipeline's teachers are seeded with

    @property
    def rope(self) -> Tensor:
        return self.rope_bits.view(torch.float32)  # (L, D/2, 2)

    def embed_class(self, labels: Tensor) -> Tensor:
        return self.cls_embedding.embedding_table(labels)[:, None, :]  # (B, 1, C)

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        return self.tok_embeddings(tokens)  # (B, T, C)

    def backbone(self, h: Tensor, start: int = 0) -> Tensor:
        """All layers and the final norm over sequence positions start..start+S-1, causally, without a cache."""
        S = h.shape[1]
        if start < 0 or start + S > self.config.max_seq_len:
            raise ValueError(f"positions {start}..{start + S - 1} outside 0..{self.config.max_seq_len - 1}")
        rope = self.rope[start : start + S]  # (S, D/2, 2)
        for layer in self.layers:
            h = layer(h, rope)  # (B, S, C)
        return self.norm(h)  # (B, S, C)

    def backbone_step(self, h: Tensor, pos: Tensor, cache: KVCache, num_visible: int | None = None) -> Tensor:
        """One position (0-dim tensor pos), or S consecutive ones (pos (S,)), through all layers, reading and
        extending the static cache: h (B, S, C) -> (B, S, C). Several positions at once are a prefill: the
        tokens a sampler is given rather than chooses (hybrid DD sampling) fill the cache in one pass.

        Only tensor ops on pos (no .item(), no shapes that depend on it), so the step can be captured in a
        CUDA graph and replayed with pos updated in place. A caller that knows the step as a Python int may
        pass num_visible = last pos + 1: attention then reads only the slots written so far (half the cache
        on average; each step of an unrolled loop still has a static shape).
        """
        idx = pos.reshape(-1)  # (S,)
        rope = self.rope.index_select(0, idx)  # (S, D/2, 2)
        num_slots = self.config.max_seq_len if num_visible is None else num_visible
        written = torch.arange(num_slots, device=pos.device)[None] <= idx[:, None]  # (S, slots): causal
        bias = visibility_bias(written, cache.k.dtype)  # (S, slots)
        for i, layer in enumerate(self.layers):
            h = layer(h, rope, (cache.k[i], cache.v[i], idx, bias))  # (B, S, C)
        return self.norm(h)  # (B, S, C)

    def logits(self, h: Tensor) -> Tensor:
        return self.output(h).float()  # (B, S, V)

    def forward(self, labels: Tensor, tokens: Tensor) -> Tensor:
        """Teacher forcing: logits[:, j] is the prediction of tokens[:, j] given the label and tokens[:, :j]."""
        n_cls = self.config.cls_token_num
        h = torch.cat([self.embed_class(labels), self.embed_tokens(tokens[:, :-1])], dim=1)  # (B, n_cls+T-1, C)
        h = self.backbone(h)  # (B, n_cls+T-1, C)
        return self.logits(h[:, n_cls - 1 :])  # (B, T, V)


PRESETS: dict[str, GPTConfig] = {
    # Small enough to train and sample on a CPU; the embedded default.
    "llamagen-tiny": GPTConfig(dim=192, n_layer=4, n_head=6, vocab_size=256, num_classes=10, grid_size=8,
                               zero_class_rope=False),
    # Published ImageNet sizes (256px, 16x16 tokens): 110.89M, 342.91M and 774.70M parameters.
    "llamagen-b": GPTConfig(dim=768, n_layer=12, n_head=12, vocab_size=16384, num_classes=1000, grid_size=16),
    "llamagen-l": GPTConfig(dim=1024, n_layer=24, n_head=16, vocab_size=16384, num_classes=1000, grid_size=16),
    "llamagen-xl": GPTConfig(dim=1280, n_layer=36, n_head=20, vocab_size=16384, num_classes=1000, grid_size=16),
}
