"""LlamaGen's VQ image tokenizer (Sun et al., arXiv 2406.06525), written from scratch.

A convolutional VQ autoencoder in the taming-transformers / MaskGIT lineage: the encoder maps an image to a
z_channels x h x w feature map (h = H / 16 for VQ-16), a 1x1 ``quant_conv`` projects it to the small code dim
d = 8, and every latent vector is replaced by its nearest codebook entry. Latents and codes are both L2-
normalised before the search, so "nearest" means highest cosine similarity, and the quantised latent is the
unit-norm code itself. A 1x1 ``post_quant_conv`` lifts the codes back to z_channels and the decoder maps them
to pixels. Module names and shapes match the reference implementation
(https://github.com/FoundationVision/LlamaGen, tokenizer/tokenizer_image/vq_model.py) so the published
vq_ds16_c2i.pt loads with ``load_state_dict(strict=True)``.

Training-only parts of the reference (commitment / codebook / entropy losses, straight-through estimator,
dropout, the rolling code-usage record) are left out; the usage buffer ``quantize.codebook_used`` is kept
only so checkpoints load. As in the reference, the decoder output is the last conv's output (no tanh, no
clamp): images are in [-1, 1] up to the decoder's error, and callers clamp when they convert to pixels.

Dimension letters used in shape comments:
    B batch, C channels (image or feature), H/W image pixels, h/w latent grid (= H/16, W/16 for VQ-16),
    Z z_channels (encoder output / decoder input), d code dim, V codebook size, N latent vectors (B*h*w).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from dd.models.attention import attention
from dd.models.conv_blocks import Downsample, ResnetBlock, Upsample, group_norm, make_level, run_level

# Length of the reference's code-usage record (a rolling window of recent training tokens). It is fixed,
# whatever the codebook size, and the buffer is in the published state_dict, so every preset carries it.
CODEBOOK_USAGE_SLOTS = 65536


@dataclass(frozen=True)
class VQConfig:
    codebook_size: int = 16384
    codebook_embed_dim: int = 8  # d
    z_channels: int = 256
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # one entry per resolution level; encoder and decoder alike
    num_res_blocks: int = 2  # per encoder level; decoder levels have one more, as in the reference
    in_channels: int = 3  # image channels, in and out

    def __post_init__(self):
        if any(self.ch * m % 32 for m in self.ch_mult):
            raise ValueError("every level's channel count must be a multiple of 32 (GroupNorm with 32 groups)")
        if not self.ch_mult:
            raise ValueError("ch_mult needs at least one level")

    @property
    def downsample(self) -> int:
        """Pixels per token side: one halving per level but the last."""
        return 2 ** (len(self.ch_mult) - 1)


# ---- building blocks -----------------------------------------------------------------------------------


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions of a feature map; q, k, v, proj_out are 1x1 convs."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        x_norm = self.norm(x)
        q, k, v = (rearrange(conv(x_norm), "b c h w -> b 1 (h w) c") for conv in (self.q, self.k, self.v))  # (B, 1, hw, C)
        out = attention(q, k, v)  # softmax(q k^T / sqrt(C)) v, the reference's scale
        return x + self.proj_out(rearrange(out, "b 1 (h w) c -> b c h w", h=h, w=w))


def mid_blocks(channels: int) -> nn.ModuleList:
    """ResnetBlock, attention, ResnetBlock at the lowest resolution (keys mid.0, mid.1, mid.2)."""
    return nn.ModuleList([ResnetBlock(channels, channels), AttnBlock(channels), ResnetBlock(channels, channels)])


class Encoder(nn.Module):
    """conv_in; per level num_res_blocks ResnetBlocks (each followed by attention on the last, lowest-resolution
    level) and a Downsample (all but the last level); mid; GroupNorm, swish, conv_out to z_channels."""

    def __init__(self, config: VQConfig):
        super().__init__()
        ch, mult = config.ch, config.ch_mult
        self.conv_in = nn.Conv2d(config.in_channels, ch, 3, padding=1)
        self.conv_blocks = nn.ModuleList()
        c_in = ch
        for i, m in enumerate(mult):
            last = i == len(mult) - 1
            c_out = ch * m
            self.conv_blocks.append(make_level(c_in, c_out, config.num_res_blocks, AttnBlock if last else None,
                                               None if last else Downsample(c_out), blocks_name="res"))
            c_in = c_out
        self.mid = mid_blocks(c_in)
        self.norm_out = group_norm(c_in)
        self.conv_out = nn.Conv2d(c_in, config.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)  # (B, ch, H, W)
        for level in self.conv_blocks:
            h = run_level(level, h, level.res)
        for block in self.mid:
            h = block(h)  # (B, ch*mult[-1], h, w)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, Z, h, w)


class Decoder(nn.Module):
    """conv_in from z_channels; mid; levels from coarsest to finest with num_res_blocks + 1 ResnetBlocks
    (attention after each on the coarsest level) and an Upsample (all but the finest); GroupNorm, swish,
    conv_out. Unlike taming's ``up``, ``conv_blocks[0]`` is the coarsest level: stored in the order it runs."""

    def __init__(self, config: VQConfig):
        super().__init__()
        ch, mult = config.ch, config.ch_mult
        c_in = ch * mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, c_in, 3, padding=1)
        self.mid = mid_blocks(c_in)
        self.conv_blocks = nn.ModuleList()
        for i in reversed(range(len(mult))):
            c_out = ch * mult[i]
            self.conv_blocks.append(make_level(c_in, c_out, config.num_res_blocks + 1,
                                               AttnBlock if i == len(mult) - 1 else None,
                                               Upsample(c_out) if i != 0 else None, blocks_name="res"))
            c_in = c_out
        self.norm_out = group_norm(c_in)
        self.conv_out = nn.Conv2d(c_in, config.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.conv_in(z)  # (B, ch*mult[-1], h, w)
        for block in self.mid:
            h = block(h)
        for level in self.conv_blocks:
            h = run_level(level, h, level.res)  # (B, ch*mult[0], H, W) after the last level
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C, H, W)


