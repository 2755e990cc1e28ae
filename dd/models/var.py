"""VAR class-conditional next-scale transformer (Tian et al., arXiv 2404.02905), written from scratch.

An image is a pyramid of K token maps of growing side p_0 < p_1 < ... (patch_nums); the transformer predicts
all p_k * p_k tokens of scale k in parallel, seeing every token of the coarser scales (a block-causal mask).
The input of scale 0 is the "start of sequence" token, the class embedding plus a learned pos_start; the
input of scale k >= 1 is a continuous (p_k, p_k, Cvae) map the VQVAE computes from the tokens already chosen
(the area-downsampled running reconstruction f_hat), projected by word_embed. Every block is conditioned on
the class embedding through AdaLN. Module names and shapes match the reference implementation
(https://github.com/FoundationVision/VAR, models/var.py and models/basic_var.py, built by models/__init__.py
build_vae_var with shared_aln=False, attn_l2_norm=True) so var_d16/d20/d24/d30.pth load with
``load_state_dict(strict=True)``. The VQVAE is not part of this module (upstream keeps it out of the state
dict and out of the parameter count as well).

Training-time regularisers of the reference (drop path, label dropout with rate 0.1) are left out: the caller
chooses labels, and ``num_classes`` is the null class for classifier-free guidance.

Dimension letters used in shape comments:
    B batch, L tokens of all scales (= num_tokens), S tokens of the scales in hand, P tokens of one scale,
    C channels (model dim), H heads, D head dim, F feed-forward hidden, V vocabulary, E code dim (Cvae),
    N layers.
"""

import math
from dataclasses import dataclass
from itertools import accumulate

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from dd.models.attention import attention, visibility_bias


@dataclass(frozen=True)
class VARConfig:
    depth: int
    vocab_size: int = 4096
    code_dim: int = 32  # Cvae: channels of the VQVAE latent
    num_classes: int = 1000  # labels are 0..num_classes-1; index num_classes is the null class
    patch_nums: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6

    @property
    def dim(self) -> int:
        return 64 * self.depth  # build_vae_var: width = depth * 64

    @property
    def n_head(self) -> int:
        return self.depth  # build_vae_var: heads = depth

    @property
    def n_layer(self) -> int:
        return self.depth

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head  # always 64

    @property
    def ffn_dim(self) -> int:
        return round(self.dim * self.mlp_ratio)

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    @property
    def num_tokens(self) -> int:
        return sum(p * p for p in self.patch_nums)

    @property
    def first_len(self) -> int:
        return self.patch_nums[0] ** 2  # tokens of scale 0, all fed the start token

    @property
    def scale_slices(self) -> list[tuple[int, int]]:
        """(start, stop) of every scale in the flattened token sequence."""
        stops = list(accumulate(p * p for p in self.patch_nums))
        return [(stop - p * p, stop) for p, stop in zip(self.patch_nums, stops)]

    def scale_of_stop(self, num_tokens: int) -> int:
        """The scale that the first num_tokens tokens end with; an error unless they end at a scale boundary."""
        stops = [stop for _, stop in self.scale_slices]
        if num_tokens not in stops:
            raise ValueError(f"{num_tokens} tokens do not end at a scale boundary (scales end at {stops})")
        return stops.index(num_tokens)


def cfg_ramp(cfg: float, scale_index: int, num_scales: int) -> float:
    """Guidance weight t of scale k in the reference sampler: t = cfg * k / (K - 1), rising from 0 to cfg.

    Logits are then (1 + t) * cond - t * uncond (VAR autoregressive_infer_cfg), so scale 0 is unguided.
    """
    return cfg * scale_index / (num_scales - 1)


def layer_norm(x: Tensor, eps: float) -> Tensor:
    """LayerNorm without affine weights (the reference's ln_wo_grad); AdaLN supplies scale and shift."""
    return F.layer_norm(x, x.shape[-1:], eps=eps)


LayerCache = tuple[Tensor, Tensor, int, int]  # (k (B, H, L, D), v (B, H, L, D), start, stop) of one layer


