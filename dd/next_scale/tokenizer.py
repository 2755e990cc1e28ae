"""VAR's multi-scale VQVAE as a tokenizer: the interface every stage uses, its training loss and its metrics.

`MultiScaleTokenizer` puts a MultiScaleVQVAE (dd/models/var_vqvae.py) behind the interface of the k-means
PatchTokenizer (dd/raster/tokenizer.py) and the published LlamaGen VQ (dd/raster/vq_tokenizer.py): `encode` / `decode`
between uint8 images (N, H, W, C) and tokens (N, L), `codebook` (V, E), `num_tokens`, `codebook_size`. Tokens
are the K scales' token maps flattened coarse to fine, raster order within a scale (VARConfig.scale_slices),
the layout the VAR teacher, the pairs and the student share. `decode` also takes the tokens of the first k
scales only: it decodes the partial reconstruction f_hat they sum to, which is what a VAR teacher stopped
early (the skip baselines) has.

`codebook`, the code vectors the flow map and the DD student work in, are the VQVAE's codes centred and scaled by
ONE factor to mean variance 1 per axis, the scale of the N(0, I) noise, as the k-means tokenizer does: one
factor keeps the geometry (distances only scale), and the flow map's basins then form where its solver has
steps. A trained VQVAE's codes have no fixed scale (the decoder absorbs any); the one trained here ends near
rms 0.2, where 20 RK4 steps matched a 400-step solve on 99.1% of tokens against 100% once normalised. (The
paper feeds VAR's raw codes; the normalisation moves which noise maps to which code, never the token's law.)
The VQVAE keeps its own codes for everything it computes (f_hat, the teacher's inputs, decoding).

The embedded `var-tiny` teacher's VQVAE (preset vae-tiny) is trained here on the train split with VAR's
VQVAE recipe minus its perceptual and GAN terms: L2 reconstruction + the quantiser's commitment and codebook
losses with the straight-through estimator (MultiScaleVQVAE.quantize_with_loss). The tokenizer stage saves it
as tokenizer.pt + tokenizer.json (preset, weights), the layout in which a downloaded published VQVAE sits, so
both load through `MultiScaleTokenizer.load`.

Dimensions: N images, H/W pixels, C channels, L tokens of all scales, V codebook size, E code dim, K scales.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from dd.checkpoint import file_sha256, load_json, load_state_dict, save_json, save_weights, with_weights
from dd.config import Config, TrainConfig
from dd.device import compute_device
from dd.layout import Layout, load_images
from dd.models.var_vqvae import PRESETS, MultiScaleVQVAE, VQVAEConfig
from dd.provenance import record, stage_entry
from dd.teachers import preset_config
from dd.tokenizers import SIDECAR, tokenizer_metrics
from dd.training import train


def to_pixels(images: np.ndarray | Tensor) -> Tensor:
    """uint8 images (N, H, W, C) -> float (N, C, H, W) in [-1, 1], the VQVAE's input range."""
    images = torch.as_tensor(images)
    return rearrange(images.float() / 127.5 - 1.0, "n h w c -> n c h w")


def to_uint8(pixels: Tensor) -> np.ndarray:
    """float (N, C, H, W) in [-1, 1] -> uint8 images (N, H, W, C)."""
    images = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(images, "n c h w -> n h w c").cpu().numpy()


@torch.no_grad()
def initialise_codebook(model: MultiScaleVQVAE, images: np.ndarray | Tensor, generator: torch.Generator) -> None:
    """Set the V codes to latent vectors of the (untrained) encoder on uint8 images (N, H, W, C), drawn at random.

    Why: from the default N(0, 1) init most codes lie far outside the latents (rms ~0.2 here), are never the
    nearest to any, so get no codebook gradient and stay dead: after 200 steps on Fashion-MNIST 13% of the codes
    were in use (reconstruction MSE 0.0106); started from latent vectors, 89% (MSE 0.0085).
    """
    f = model.encode(to_pixels(images).to(model.codebook.device))                  # (N, E, h, w)
    cells = rearrange(f, "n e h w -> (n h w) e")
    if len(cells) < model.config.vocab_size:
        raise ValueError(f"{len(cells)} latent vectors cannot seed {model.config.vocab_size} codes: pass more images")
    model.codebook.copy_(cells[torch.randperm(len(cells), generator=generator)[:model.config.vocab_size]])


def vqvae_loss(model: MultiScaleVQVAE, images: Tensor, beta: float) -> Tensor:
    """L2 reconstruction + the quantiser's commitment (weight beta) and codebook losses; images uint8 (B, H, W, C)."""
    pixels = to_pixels(images).to(next(model.parameters()).device)      # (B, C, H, W)
    reconstruction, vq_loss = model(pixels, beta)                      # (B, C, H, W), ()
    return F.mse_loss(reconstruction, pixels) + vq_loss


