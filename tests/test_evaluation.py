"""Tests for dd.evaluation: FID, precision/recall, the feature classifier, grids and plots."""

import numpy as np
import pytest
import torch
from PIL import Image

from dd.data import ImageSet
from dd.evaluation import (
    ClassifierConfig,
    FeatureClassifier,
    ImageMetrics,
    class_accuracy,
    frechet_distance,
    image_metrics,
    first_of_each_class,
    pareto_front,
    plot_fid_vs_latency,
    precision_recall,
    predict,
    save_comparison,
    save_grid,
    train_classifier,
)

TINY = ClassifierConfig(channels=4, feature_dim=8, train_steps=40, batch_size=32, learning_rate=1e-2, seed=0)


def gaussian(rng, count, mean, scales):
    return rng.normal(size=(count, len(scales))) * np.asarray(scales) + np.asarray(mean)


def test_frechet_distance_of_identical_features_is_zero():
    features = gaussian(np.random.default_rng(0), 2000, [0, 0, 0, 0], [1, 2, 3, 4])
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_of_a_shifted_copy_is_the_squared_shift():
    features = gaussian(np.random.default_rng(0), 2000, [0, 0, 0], [1, 1, 1])
    shift = np.array([3.0, -1.0, 2.0])
    assert frechet_distance(features, features + shift) == pytest.approx(14.0, rel=1e-6)


def test_frechet_distance_matches_the_analytic_value_for_different_covariances():
    rng = np.random.default_rng(1)
    # N(0, diag(1, 4)) vs N((1, 2), diag(4, 1)): |mu|^2 = 5, trace term (1 - 2)^2 + (2 - 1)^2 = 2.
    first = gaussian(rng, 50_000, [0, 0], [1, 2])
    second = gaussian(rng, 50_000, [1, 2], [2, 1])
    assert frechet_distance(first, second) == pytest.approx(7.0, abs=0.15)


def test_frechet_distance_ignores_dead_dimensions_without_changing_the_value():
    rng = np.random.default_rng(2)
    first, second = gaussian(rng, 1000, [0, 0], [1, 1]), gaussian(rng, 1000, [1, 0], [1, 2])
    dead = np.zeros((1000, 3))
    padded = frechet_distance(np.hstack([first, dead]), np.hstack([second, dead]))
    assert padded == pytest.approx(frechet_distance(first, second), rel=1e-9)


def test_precision_recall_of_identical_sets_is_one():
    features = gaussian(np.random.default_rng(0), 500, [0] * 8, [1] * 8)
    assert precision_recall(features, features, k=3, chunk_size=128) == (1.0, 1.0)


def test_precision_recall_of_far_apart_clusters_is_zero():
    rng = np.random.default_rng(0)
    real, fake = gaussian(rng, 300, [0] * 4, [1] * 4), gaussian(rng, 300, [100] * 4, [1] * 4)
    assert precision_recall(real, fake) == (0.0, 0.0)


def test_precision_recall_of_a_subset_has_high_precision_low_recall():
    rng = np.random.default_rng(0)
    real = np.vstack([gaussian(rng, 400, [0] * 4, [1] * 4), gaussian(rng, 400, [50] * 4, [1] * 4)])
    precision, recall = precision_recall(real, real[:400], k=3)
    assert precision == 1.0
    assert recall == pytest.approx(0.5, abs=0.02)


def test_precision_recall_matches_a_hand_computed_example_across_chunks():
    # k = 1 radii of the real points 0, 1, 2, 3, 10 are 1, 1, 1, 1, 7: fake 5 lies in the ball of 10,
    # 3.4 in the ball of 3, 20 in none -> precision 2/3. The fake radii are 1.6, 15, 1.6: real 2 and 3
    # lie in the ball of 3.4, real 10 in the ball of 20, real 0 and 1 in none -> recall 3/5.
    real = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    fake = np.array([[5.0], [20.0], [3.4]])
    for chunk_size in (1, 2, 100):
        precision, recall = precision_recall(real, fake, k=1, chunk_size=chunk_size)
        assert precision == pytest.approx(2 / 3)
        assert recall == pytest.approx(3 / 5)


def test_precision_recall_needs_more_points_than_k():
    with pytest.raises(ValueError, match="N > k"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)), k=3)