@dataclass
class VARKVCache:
    """Preallocated keys and values for all layers, indexed by absolute token position (all scales).

    A step at scale k writes its slice and reads positions 0..stop_k-1; the shapes of a step depend on k only,
    so each scale's step is capturable in a CUDA graph. Plain data owned by the caller, not module state.
    """

    k: Tensor  # (N, B, H, L, D)
    v: Tensor  # (N, B, H, L, D)

    @classmethod
    def allocate(
        cls, config: VARConfig, batch_size: int, dtype: torch.dtype, device: torch.device | str
    ) -> "VARKVCache":
        shape = (config.n_layer, batch_size, config.n_head, config.num_tokens, config.head_dim)
        return cls(k=torch.zeros(shape, dtype=dtype, device=device), v=torch.zeros(shape, dtype=dtype, device=device))


class SelfAttention(nn.Module):
    """Attention on L2-normalised q and k: logits are cos(q, k) times a learned per-head temperature."""

    def __init__(self, config: VARConfig):
        super().__init__()
        C, H = config.dim, config.n_head
        self.n_head = H
        # Temperature exp(s), s initialised to log 4 and clamped at log 100 (basic_var.py SelfAttention).
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, H, 1, 1), math.log(4.0)))
        self.max_scale_mul = math.log(100.0)
        self.mat_qkv = nn.Linear(C, 3 * C, bias=False)
        # q and v get learned biases, k a fixed zero one (a persistent buffer, so it is in the checkpoints).
        self.q_bias = nn.Parameter(torch.zeros(C))
        self.v_bias = nn.Parameter(torch.zeros(C))
        self.register_buffer("zero_k_bias", torch.zeros(C))
        self.proj = nn.Linear(C, C)

    def forward(self, x: Tensor, attn_bias: Tensor | None, cache: LayerCache | None = None) -> Tensor:
        """x (B, S, C) attends under the additive attn_bias (S, S), or (cache given) to cached positions.

        cache = (k_layer (B, H, L, D), v_layer (B, H, L, D), start, stop): x holds positions start..stop-1,
        whose k/v are written there; the queries then see positions 0..stop-1 (coarser scales and their own).
        """
        bias = torch.cat([self.q_bias, self.zero_k_bias, self.v_bias])  # (3C,)
        qkv = F.linear(x, self.mat_qkv.weight, bias)  # (B, S, 3C)
        q, k, v = rearrange(qkv, "b s (three h d) -> three b h s d", three=3, h=self.n_head)  # (B, H, S, D)
        scale_mul = self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()  # (1, H, 1, 1)
        q = F.normalize(q, dim=-1) * scale_mul
        k = F.normalize(k, dim=-1)
        if cache is not None:
            k_all, v_all, start, stop = cache
            k_all[:, :, start:stop] = k
            v_all[:, :, start:stop] = v
            k, v = k_all[:, :, :stop], v_all[:, :, :stop]  # (B, H, stop, D)
        # Softmax scale 1: the temperature is already in q (upstream self.scale = 1 when attn_l2_norm).
        mask = None if attn_bias is None else attn_bias.to(q.dtype)
        out = attention(q, k, v, bias=mask, scale=1.0)  # (B, H, S, D)
        return self.proj(rearrange(out, "b h s d -> b s (h d)"))  # (B, S, C)


class FFN(nn.Module):
    def __init__(self, config: VARConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.dim, config.ffn_dim)
        self.fc2 = nn.Linear(config.ffn_dim, config.dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))  # (B, S, C)


class AdaLNSelfAttn(nn.Module):
    """Pre-norm block whose LayerNorm scale/shift and residual gains come from the class embedding."""

    def __init__(self, config: VARConfig):
        super().__init__()
        self.eps = config.norm_eps
        self.attn = SelfAttention(config)
        self.ffn = FFN(config)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(config.dim, 6 * config.dim))

    def forward(self, x: Tensor, cond: Tensor, attn_bias: Tensor | None, cache: LayerCache | None = None) -> Tensor:
        # Output channel order of ada_lin (basic_var.py AdaLNSelfAttn.forward): gamma1, gamma2, scale1, scale2,
        # shift1, shift2, each C wide.
        ada = rearrange(self.ada_lin(cond), "b (six c) -> six b 1 c", six=6)  # 6 x (B, 1, C)
        gamma1, gamma2, scale1, scale2, shift1, shift2 = ada
        x = x + self.attn(layer_norm(x, self.eps) * (1 + scale1) + shift1, attn_bias, cache) * gamma1
        return x + self.ffn(layer_norm(x, self.eps) * (1 + scale2) + shift2) * gamma2  # (B, S, C)