# ---- quantiser -----------------------------------------------------------------------------------------


class VectorQuantizer(nn.Module):
    """Nearest-code lookup on the unit sphere. Called as ``model.quantize(z)``: (B, d, h, w) -> (codes, tokens)."""

    def __init__(self, config: VQConfig):
        super().__init__()
        self.embedding = nn.Embedding(config.codebook_size, config.codebook_embed_dim)
        # The reference's init (uniform(+-1/V), then normalised rows); the published weights replace it.
        with torch.no_grad():
            self.embedding.weight.uniform_(-1.0 / config.codebook_size, 1.0 / config.codebook_size)
            self.embedding.weight.copy_(F.normalize(self.embedding.weight, dim=-1))
        # Rolling record of recent training tokens, stored as float32 (the reference registers a float
        # Parameter as a buffer). Persistent because it is in the checkpoint; never read here.
        self.register_buffer("codebook_used", torch.zeros(CODEBOOK_USAGE_SLOTS))

    def codebook_vectors(self) -> Tensor:
        """The codes the decoder sees: embedding rows L2-normalised, (V, d). The stored rows need not be unit
        norm (training moves them), so every lookup normalises, as the reference's get_codebook_entry does."""
        return F.normalize(self.embedding.weight, p=2, dim=-1)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Latents z (B, d, h, w) -> (quantised latents (B, d, h, w), the unit-norm codes; tokens (B, h, w) int64).

        Both sides are normalised, then the squared L2 distance |z|^2 + |e|^2 - 2 z.e picks the code (the
        reference's expansion, in float32, so near-ties resolve alike; on the sphere it equals 2 - 2 cos).
        """
        B, _, h, w = z.shape
        flat = F.normalize(rearrange(z.float(), "b d h w -> (b h w) d"), p=2, dim=-1)  # (N, d)
        codes = self.codebook_vectors().float()  # (V, d)
        dist = torch.addmm(flat.square().sum(1, keepdim=True) + codes.square().sum(1), flat, codes.T,
                           beta=1, alpha=-2)  # (N, V)
        tokens = rearrange(dist.argmin(1), "(b h w) -> b h w", b=B, h=h, w=w)  # (B, h, w)
        return self.lookup(tokens).to(z.dtype), tokens

    def lookup(self, tokens: Tensor) -> Tensor:
        """Tokens (B, h, w) -> their unit-norm codes as a latent map (B, d, h, w)."""
        return rearrange(self.codebook_vectors()[tokens], "b h w d -> b d h w")


class VQModel(nn.Module):
    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = VectorQuantizer(config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.codebook_embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.codebook_embed_dim, config.z_channels, 1)

    def codebook_vectors(self) -> Tensor:
        """(V, d) L2-normalised codes: the token embedding the DD flow map works in."""
        return self.quantize.codebook_vectors()

    def encode_latents(self, images: Tensor) -> Tensor:
        """Images (B, C, H, W) in [-1, 1] -> pre-quantisation latents (B, d, H/16, W/16) (not yet normalised)."""
        return self.quant_conv(self.encoder(images))

    def encode(self, images: Tensor) -> Tensor:
        """Images (B, C, H, W) in [-1, 1] -> tokens (B, h, w) int64."""
        return self.quantize(self.encode_latents(images))[1]

    def decode(self, quantised: Tensor) -> Tensor:
        """Quantised latents (B, d, h, w) -> images (B, C, h*16, w*16), nominally in [-1, 1] (not clamped)."""
        return self.decoder(self.post_quant_conv(quantised))

    def decode_tokens(self, tokens: Tensor) -> Tensor:
        """Tokens (B, h, w) -> images (B, C, H, W), H = 16 h for VQ-16."""
        return self.decode(self.quantize.lookup(tokens).to(self.post_quant_conv.weight.dtype))


PRESETS: dict[str, VQConfig] = {
    # Published LlamaGen tokenizer (vq_ds16_c2i.pt): 256px images -> 16x16 tokens, 71.88M parameters.
    "vq-16": VQConfig(),
    # CPU-sized, same structure and the same 16x downsampling (5 levels): 32px images -> 2x2 tokens.
    "vq-tiny": VQConfig(codebook_size=64, codebook_embed_dim=4, z_channels=32, ch=32, ch_mult=(1, 1, 1, 1, 2),
                        num_res_blocks=1),
}
