"""Tests for dd.data: IDX parsing, Fashion-MNIST, image folders, padding and ImageSet files."""

import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from dd.data import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    DatasetNotFoundError,
    ImageSet,
    fit_to_size,
    hold_out,
    load_dataset,
    load_fashion_mnist,
    load_image_folder,
    load_splits,
    read_idx,
)

fashion_mnist_installed = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed: `apt-get install dataset-fashion-mnist`",
)


def write_idx(path, array, type_code=0x08):
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    with gzip.open(path, "wb") as handle:
        handle.write(header + big_endian.tobytes())


def test_read_idx_parses_uint8_and_big_endian_int32(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "images.gz", images)
    np.testing.assert_array_equal(read_idx(tmp_path / "images.gz"), images)

    values = np.array([1, -2, 70000], dtype=np.int32)
    write_idx(tmp_path / "values.gz", values, type_code=0x0C)
    np.testing.assert_array_equal(read_idx(tmp_path / "values.gz"), values)


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    with gzip.open(tmp_path / "bad.gz", "wb") as handle:
        handle.write(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad.gz")
    with gzip.open(tmp_path / "short.gz", "wb") as handle:
        handle.write(struct.pack(">BBBBI", 0, 0, 0x08, 1, 10) + b"\x00" * 5)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short.gz")


def test_fashion_mnist_from_a_folder_of_idx_files(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([0, 9, 3, 3, 1], dtype=np.uint8))
    dataset = load_fashion_mnist("test", root=tmp_path)
    assert dataset.images.shape == (5, 28, 28, 1)
    np.testing.assert_array_equal(dataset.images[..., 0], images)
    assert dataset.labels.dtype == np.int64 and list(dataset.labels) == [0, 9, 3, 3, 1]


@fashion_mnist_installed
def test_fashion_mnist_sizes_and_classes():
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert train.images.dtype == np.uint8
    assert len(train.class_names) == 10 and train.class_names == FASHION_MNIST_CLASSES
    assert set(np.unique(test.labels)) == set(range(10))


def test_missing_fashion_mnist_names_the_debian_package(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", root=tmp_path / "nowhere")


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation")


def write_png(path, value, size=(6, 5), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 0, 255 - value)
    Image.new(mode, size, colour).save(path)


def test_image_folder_split_is_deterministic_and_disjoint(tmp_path):
    for name in ("zebra", "ant"):
        for index in range(10):
            write_png(tmp_path / name / f"{index:02d}.png", value=index)
    train = load_image_folder(tmp_path, "train", test_fraction=0.2, seed=3)
    test = load_image_folder(tmp_path, "test", test_fraction=0.2, seed=3)
    assert train.class_names == test.class_names == ("ant", "zebra")
    assert train.images.shape == (16, 5, 6, 1) and test.images.shape == (4, 5, 6, 1)
    assert list(np.bincount(test.labels)) == [2, 2]
    # Every image has a distinct value within its class, so train and test share no image.
    train_keys = {(label, image[0, 0, 0]) for image, label in zip(train.images, train.labels)}
    test_keys = {(label, image[0, 0, 0]) for image, label in zip(test.images, test.labels)}
    assert not train_keys & test_keys and len(train_keys | test_keys) == 20
    again = load_image_folder(tmp_path, "test", test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(again.images, test.images)


def test_image_folder_uses_explicit_split_folders_and_colour(tmp_path):
    write_png(tmp_path / "train" / "cat" / "a.png", 10, mode="RGB")
    write_png(tmp_path / "train" / "dog" / "b.png", 20)
    write_png(tmp_path / "test" / "cat" / "c.png", 30)
    write_png(tmp_path / "test" / "dog" / "d.png", 40)
    train = load_image_folder(tmp_path, "train", test_fraction=0.5, seed=0)
    test = load_image_folder(tmp_path, "test", test_fraction=0.5, seed=0)
    assert train.class_names == ("cat", "dog") and list(train.labels) == [0, 1]
    assert train.images.shape == (2, 5, 6, 3), "one colour image makes the whole set RGB"
    assert tuple(train.images[0, 0, 0]) == (10, 0, 245)
    assert test.images.shape == (2, 5, 6, 1) and list(test.images[:, 0, 0, 0]) == [30, 40]


def test_image_folder_with_mixed_sizes_names_the_odd_file(tmp_path):
    write_png(tmp_path / "train" / "cat" / "a.png", 1)
    write_png(tmp_path / "train" / "cat" / "big.png", 1, size=(8, 8))
    write_png(tmp_path / "test" / "cat" / "c.png", 1)
    with pytest.raises(ValueError, match="big.png is 8x8"):
        load_image_folder(tmp_path, "train", test_fraction=0.5, seed=0)


def test_image_folder_without_classes_or_images_is_an_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "missing", "train", test_fraction=0.5, seed=0)
    with pytest.raises(DatasetNotFoundError, match="no class subfolders"):
        load_image_folder(tmp_path, "train", test_fraction=0.5, seed=0)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DatasetNotFoundError, match="empty_class"):
        load_image_folder(tmp_path, "train", test_fraction=0.5, seed=0)


def test_fit_to_size_pads_into_the_centre():
    images = np.random.default_rng(0).integers(1, 256, (3, 28, 28, 1), dtype=np.uint8)
    padded = fit_to_size(images, 32)
    assert padded.shape == (3, 32, 32, 1) and padded.dtype == np.uint8
    np.testing.assert_array_equal(padded[:, 2:30, 2:30], images)
    border = padded.copy()
    border[:, 2:30, 2:30] = 0
    assert not border.any()


def test_fit_to_size_shrinks_larger_images_by_area_averaging():
    images = np.zeros((1, 4, 4, 3), dtype=np.uint8)
    images[0, :2, :2] = 200
    shrunk = fit_to_size(images, 2)
    assert shrunk.shape == (1, 2, 2, 3)
    assert shrunk[0, 0, 0, 0] == 200 and shrunk[0, 1, 1, 0] == 0
    np.testing.assert_array_equal(fit_to_size(images, 4), images)


def test_load_dataset_from_a_folder_applies_the_size(tmp_path):
    for index in range(4):
        write_png(tmp_path / "only" / f"{index}.png", 100)
    dataset = load_dataset(str(tmp_path), "train", image_size=8, test_fraction=0.25, seed=0)
    assert dataset.images.shape == (3, 8, 8, 1)
    assert dataset.images[0, 0, 0, 0] == 0 and dataset.images[0, 4, 4, 0] == 100


def _labelled(counts: list[int]) -> ImageSet:
    """Images whose first pixel is their index, so a split's members can be traced back."""
    labels = np.concatenate([np.full(count, label) for label, count in enumerate(counts)])
    labels = labels[np.random.default_rng(0).permutation(len(labels))]
    images = np.zeros((len(labels), 2, 2, 1), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(len(labels)) % 256
    images[:, 0, 1, 0] = np.arange(len(labels)) // 256
    return ImageSet(images, labels.astype(np.int64), tuple(f"c{i}" for i in range(len(counts))))


def _indices(images: ImageSet) -> np.ndarray:
    return images.images[:, 0, 0, 0].astype(int) + 256 * images.images[:, 0, 1, 0].astype(int)


def test_hold_out_is_stratified_disjoint_deterministic_and_keeps_the_order():
    dataset = _labelled([50, 30, 20])
    rest, held = hold_out(dataset, 0.1, seed=0)
    assert [int((held.labels == c).sum()) for c in range(3)] == [5, 3, 2]
    assert sorted([*_indices(rest), *_indices(held)]) == list(range(100))            # a partition
    assert (np.diff(_indices(held)) > 0).all() and (np.diff(_indices(rest)) > 0).all()
    again, other_seed = hold_out(dataset, 0.1, seed=0)[1], hold_out(dataset, 0.1, seed=1)[1]
    assert np.array_equal(_indices(again), _indices(held)) and not np.array_equal(_indices(other_seed), _indices(held))
    # A class's held-out images depend on its own members only, not on the other classes.
    fewer = ImageSet(dataset.images[dataset.labels != 2], dataset.labels[dataset.labels != 2], dataset.class_names)
    assert np.array_equal(_indices(hold_out(fewer, 0.1, seed=0)[1]), _indices(held)[held.labels != 2])


@pytest.mark.parametrize("fraction", [0.0, 1.0, 0.01])
def test_hold_out_refuses_a_split_that_leaves_a_class_empty(fraction):
    with pytest.raises(ValueError, match="validation_fraction"):
        hold_out(_labelled([50, 30, 20]), fraction, seed=0)


def test_load_splits_holds_validation_out_of_the_train_folder(tmp_path):
    for split, count in (("train", 10), ("test", 3)):
        for label in range(2):
            for index in range(count):
                write_png(tmp_path / split / f"c{label}" / f"{index}.png", 10 * index + label)
    splits = load_splits(str(tmp_path), image_size=4, test_fraction=0.25, validation_fraction=0.2, seed=0)
    assert {name: len(images) for name, images in splits.items()} == {"train": 16, "validation": 4, "test": 6}
    pixels = {name: {(int(image[1, 1, 0]), int(label)) for image, label in zip(images.images, images.labels)}
              for name, images in splits.items()}
    assert not pixels["train"] & pixels["validation"]


@fashion_mnist_installed
def test_fashion_mnist_splits_hold_out_a_tenth_of_each_train_class():
    splits = load_splits("fashion-mnist", image_size=32, test_fraction=0.15, validation_fraction=0.1, seed=0)
    assert [len(splits[name]) for name in ("train", "validation", "test")] == [54_000, 6_000, 10_000]
    assert np.bincount(splits["validation"].labels).tolist() == [600] * 10


def test_image_set_round_trip(tmp_path):
    original = ImageSet(
        images=np.random.default_rng(1).integers(0, 256, (4, 3, 3, 3), dtype=np.uint8),
        labels=np.array([0, 1, 1, 0], dtype=np.int64),
        class_names=("T-shirt/top", "Ankle boot"),
    )
    path = tmp_path / "nested" / "set.npz"
    original.save(path)
    loaded = ImageSet.load(path)
    np.testing.assert_array_equal(loaded.images, original.images)
    np.testing.assert_array_equal(loaded.labels, original.labels)
    assert loaded.class_names == original.class_names
    assert [child.name for child in path.parent.iterdir()] == ["set.npz"], "no temporary file left behind"


def test_image_set_rejects_three_dimensional_images():
    with pytest.raises(ValueError, match="uint8 \\(N, H, W, C\\)"):
        ImageSet(np.zeros((2, 3, 3), dtype=np.uint8), np.zeros(2, dtype=np.int64), ("a",))
