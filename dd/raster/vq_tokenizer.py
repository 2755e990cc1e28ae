"""A published VQ autoencoder behind the tokenizer interface every stage uses (the one dd/raster/tokenizer.py's
k-means PatchTokenizer has), so a downloaded LlamaGen VQ-16 slots in where the embedded default's tokenizer
sits.

The interface: `codebook` (V, d), the code vectors the flow map and the DD student work in (for VQ-16 the
L2-normalised codes its decoder reads); `num_tokens` and `codebook_size`; `encode` / `decode` between uint8
images (N, H, W, C) and raster-order tokens (N, L).

The tokenizer stage (source: download) fetches the weights and writes tokenizer.json naming them; `load`
rebuilds the model from it. Next-scale (VAR) VQVAEs are fetched and verified the same way and sit behind the
same interface in dd/next_scale/tokenizer.py (MultiScaleTokenizer), which loads them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from dd.checkpoint import load_json, load_state_dict, with_weights
from dd.models.llamagen_vq import VQModel
from dd.tokenizers import SIDECAR, build_tokenizer_model


class VQTokenizer:
    def __init__(self, model: VQModel, grid_size: int, batch_size: int = 32):
        self.model = model.eval().requires_grad_(False)
        self.grid_size = grid_size
        self.batch_size = batch_size

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str = "cpu") -> "VQTokenizer":
        folder = Path(folder)
        meta = load_json(folder / SIDECAR)
        model = with_weights(lambda: build_tokenizer_model(meta["preset"]), load_state_dict(folder / meta["weights"]))
        if not isinstance(model, VQModel):
            raise ValueError(f"{folder} holds a next-scale VQVAE ({meta['preset']}): load it with "
                             "dd.next_scale.tokenizer.MultiScaleTokenizer (dd.artifacts.load_tokenizer picks it)")
        return cls(model.to(device), meta["grid_size"])

    @property
    def codebook(self) -> Tensor:
        return self.model.codebook_vectors().detach().float().cpu()                    # (V, d)

    @property
    def codebook_size(self) -> int:
        return self.model.config.codebook_size

    @property
    def num_tokens(self) -> int:
        return self.grid_size**2

    @property
    def image_size(self) -> int:
        return self.grid_size * self.model.config.downsample

    @property
    def device(self) -> torch.device:
        return self.model.quant_conv.weight.device

    @torch.inference_mode()
    def encode(self, images: np.ndarray) -> Tensor:
        """uint8 images (N, H, W, C) -> tokens (N, L)."""
        tokens = []
        for start in range(0, len(images), self.batch_size):
            pixels = torch.from_numpy(images[start:start + self.batch_size]).to(self.device).float() / 127.5 - 1.0
            tokens.append(self.model.encode(rearrange(pixels, "n h w c -> n c h w")).flatten(1).cpu())  # (n, h*w)
        return torch.cat(tokens)

    @torch.inference_mode()
    def decode(self, tokens: Tensor) -> np.ndarray:
        """tokens (N, L) -> uint8 images (N, H, W, C)."""
        images = []
        for start in range(0, len(tokens), self.batch_size):
            grid = rearrange(tokens[start:start + self.batch_size].long().to(self.device), "n (h w) -> n h w",
                             h=self.grid_size)
            pixels = self.model.decode_tokens(grid).float().clamp(-1, 1)              # (n, C, H, W), [-1, 1]
            images.append(((rearrange(pixels, "n c h w -> n h w c") + 1) * 127.5).round().to(torch.uint8).cpu())
        return torch.cat(images).numpy()