class AdaLNBeforeHead(nn.Module):
    def __init__(self, config: VARConfig):
        super().__init__()
        self.eps = config.norm_eps
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(config.dim, 2 * config.dim))

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        scale, shift = rearrange(self.ada_lin(cond), "b (two c) -> two b 1 c", two=2)  # 2 x (B, 1, C)
        return layer_norm(x, self.eps) * (1 + scale) + shift  # (B, S, C)


class VAR(nn.Module):
    def __init__(self, config: VARConfig):
        super().__init__()
        self.config = config
        C, L = config.dim, config.num_tokens
        self.word_embed = nn.Linear(config.code_dim, C)
        self.class_emb = nn.Embedding(config.num_classes + 1, C)
        self.pos_start = nn.Parameter(torch.empty(1, config.first_len, C))
        self.pos_1LC = nn.Parameter(torch.empty(1, L, C))
        self.lvl_embed = nn.Embedding(config.num_scales, C)
        self.blocks = nn.ModuleList(AdaLNSelfAttn(config) for _ in range(config.depth))
        self.head_nm = AdaLNBeforeHead(config)
        self.head = nn.Linear(C, config.vocab_size)
        # Persistent buffers: both are in the published checkpoints. lvl_1L[0, i] is the scale of token i; a token
        # sees the tokens of its own and coarser scales (bias 0) and nothing finer (bias -inf).
        lvl = torch.cat([torch.full((p * p,), k) for k, p in enumerate(config.patch_nums)])  # (L,), int64
        self.register_buffer("lvl_1L", lvl[None].clone())
        bias = visibility_bias(lvl[:, None] >= lvl[None, :])  # (L, L): query row, key column
        self.register_buffer("attn_bias_for_masking", bias[None, None].contiguous())
        self.init_weights()

    @torch.no_grad()
    def init_weights(self, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02) -> None:
        """The reference init (VAR.__init__ + init_weights with build_vae_var's defaults, init_std < 0 = auto).

        Truncated normal of std sqrt(1/(3C)) for every Linear, Embedding and positional table, zero biases;
        proj and fc2 divided by sqrt(2 depth); the AdaLN linears scaled by 0.5 (the gamma rows by 1e-5, so each
        block starts near the identity); the head scaled by 0.02, making the initial logits nearly uniform.
        """
        std = (1 / self.config.dim / 3) ** 0.5
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.trunc_normal_(module.weight, std=std)
        nn.init.trunc_normal_(self.pos_start, std=std)
        nn.init.trunc_normal_(self.pos_1LC, std=std)
        self.head.weight.mul_(init_head)
        self.head_nm.ada_lin[-1].weight.mul_(init_adaln)
        C = self.config.dim
        for block in self.blocks:
            block.attn.scale_mul_1H11.fill_(math.log(4.0))
            nn.init.zeros_(block.attn.q_bias)
            nn.init.zeros_(block.attn.v_bias)
            block.attn.proj.weight.div_(math.sqrt(2 * self.config.depth))
            block.ffn.fc2.weight.div_(math.sqrt(2 * self.config.depth))
            block.ada_lin[-1].weight[2 * C :].mul_(init_adaln)
            block.ada_lin[-1].weight[: 2 * C].mul_(init_adaln_gamma)

    def condition(self, labels: Tensor) -> Tensor:
        """The AdaLN condition: the class embedding (null class = num_classes)."""
        return self.class_emb(labels)  # (B, C)

    def sos(self, labels: Tensor) -> Tensor:
        """Input of scale 0 before the level/position terms: class embedding + pos_start."""
        B, first = labels.shape[0], self.config.first_len
        return self.class_emb(labels)[:, None, :].expand(B, first, -1) + self.pos_start  # (B, first_len, C)

    def embed_scale_inputs(self, scale_inputs: Tensor) -> Tensor:
        """Continuous next-scale inputs (B, P, E) of one or more consecutive scales to model space."""
        return self.word_embed(scale_inputs)  # (B, P, C)

    def level_position(self, start: int, stop: int) -> Tensor:
        """Level embedding of each token's scale plus its absolute position embedding, for tokens start..stop-1."""
        return self.lvl_embed(self.lvl_1L[:, start:stop]) + self.pos_1LC[:, start:stop]  # (1, P, C)

    def logits(self, h: Tensor, cond: Tensor) -> Tensor:
        return self.head(self.head_nm(h, cond)).float()  # (B, S, V)

    def forward(self, labels: Tensor, scale_inputs: Tensor) -> Tensor:
        """Teacher forcing over the first scales (all of them by default).

        scale_inputs (B, S - first_len, E) are the next-scale inputs of scales 1..k, with S the number of tokens of
        scales 0..k; logits[:, i] (B, S, V) predicts token i from the label and the inputs of its own and coarser
        scales.
        """
        h, cond = self._over_scales(labels, scale_inputs)  # (B, S, C), (B, C)
        return self.logits(h, cond)  # (B, S, V)

    def prefill(self, labels: Tensor, scale_inputs: Tensor, cache: VARKVCache) -> Tensor:
        """Scales 0..k in one pass that writes the cache as stepping them one by one would: the logits (B, P, V)
        of scale k, whose step it replaces. scale_inputs (B, S - first_len, E) as in forward.

        Where a sampler is given the coarser scales rather than choosing them (hybrid DD sampling), this is its
        first step; step() continues from scale k + 1.
        """
        h, cond = self._over_scales(labels, scale_inputs, cache)  # (B, S, C)
        last_start = self.config.scale_slices[self.config.scale_of_stop(h.shape[1])][0]
        return self.logits(h[:, last_start:], cond)  # (B, P, V)

    def _over_scales(self, labels: Tensor, scale_inputs: Tensor, cache: VARKVCache | None = None) -> tuple[Tensor, Tensor]:
        """Hidden states (B, S, C) of every token of scales 0..k under the block-causal mask, and the condition."""
        S = self.config.first_len + scale_inputs.shape[1]
        self.config.scale_of_stop(S)  # S must end a scale
        cond = self.condition(labels)  # (B, C)
        h = torch.cat([self.sos(labels), self.embed_scale_inputs(scale_inputs)], dim=1)  # (B, S, C)
        h = h + self.level_position(0, S)
        attn_bias = self.attn_bias_for_masking[0, 0, :S, :S]  # (S, S)
        for i, block in enumerate(self.blocks):
            h = block(h, cond, attn_bias, None if cache is None else (cache.k[i], cache.v[i], 0, S))  # (B, S, C)
        return h, cond

    def step(self, scale_index: int, labels: Tensor, scale_input: Tensor | None, cache: VARKVCache) -> Tensor:
        """One scale with the KV cache: logits (B, P, V) of scale scale_index, P = patch_nums[scale_index]**2.

        scale_input (B, P, E) is that scale's next-scale input (ignored, may be None, at scale 0, whose input is
        the start token). Scales must be stepped in order 0, 1, ... so the cache holds the coarser scales. Only
        the Python int scale_index selects shapes; nothing synchronises with the device.
        """
        start, stop = self.config.scale_slices[scale_index]
        h = self.sos(labels) if scale_index == 0 else self.embed_scale_inputs(scale_input)  # (B, P, C)
        h = h + self.level_position(start, stop)
        cond = self.condition(labels)  # (B, C)
        for i, block in enumerate(self.blocks):
            h = block(h, cond, None, (cache.k[i], cache.v[i], start, stop))  # (B, P, C)
        return self.logits(h, cond)  # (B, P, V)


PRESETS: dict[str, VARConfig] = {
    # Small enough to train and sample on a CPU; the embedded default: 130 tokens ending in an 8x8 map.
    "var-tiny": VARConfig(depth=2, vocab_size=256, code_dim=8, num_classes=10, patch_nums=(1, 2, 3, 4, 6, 8)),
    # Published ImageNet 256px sizes (16x16 final map, 680 tokens): 310.28M, 600.92M, 1033.40M, 2010.02M
    # parameters (nn.Parameters only, as upstream train.py counts them).
    "var-d16": VARConfig(depth=16),
    "var-d20": VARConfig(depth=20),
    "var-d24": VARConfig(depth=24),
    "var-d30": VARConfig(depth=30),
}