def train_vqvae(config: VQVAEConfig, images: Tensor, train_config: TrainConfig, commitment: float, seed: int,
                run_dir: Path, log_path: Path, provenance: dict, description: str = "vqvae", progress: bool = True,
                device: torch.device | str = "cpu") -> MultiScaleVQVAE:
    """A MultiScaleVQVAE trained on uint8 images (N, H, W, C) with vqvae_loss: its weights drawn from `seed`, its
    codes seeded from the latents of 64 images drawn with `seed`, then the training loop (resumable in run_dir;
    dd/training.py). Returns the training loop's EMA copy, which with ema_decay 0 (the vae-tiny params) holds the
    final weights exactly."""
    torch.manual_seed(seed)
    model = MultiScaleVQVAE(config).to(device)
    generator = torch.Generator().manual_seed(seed)
    initialise_codebook(model, images[torch.randperm(len(images), generator=generator)[:64]], generator)
    return train(model, lambda model, batch: vqvae_loss(model, images[batch.local(batch.indices)], commitment),
                 len(images), train_config, run_dir, log_path, provenance, description, progress)


class MultiScaleTokenizer:
    def __init__(self, model: MultiScaleVQVAE, batch_size: int = 250):
        self.model = model.eval().requires_grad_(False)
        self.batch_size = batch_size

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str = "cpu") -> "MultiScaleTokenizer":
        """A tokenizer stage's VQVAE (trained here or downloaded): tokenizer.json names the preset and weights."""
        folder = Path(folder)
        meta = load_json(folder / SIDECAR)
        if meta["preset"] not in PRESETS:
            raise ValueError(f"{folder / SIDECAR} names {meta['preset']!r}, not a multi-scale VQVAE preset "
                             f"({', '.join(PRESETS)})")
        model = with_weights(lambda: MultiScaleVQVAE(PRESETS[meta["preset"]]), load_state_dict(folder / meta["weights"]))
        return cls(model.to(device))

    @property
    def codebook(self) -> Tensor:
        """Code vectors for the flow map and the student (V, E): the codes centred, one factor to unit variance."""
        shift, factor = self.normalisation()
        return ((self.model.codebook.detach().double().cpu() - shift) / factor).float()

    def normalisation(self) -> tuple[Tensor, Tensor]:
        """(shift (E,), factor ()) in float64 on the CPU: codebook = (VQVAE codes - shift) / factor."""
        codes = self.model.codebook.detach().double().cpu()                 # (V, E)
        shift = codes.mean(0)
        return shift, (codes - shift).var(0).mean().sqrt()

    @property
    def codebook_size(self) -> int:
        return self.model.config.vocab_size

    @property
    def num_tokens(self) -> int:
        return self.model.config.num_tokens

    @property
    def image_size(self) -> int:
        return self.model.config.image_size

    @property
    def device(self) -> torch.device:
        return self.model.quant_conv.weight.device

    @property
    def scale_stops(self) -> list[int]:
        """Token count of the first k scales, k = 1..K: the lengths `decode` accepts."""
        return list(np.cumsum(self.model.config.tokens_per_scale))

    def split(self, tokens: Tensor) -> list[Tensor]:
        """Tokens (N, L_k) of the first k scales -> k LongTensors (N, pn*pn), coarse to fine."""
        if tokens.shape[1] not in self.scale_stops:
            raise ValueError(f"{tokens.shape[1]} tokens do not end at a scale boundary {self.scale_stops}")
        count = self.scale_stops.index(tokens.shape[1]) + 1
        return list(tokens.long().split(list(self.model.config.tokens_per_scale[:count]), dim=1))

    def next_scale_inputs(self, tokens: Tensor) -> Tensor:
        """Teacher forcing: tokens (N, L) -> the VAR teacher's continuous inputs of scales 1..K-1 (N, L - pn_0^2, E)."""
        with torch.no_grad():
            return self.model.next_scale_inputs(self.split(tokens.to(self.device)))

    @torch.no_grad()      # not inference_mode: the tokens are training targets, which autograd must be able to save
    def encode(self, images: np.ndarray) -> Tensor:
        """uint8 images (N, H, W, C) -> tokens (N, L) int64."""
        tokens = []
        for start in range(0, len(images), self.batch_size):
            f = self.model.encode(to_pixels(images[start:start + self.batch_size]).to(self.device))  # (n, E, h, w)
            tokens.append(torch.cat(self.model.tokenize(f), dim=1).cpu())                             # (n, L)
        return torch.cat(tokens)

    @torch.no_grad()
    def decode(self, tokens: Tensor) -> np.ndarray:
        """Tokens (N, L_k) of the first k scales (all K: the image) -> uint8 images (N, H, W, C), decoded from
        the partial reconstruction f_hat that those scales sum to."""
        images = []
        for start in range(0, len(tokens), self.batch_size):
            f_hat = None
            for k, scale_tokens in enumerate(self.split(tokens[start:start + self.batch_size].to(self.device))):
                f_hat, _ = self.model.fhat_step(k, f_hat, scale_tokens)                    # (n, E, h, w)
            images.append(to_uint8(self.model.decode_fhat(f_hat)))
        return np.concatenate(images)


