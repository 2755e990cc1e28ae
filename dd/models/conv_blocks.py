"""Convolutional building blocks shared by the VQ autoencoders (VAR's multi-scale VQVAE, LlamaGen's VQ-16).

Both descend from taming-transformers and name these blocks alike, so their checkpoints' keys match one
implementation (norm1/conv1/norm2/conv2/nin_shortcut, downsample.conv, upsample.conv).

Dimension letters: B batch, C channels, H/W feature map size.
"""
import torch.nn.functional as F
from torch import Tensor, nn


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """x + conv2(silu(norm2(conv1(silu(norm1(x)))))), with a 1x1 conv on the skip when channels change."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


class Downsample(nn.Module):
    """Pad right/bottom by one, then a stride-2 3x3 conv without padding."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))  # (B, C, 2H, 2W)


def make_level(c_in: int, c_out: int, num_blocks: int, attention: type[nn.Module] | None,
               resample: nn.Module | None, blocks_name: str) -> nn.Module:
    """One resolution level: `num_blocks` ResnetBlocks under `blocks_name` (VAR `block`, LlamaGen `res`), an
    `attention` block after each one (or none: an empty `attn`), and the optional resampler under its own name
    (`downsample` or `upsample`), as the checkpoints lay them out. Blocks are built in the order they run."""
    level = nn.Module()
    blocks, attn = nn.ModuleList(), nn.ModuleList()
    for j in range(num_blocks):
        blocks.append(ResnetBlock(c_in if j == 0 else c_out, c_out))
        if attention is not None:
            attn.append(attention(c_out))
    setattr(level, blocks_name, blocks)
    level.attn = attn
    if resample is not None:
        setattr(level, "downsample" if isinstance(resample, Downsample) else "upsample", resample)
    return level


def run_level(level: nn.Module, h: Tensor, blocks: nn.ModuleList) -> Tensor:
    """One resolution level of an encoder or decoder: its ResnetBlocks `blocks` (each followed by the level's
    attention block where it has them, `level.attn`), then its downsample or upsample if it has one. The
    checkpoints name the ResnetBlock list differently (VAR `block`, LlamaGen `res`), so the caller passes it."""
    for i, block in enumerate(blocks):
        h = block(h)
        if len(level.attn):
            h = level.attn[i](h)
    for resample in ("downsample", "upsample"):
        if hasattr(level, resample):
            h = getattr(level, resample)(h)
    return h
