"""The patch k-means tokenizer."""
import numpy as np
import torch

from dd.config import TokenizerConfig
from dd.raster.tokenizer import fit_tokenizer
from dd.tokenizers import tokenizer_metrics


def _images(count=200, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((count, 8, 8, 1)) > 0.5).astype(np.uint8) * 255   # binary 8x8 images


def test_fit_encode_decode():
    images = _images()
    config = TokenizerConfig(patch_size=2, codebook_size=16, code_dim=3, kmeans_iterations=5, kmeans_samples=5000)
    tokenizer = fit_tokenizer(images, config)
    tokens = tokenizer.encode(images)
    assert tokens.shape == (200, 16) and tokens.max() < 16
    # binary 2x2 patches have exactly 16 values: a 16-code k-means must reconstruct them (almost) exactly
    assert tokenizer_metrics(tokenizer, images)["reconstruction_mse"] < 1e-3
    assert tokenizer.decode(tokens).shape == images.shape
    # code vectors: one per code, mean variance 1 per axis, pixel distances kept up to one factor
    assert tokenizer.codebook.shape == (16, 3)
    assert torch.allclose(tokenizer.codebook.var(0).mean(), torch.tensor(1.0), atol=1e-4)


def test_codes_keep_pixel_geometry():
    # With every principal axis kept (code_dim = pixels per patch), code distances are pixel distances times
    # one factor: nothing is whitened, so near codes are similar-looking patches.
    rng = np.random.default_rng(1)   # mostly flat 2x2 patches: the brightness axis dominates, as in real images
    flat = np.kron(rng.integers(0, 200, (300, 4, 4, 1)), np.ones((1, 2, 2, 1)))
    images = (flat + rng.integers(0, 56, flat.shape)).astype(np.uint8)
    config = TokenizerConfig(patch_size=2, codebook_size=32, code_dim=4, kmeans_iterations=5, kmeans_samples=5000)
    tokenizer = fit_tokenizer(images, config)
    code_distances, pixel_distances = torch.pdist(tokenizer.codebook.double()), torch.pdist(tokenizer.centroids.double())
    ratio = code_distances / pixel_distances
    assert torch.allclose(ratio, ratio.mean(), rtol=1e-4)
    assert torch.allclose(tokenizer.codebook.var(0).mean(), torch.tensor(1.0), atol=1e-4)


def test_fit_is_deterministic_and_state_round_trips():
    images = _images()
    config = TokenizerConfig(patch_size=4, codebook_size=8, code_dim=2, kmeans_iterations=3, kmeans_samples=2000)
    first, second = fit_tokenizer(images, config), fit_tokenizer(images, config)
    assert torch.equal(first.centroids, second.centroids)
    restored = type(first).from_state_dict(first.state_dict())
    assert torch.equal(restored.encode(images), first.encode(images))