def scale_usage(tokenizer: MultiScaleTokenizer, tokens: Tensor) -> dict:
    """Codebook usage (fraction of the V codes used) and perplexity of each scale's tokens, coarse to fine."""
    usage, perplexity = [], []
    for scale_tokens in tokenizer.split(tokens):
        counts = torch.bincount(scale_tokens.flatten(), minlength=tokenizer.codebook_size).double()
        frequencies = counts[counts > 0] / counts.sum()
        usage.append(float((counts > 0).double().mean()))
        perplexity.append(float((-(frequencies * frequencies.log()).sum()).exp()))
    return {"codebook_usage_per_scale": usage, "codebook_perplexity_per_scale": perplexity}


# ---------------------------------------------------------------------------------------------------------
# The family interface (dd/families/__init__.py)
# ---------------------------------------------------------------------------------------------------------

def checked_vqvae_config(preset: str, teacher: str, image_shape: tuple[int, ...]) -> VQVAEConfig:
    """vqvae.preset's architecture, if its codes and scales are the teacher's and it takes the data's images."""
    if preset not in PRESETS:
        raise ValueError(f"vqvae.preset {preset!r} is not a VQVAE preset: {', '.join(PRESETS)}")
    vqvae_config = PRESETS[preset]
    made, read = [(c.vocab_size, c.code_dim, c.patch_nums) for c in (vqvae_config, preset_config(teacher))]
    if made != read:
        raise ValueError(f"vqvae.preset {preset} makes (codes, code dim, scales) {made} but teacher {teacher} "
                         f"reads {read}: name the VQVAE preset built for it")
    if image_shape != (vqvae_config.image_size, vqvae_config.image_size, vqvae_config.in_channels):
        raise ValueError(f"vqvae.preset {preset} takes {vqvae_config.image_size} px images with "
                         f"{vqvae_config.in_channels} channels; the data stage made {image_shape}")
    return vqvae_config


def make_tokenizer(config: Config, layout: Layout, progress: bool = True) -> dict:
    """VAR's multi-scale VQVAE (vqvae.*) trained on the train split (rerun to resume), saved as a published one
    is (tokenizer.json); metrics on the validation split."""
    train_set, validation = load_images(layout, "train"), load_images(layout, "validation")
    preset = config.vqvae.preset
    vqvae_config = checked_vqvae_config(preset, layout.teacher, train_set.images.shape[1:])
    (layout.tokenizer_dir / SIDECAR).unlink(missing_ok=True)          # until the new weights are saved
    # A checkpoint is resumed only under the same params, preset architecture, training images and code.
    provenance = record(stage_entry("tokenizer"), config.vqvae, config.data, layout.teacher, vqvae_config,
                        file_sha256(layout.dataset_dir / "train.npz"))
    trained = train_vqvae(vqvae_config, torch.from_numpy(train_set.images), config.vqvae.train,
                          config.vqvae.commitment, config.vqvae.seed, layout.tokenizer_dir,
                          layout.tokenizer_dir / "train_log.json", provenance, f"tokenizer {layout.teacher}",
                          progress, compute_device())
    tokenizer = MultiScaleTokenizer(trained)
    tokens = tokenizer.encode(validation.images)
    metrics = {**tokenizer_metrics(tokenizer, validation.images, tokens), **scale_usage(tokenizer, tokens)}
    # tokenizer.json, written last beside the weights, is what load_tokenizer looks for (as for a published VQ).
    save_weights(layout.tokenizer_dir / "tokenizer.pt", trained.state_dict(),
                 {"source": "train", "preset": preset, "weights": "tokenizer.pt", "grid_size": None,
                  "train_steps": config.vqvae.train.train_steps, **metrics})
    save_json(layout.metrics_dir / "tokenizer.json", metrics)
    return metrics
