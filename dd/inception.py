"""Inception metrics for the published-checkpoint path: FID against reference statistics the user names, and
Inception Score, in the features of the network every ImageNet FID is quoted in.

Extractor: the TorchScript Inception-v3 `inception-2015-12-05.pt` (NVIDIA's port of the TensorFlow FID
network) that clean-fid uses, fed the way clean-fid's "clean" mode feeds it: each image resized to 299x299
with PIL bicubic on float pixels (clean-fid's own resizer), scaled to [-1, 1], and the 2048-d pool features
read from the network's `layers`. Inception Score uses the same pass: softmax of pool features times the
network's output weights without its bias, as the original TensorFlow Inception Score does.

The weights come from a path the user names (params `evaluate.inception_weights`) or from clean-fid's cache
(<system temp>/inception-2015-12-05.pt, where clean-fid itself looks); on a cache miss they are downloaded
with dd.download (resumable, verified, atomic), and offline that is a clear error saying where to put the file.

Reference statistics: an .npz holding `mu` (D,) and `sigma` (D, D), such as the ADM evaluator's ImageNet-256
batch VIRTUAL_imagenet256_labeled.npz, or a folder of reference images whose statistics are computed here.
Every result records its extractor, its reference and its sample count: FIDs from other tools or other
references are not comparable.

Dimensions: N images, H/W pixels, C channels, D feature dim (2048), K Inception classes (1008).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cleanfid.fid import frechet_distance as cleanfid_frechet_distance
from cleanfid.resize import build_resizer
from PIL import Image

from dd.download import download

INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
CLEANFID_CACHE = Path(tempfile.gettempdir()) / "inception-2015-12-05.pt"
EXTRACTOR = "Inception-v3 TorchScript (inception-2015-12-05.pt), 2048-d pool features, clean-fid 'clean' resize"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
IS_SPLITS = 10          # Inception Score: mean and std over 10 equal parts of the samples, as the original does


def load_inception(weights: str | Path | None = None, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The FID Inception from `weights`, or from clean-fid's cache (downloaded there on a miss)."""
    if weights:
        path = Path(weights)
        if not path.exists():
            raise FileNotFoundError(f"evaluate.inception_weights: {path} not found; point it at "
                                    f"inception-2015-12-05.pt ({INCEPTION_URL}) or leave it empty to use clean-fid's "
                                    f"cache {CLEANFID_CACHE}")
    else:
        path = download(INCEPTION_URL, CLEANFID_CACHE)
    return torch.jit.load(str(path), map_location=device).eval()


@torch.inference_mode()
def inception_outputs(model: torch.jit.ScriptModule, images: np.ndarray, batch_size: int = 50,
                      device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, H, W, C) with C in {1, 3} -> pool features (N, D) and class probabilities (N, K), float64."""
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, H, W, 1 or 3), got {images.dtype} {images.shape}")
    resize = build_resizer("clean")
    features, probabilities = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        if batch.shape[-1] == 1:
            batch = np.repeat(batch, 3, axis=-1)                                       # grey -> RGB
        resized = np.stack([resize(image) for image in batch])                         # (b, 299, 299, 3) float32
        x = torch.from_numpy(resized).permute(0, 3, 1, 2).to(device)                  # (b, 3, 299, 299) in [0, 255]
        pool = model.layers((x - 128) / 128).reshape(len(batch), -1)                  # (b, D)
        logits = pool @ model.output.weight.T                                          # (b, K), no bias
        features.append(pool.double().cpu().numpy())
        probabilities.append(logits.double().softmax(-1).cpu().numpy())
    return np.concatenate(features), np.concatenate(probabilities)


def inception_score(probabilities: np.ndarray, splits: int = IS_SPLITS) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) over `splits` equal parts of the samples: (mean, std) over the parts."""
    scores = []
    for part in np.array_split(probabilities, splits):
        marginal = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(part + 1e-12) - np.log(marginal + 1e-12))).sum(axis=1)
        scores.append(float(np.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray]) -> float:
    """clean-fid's Frechet distance between two (mu, sigma) Gaussian fits."""
    return float(cleanfid_frechet_distance(*first, *second))


@dataclass(frozen=True)
class Reference:
    """What FID and precision/recall are measured against. `features` exist only for a folder of images:
    an .npz of statistics cannot give the nearest-neighbour balls precision/recall need."""

    path: str
    mu: np.ndarray                       # (D,)
    sigma: np.ndarray                    # (D, D)
    features: np.ndarray | None = None   # (N, D)

    @property
    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        return self.mu, self.sigma


def load_reference(reference: str | Path, model: torch.jit.ScriptModule | None = None,
                   device: str | torch.device = "cpu") -> Reference:
    """An .npz with `mu` and `sigma`, or a folder of images passed through `model` (needed then)."""
    path = Path(reference)
    if path.is_file() and path.suffix == ".npz":
        with np.load(path) as data:
            missing = {"mu", "sigma"} - set(data.files)
            if missing:
                raise ValueError(f"{path} lacks {sorted(missing)} (it has {data.files}): a reference .npz must "
                                 "hold the Inception feature mean `mu` and covariance `sigma`")
            return Reference(str(reference), data["mu"], data["sigma"])
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < 2:
            raise ValueError(f"{path} holds {len(files)} images; a reference folder needs at least 2")
        if model is None:
            raise ValueError(f"reference {path} is a folder of images: pass the Inception model for its features")
        images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files])
        features = inception_outputs(model, images, device=device)[0]
        return Reference(str(reference), *statistics(features), features)
    raise FileNotFoundError(f"reference {path} (params evaluate.reference) is neither an .npz with mu/sigma nor "
                            "a folder of images")


def reference_statistics(reference: str | Path, model: torch.jit.ScriptModule | None = None,
                         device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) from an .npz with `mu` and `sigma`, or computed from a folder of images (needs `model`)."""
    return load_reference(reference, model, device).statistics


def inception_metrics(model: torch.jit.ScriptModule, images: np.ndarray, reference: str | Path | Reference,
                      device: str | torch.device = "cpu") -> dict:
    """FID against `reference` and Inception Score of uint8 `images`, with what they were measured against.

    Pass a loaded Reference to measure several sets against one reference without recomputing it."""
    if not isinstance(reference, Reference):
        reference = load_reference(reference, model, device)
    features, probabilities = inception_outputs(model, images, device=device)
    score, score_std = inception_score(probabilities)
    return {"fid": frechet_distance(statistics(features), reference.statistics),
            "inception_score": score, "inception_score_std": score_std, "num_samples": len(images),
            "extractor": EXTRACTOR, "reference": reference.path}
