"""What every tokenizer shares: the file that names a VQ autoencoder's weights, building a tokenizer preset, and
the reconstruction metrics the tokenizer stage reports (on the validation split).

A tokenizer (dd/raster/tokenizer.py's k-means patches, dd/raster/vq_tokenizer.py's LlamaGen VQ-16,
dd/next_scale/tokenizer.py's VAR VQVAE) has encode, decode, codebook (V, d), num_tokens and codebook_size.
"""
from __future__ import annotations

import numpy as np
import torch

from dd.models.llamagen_vq import PRESETS as VQ_PRESETS, VQModel
from dd.models.var_vqvae import PRESETS as VAE_PRESETS, MultiScaleVQVAE

SIDECAR = "tokenizer.json"


def build_tokenizer_model(preset: str) -> VQModel | MultiScaleVQVAE:
    """A published tokenizer preset's model (LlamaGen's VQ or VAR's VQVAE), with fresh weights."""
    if preset in VQ_PRESETS:
        return VQModel(VQ_PRESETS[preset])
    if preset in VAE_PRESETS:
        return MultiScaleVQVAE(VAE_PRESETS[preset])
    raise ValueError(f"unknown tokenizer preset '{preset}'; available: {', '.join([*VQ_PRESETS, *VAE_PRESETS])}")


def tokenizer_metrics(tokenizer, images: np.ndarray, tokens: torch.Tensor | None = None) -> dict:
    """Reconstruction error and codebook usage on a held-out image set (tokens: its encoding, when already made).

    Any tokenizer with encode, decode and codebook_size will do."""
    tokens = tokenizer.encode(images) if tokens is None else tokens
    reconstructions = tokenizer.decode(tokens)
    error = (reconstructions.astype(np.float64) - images.astype(np.float64)) / 255.0
    counts = torch.bincount(tokens.flatten(), minlength=tokenizer.codebook_size).double()
    frequencies = counts / counts.sum()
    entropy = -(frequencies[frequencies > 0] * frequencies[frequencies > 0].log()).sum()
    return {
        "reconstruction_mse": float((error**2).mean()),
        "reconstruction_psnr": float(10 * np.log10(1.0 / max((error**2).mean(), 1e-12))),
        "codebook_usage": float((counts > 0).double().mean()),
        "codebook_perplexity": float(entropy.exp()),
    }