def test_class_accuracy():
    assert class_accuracy(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 0.75
    with pytest.raises(ValueError, match="equal, non-zero length"):
        class_accuracy(np.array([1, 2]), np.array([1, 2, 3]))


def test_feature_classifier_output_shapes():
    config = ClassifierConfig(channels=8, feature_dim=16)
    classifier = FeatureClassifier(in_channels=3, num_classes=7, config=config)
    features, logits = classifier(torch.rand(5, 3, 32, 32))
    assert features.shape == (5, 16) and logits.shape == (5, 7)
    assert (features >= 0).all(), "features come after a ReLU"


def half_bright_images(rng, labels, size=16):
    """Class 0 is bright on the left half, class 1 on the right; noise everywhere."""
    images = rng.integers(0, 100, (len(labels), size, size, 1))
    for index, label in enumerate(labels):
        half = slice(0, size // 2) if label == 0 else slice(size // 2, size)
        images[index, :, half] += 150
    return images.astype(np.uint8)


def test_train_classifier_separates_a_synthetic_two_class_set():
    rng = np.random.default_rng(0)
    train_labels, test_labels = rng.integers(0, 2, 512), rng.integers(0, 2, 200)
    train = ImageSet(half_bright_images(rng, train_labels), train_labels.astype(np.int64), ("left", "right"))
    classifier = train_classifier(train, num_classes=2, config=TINY, progress=False)
    assert not classifier.training
    features, predicted = predict(classifier, half_bright_images(rng, test_labels), batch_size=64)
    assert features.shape == (200, TINY.feature_dim) and features.dtype == np.float64
    assert predicted.dtype == np.int64
    assert class_accuracy(predicted, test_labels) > 0.9


def test_train_classifier_rejects_labels_outside_the_classes():
    images = np.zeros((4, 8, 8, 1), dtype=np.uint8)
    train = ImageSet(images, np.array([0, 1, 2, 5]), ("a", "b", "c"))
    with pytest.raises(ValueError, match="labels must lie in"):
        train_classifier(train, num_classes=3, config=TINY, progress=False)


def test_image_metrics_fills_every_field():
    torch.manual_seed(0)
    classifier = FeatureClassifier(1, 3, TINY).eval()
    rng = np.random.default_rng(0)
    real_features, _ = predict(classifier, rng.integers(0, 256, (64, 16, 16, 1), dtype=np.uint8))
    images, labels = rng.integers(0, 256, (32, 16, 16, 1), dtype=np.uint8), rng.integers(0, 3, 32)
    without_teacher = image_metrics(classifier, images, labels, real_features, None)
    with_teacher = image_metrics(classifier, images, labels, real_features, real_features)
    assert isinstance(without_teacher, ImageMetrics) and without_teacher.fid_to_teacher is None
    assert with_teacher.fid_to_teacher == pytest.approx(with_teacher.fid)
    assert without_teacher.num_samples == 32 and 0 <= without_teacher.class_accuracy <= 1
    assert 0 <= without_teacher.precision <= 1 and 0 <= without_teacher.recall <= 1


@pytest.mark.parametrize("channels", [1, 3])
def test_save_grid_writes_a_png_of_the_expected_size(tmp_path, channels):
    images = np.random.default_rng(0).integers(0, 256, (5, 6, 7, channels), dtype=np.uint8)
    path = tmp_path / "grid.png"
    save_grid(images, path, num_columns=3, upscale=2)
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.mode == "RGB"
        assert picture.size == (3 * 7 * 2, 2 * 6 * 2)  # width, height: 3 columns, 2 rows
        pixels = np.asarray(picture)
    # Second image, top-left pixel, doubled: row 0, columns 14-15 (grey images in all three channels).
    np.testing.assert_array_equal(pixels[0:2, 14:16], np.broadcast_to(images[1, 0, 0], (2, 2, 3)))
    assert not pixels[12:, 28:].any(), "the missing sixth cell is blank"
    assert [child.name for child in tmp_path.iterdir()] == ["grid.png"]


def test_a_titled_grid_has_its_label_above_the_images(tmp_path):
    images = np.full((4, 8, 8, 1), 200, dtype=np.uint8)
    save_grid(images, tmp_path / "plain.png", num_columns=2)
    save_grid(images, tmp_path / "titled.png", num_columns=2, title="dd, 1 steps, FID 14.12")
    with Image.open(tmp_path / "plain.png") as plain, Image.open(tmp_path / "titled.png") as titled:
        band = titled.height - plain.height
        pixels = np.asarray(titled)
        assert band > 10 and titled.width == plain.width
        assert (pixels[:band] < 128).any() and np.array_equal(pixels[band:], np.asarray(plain))   # text, then the grid


def test_the_comparison_puts_the_same_classes_side_by_side(tmp_path):
    """Each method's first samples of each class, one row per class; a class with too few samples is blank."""
    labels = np.arange(30) % 3
    teacher = {"images": np.repeat(labels[:, None, None, None] * 100, 4, 1).repeat(4, 2).astype(np.uint8), "labels": labels}
    chosen = first_of_each_class(teacher, num_classes=4, per_class=2)
    assert chosen["labels"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert chosen["images"][:, 0, 0, 0].tolist() == [0, 0, 100, 100, 200, 200, 0, 0]
    save_comparison({"teacher": chosen["images"], "dd": chosen["images"]}, tmp_path / "comparison.png", per_class=2)
    with Image.open(tmp_path / "comparison.png") as picture:
        pixels = np.asarray(picture)
    band = picture.height - 4 * 4 * 2                            # 4 class rows of 4-pixel images, doubled
    assert picture.width == 2 * (2 * 4 * 2) + 8 * 2 and band > 10    # two columns of 2 images, one gap
    assert pixels[band + 8, 0, 0] == 100 and pixels[band + 8, 20, 0] == 255     # class 1 (rows 8-15); the white gap


def test_the_pareto_front_keeps_what_nothing_beats_in_both():
    points = [(10.0, 12.0), (4.0, 14.0), (1.0, 20.0), (5.0, 30.0), (0.01, 60.0)]
    assert pareto_front(points) == [4, 2, 1, 0]


def test_plot_fid_vs_latency_writes_a_png(tmp_path):
    rows = [
        {"method": "teacher", "fid": 12.0, "seconds_per_image": 0.05, "steps": 64},
        {"method": "teacher", "fid": 14.0, "seconds_per_image": 0.02, "steps": 16},
        {"method": "distilled", "fid": 20.0, "seconds_per_image": 0.001, "steps": 1},
    ]
    path = tmp_path / "plots" / "fid_vs_latency.png"
    plot_fid_vs_latency(rows, path, title="Fashion-MNIST")
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.size[0] > 100
    assert [child.name for child in path.parent.iterdir()] == ["fid_vs_latency.png"]
