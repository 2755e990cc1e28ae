"""The Inception FID / IS path, with a stand-in extractor: a small TorchScript network with the interface of
inception-2015-12-05.pt (`layers` giving (N, D, 1, 1) pool features, `output` a Linear(D, 1008)), saved to a
file and loaded through the same code as the real weights. The real network is not available offline. The
stand-in has D = 64 instead of 2048: the code never assumes D, and scipy's sqrtm of a 2048 x 2048 covariance
takes ~25 s on our 2 cores."""
import numpy as np
import pytest
import torch
from cleanfid.fid import fid_from_feats
from PIL import Image
from torch import nn

import dd.inception as inception
from dd.download import DownloadError


FEATURES = 64


class StandInInception(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(3, 8, 9, stride=8), nn.ReLU(), nn.Conv2d(8, FEATURES, 5, stride=4),
                                    nn.AdaptiveAvgPool2d(1))                     # (N, D, 1, 1)
        self.output = nn.Linear(FEATURES, 1008)

    def forward(self, x):
        return self.output(self.layers(x).flatten(1))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("inception") / "stand_in_inception.pt"
    torch.jit.script(StandInInception()).save(str(path))
    return path


def images(seed: int, count: int = 24, size: int = 32, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, channels), dtype=np.uint8)


def test_features_and_probabilities_have_the_published_shapes(weights):
    model = inception.load_inception(weights)
    features, probabilities = inception.inception_outputs(model, images(0, count=5, channels=1), batch_size=2)
    assert features.shape == (5, FEATURES) and probabilities.shape == (5, 1008)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-9)
    # Batching does not change an image's features.
    again, _ = inception.inception_outputs(model, images(0, count=5, channels=1), batch_size=5)
    np.testing.assert_allclose(features, again, rtol=1e-4, atol=1e-5)


def test_fid_against_an_npz_equals_fid_against_the_same_images_as_a_folder(weights, tmp_path):
    model = inception.load_inception(weights)
    reference_images = images(1)
    folder = tmp_path / "reference"
    folder.mkdir()
    for i, image in enumerate(reference_images):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    mu, sigma = inception.statistics(inception.inception_outputs(model, reference_images)[0])
    np.savez(tmp_path / "reference.npz", mu=mu, sigma=sigma)

    samples = images(2)
    from_npz = inception.inception_metrics(model, samples, tmp_path / "reference.npz")
    from_folder = inception.inception_metrics(model, samples, folder)
    assert from_npz["fid"] == pytest.approx(from_folder["fid"], rel=1e-6)
    features = inception.inception_outputs(model, samples)[0]
    reference_features = inception.inception_outputs(model, reference_images)[0]
    assert from_npz["fid"] == pytest.approx(fid_from_feats(features, reference_features), rel=1e-9)
    assert from_npz["fid"] > 0
    assert from_npz["num_samples"] == 24 and from_npz["reference"].endswith("reference.npz")
    assert "inception-2015-12-05.pt" in from_npz["extractor"]
    # A set against its own statistics: FID ~ 0.
    assert inception.inception_metrics(model, reference_images, tmp_path / "reference.npz")["fid"] < 1e-3


def test_inception_score_of_known_distributions():
    uniform = np.full((100, 10), 0.1)
    assert inception.inception_score(uniform, splits=5)[0] == pytest.approx(1.0)
    one_hot = np.eye(10)[np.arange(100) % 10]              # confident and evenly spread over 10 classes
    mean, std = inception.inception_score(one_hot, splits=5)
    assert mean == pytest.approx(10.0, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)
    collapsed = np.eye(10)[np.zeros(100, dtype=int)]      # confident but one class: no diversity
    assert inception.inception_score(collapsed, splits=5)[0] == pytest.approx(1.0)


def test_a_named_weights_file_that_is_missing_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="evaluate.inception_weights"):
        inception.load_inception(tmp_path / "nowhere.pt")


def test_offline_cache_miss_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(inception, "CLEANFID_CACHE", tmp_path / "inception-2015-12-05.pt")
    monkeypatch.setattr(inception, "INCEPTION_URL", "http://127.0.0.1:9/inception-2015-12-05.pt")
    monkeypatch.setattr("dd.download.time.sleep", lambda seconds: None)
    with pytest.raises(DownloadError, match="cannot reach the server"):
        inception.load_inception()
    assert not (tmp_path / "inception-2015-12-05.pt").exists()


def test_a_reference_npz_without_mu_and_sigma_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "batch.npz", arr_0=np.zeros((2, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="lacks \\['mu', 'sigma'\\]"):
        inception.reference_statistics(tmp_path / "batch.npz")
