"""Image datasets: Fashion-MNIST from the Debian package, or any folder of class subfolders.

Every loader returns an `ImageSet` of uint8 images shaped (N, H, W, C) - always four-dimensional,
C = 1 for grey and 3 for colour - so tokenizers, models and metrics never special-case the source.

Three splits: train (what tokenizers, teachers and the classifier learn from), validation (held out from the
source's train split, per class: every setting is chosen on it) and test (the source's own; it only reports).
Fashion-MNIST is read straight from the gzip'd IDX files that `apt-get install dataset-fashion-mnist`
puts under /usr/share/datasets/fashion-mnist, so nothing is ever downloaded at run time.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image

from dd.checkpoint import atomic_destination

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
SPLITS = ("train", "test")                    # what a source provides
STAGE_SPLITS = ("train", "validation", "test")    # what the data stage writes
GREY_MODES = {"1", "L", "LA"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

# IDX type codes (third byte of the magic number) -> big-endian numpy dtypes.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DatasetNotFoundError(FileNotFoundError):
    """The requested dataset is not on disk; the message says how to get it."""


@dataclass(frozen=True)
class ImageSet:
    """Images (uint8, N x H x W x C) with integer labels and the names those labels index."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(
                f"ImageSet.images must be uint8 (N, H, W, C); got {self.images.dtype} {self.images.shape}"
            )
        if self.labels.shape != (len(self.images),):
            raise ValueError(
                f"ImageSet.labels must have shape ({len(self.images)},); got {self.labels.shape}"
            )

    def __len__(self) -> int:
        return len(self.images)

    def save(self, path: str | Path) -> None:
        """Write an .npz atomically, so an interrupted run never leaves a half-written file."""
        # An open handle, not a path: np.savez would append ".npz" to a path lacking it.
        with atomic_destination(path) as temporary_path, open(temporary_path, "wb") as handle:
            np.savez(
                handle,
                images=self.images,
                labels=self.labels,
                class_names=np.array(self.class_names, dtype=str),
            )

    @classmethod
    def load(cls, path: str | Path) -> ImageSet:
        with np.load(path, allow_pickle=False) as archive:
            return cls(
                images=archive["images"],
                labels=archive["labels"].astype(np.int64),
                class_names=tuple(str(name) for name in archive["class_names"]),
            )


def read_idx(path: str | Path) -> np.ndarray:
    """Parse a (possibly gzip'd) IDX file: 2 zero bytes, a type code, a rank, then big-endian sizes and data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, rank = IDX_DTYPES[raw[2]], raw[3]
    header_size = 4 + 4 * rank
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=rank, offset=4))
    expected_bytes = header_size + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected_bytes:
        raise ValueError(f"{path} is truncated or padded: {len(raw)} bytes, header implies {expected_bytes}")
    data = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def load_fashion_mnist(split: str, root: Path = FASHION_MNIST_DIR) -> ImageSet:
    """The 60000-image train or 10000-image test split, as (N, 28, 28, 1) uint8."""
    check_split(split)
    prefix = "train" if split == "train" else "t10k"
    image_path = Path(root) / f"{prefix}-images-idx3-ubyte.gz"
    label_path = Path(root) / f"{prefix}-labels-idx1-ubyte.gz"
    for path in (image_path, label_path):
        if not path.is_file():
            raise DatasetNotFoundError(
                f"Fashion-MNIST file {path} is missing. Install it with "
                f"`sudo apt-get install dataset-fashion-mnist`, or pass the folder that holds the IDX files."
            )
    images, labels = read_idx(image_path), read_idx(label_path)
    if len(images) != len(labels):
        raise ValueError(f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels")
    return ImageSet(
        images=rearrange(images, "n h w -> n h w 1").astype(np.uint8),
        labels=labels.astype(np.int64),
        class_names=FASHION_MNIST_CLASSES,
    )


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")


def class_folders(root: Path) -> list[Path]:
    folders = sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
    if not folders:
        raise DatasetNotFoundError(
            f"{root} has no class subfolders; put each class's images in its own folder, "
            f"e.g. {root}/cat/001.png"
        )
    return folders


def image_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)


def read_images(files: list[Path]) -> np.ndarray:
    """Read files into one uint8 (N, H, W, C) array: grey (C=1) if every file is grey, else RGB.

    Each file is opened, converted to RGB and closed at once (a folder may hold more files than
    the open-file limit); grey images convert to three equal channels, so keeping one is exact.
    """
    arrays, all_grey, first_size = [], True, None
    for path in files:
        with Image.open(path) as image:
            if first_size is None:
                first_size = image.size
            if image.size != first_size:
                raise ValueError(
                    f"{path} is {image.size[0]}x{image.size[1]} but {files[0]} is "
                    f"{first_size[0]}x{first_size[1]}; all images in a folder dataset must share one size - "
                    f"resize them first"
                )
            all_grey = all_grey and image.mode in GREY_MODES
            arrays.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
    images = np.stack(arrays)
    return images[..., :1] if all_grey else images


def load_image_folder(root: Path, split: str, test_fraction: float, seed: int) -> ImageSet:
    """Images from `root/<class>/*.png` (class names sorted); uses root/train and root/test when both exist.

    Without explicit split folders, each class's files are shuffled by a generator seeded with
    `seed` and the class name, and the last `test_fraction` held out: the split is deterministic,
    stratified, and a class's split does not change when other classes gain or lose files.
    """
    check_split(split)
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"image folder {root} does not exist; pass a folder with one subfolder per class"
        )
    if (root / "train").is_dir() and (root / "test").is_dir():
        folders = class_folders(root / split)
        chosen = {folder.name: image_files(folder) for folder in folders}
    else:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be strictly between 0 and 1; got {test_fraction}")
        folders = class_folders(root)
        chosen = {}
        for folder in folders:
            files = image_files(folder)
            order = np.random.default_rng([seed, zlib.crc32(folder.name.encode())]).permutation(len(files))
            num_test = int(round(len(files) * test_fraction))
            indices = order[len(files) - num_test :] if split == "test" else order[: len(files) - num_test]
            chosen[folder.name] = [files[index] for index in sorted(indices)]
    empty = [name for name, files in chosen.items() if not files]
    if empty:
        raise DatasetNotFoundError(
            f"class folder(s) {empty} under {root} give no {split} images; "
            f"add images ({', '.join(sorted(IMAGE_SUFFIXES))}) or lower test_fraction"
        )
    class_names = tuple(chosen)
    files = [path for name in class_names for path in chosen[name]]
    labels = np.concatenate([np.full(len(chosen[name]), index) for index, name in enumerate(class_names)])
    return ImageSet(images=read_images(files), labels=labels.astype(np.int64), class_names=class_names)


def fit_to_size(images: np.ndarray, image_size: int) -> np.ndarray:
    """Make images image_size x image_size: zero-pad centred if smaller, area-resize if larger.

    Padding (not stretching) keeps Fashion-MNIST's 28x28 pixels exact at 32x32; non-square images are
    first padded to a square so the aspect ratio survives a later resize.
    """
    height, width = images.shape[1:3]
    side = max(height, width, image_size)
    top, left = (side - height) // 2, (side - width) // 2
    squared = np.zeros((len(images), side, side, images.shape[3]), dtype=np.uint8)
    squared[:, top : top + height, left : left + width] = images
    if side == image_size:
        return squared
    pixels = torch.from_numpy(rearrange(squared, "n h w c -> n c h w")).float()
    resized = F.interpolate(pixels, size=(image_size, image_size), mode="area")
    return rearrange(resized.round().clamp(0, 255).to(torch.uint8).numpy(), "n c h w -> n h w c")


def load_dataset(source: str, split: str, image_size: int, test_fraction: float, seed: int) -> ImageSet:
    """`source` is "fashion-mnist" or the path to an image folder; images come back image_size square."""
    if source == "fashion-mnist":
        dataset = load_fashion_mnist(split)
    else:
        dataset = load_image_folder(Path(source), split, test_fraction, seed)
    return ImageSet(fit_to_size(dataset.images, image_size), dataset.labels, dataset.class_names)


def hold_out(dataset: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """(the rest, the held-out part): round(fraction x n_c) images of each class c, chosen by a generator seeded
    with (seed, c), so the split is stratified, deterministic, and a class's split does not depend on the others.
    Both parts keep the images' original order."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"data.validation_fraction must be strictly between 0 and 1; got {fraction}")
    held = np.zeros(len(dataset), dtype=bool)
    for label in np.unique(dataset.labels):
        members = np.flatnonzero(dataset.labels == label)
        count = int(round(len(members) * fraction))
        if not 0 < count < len(members):
            raise ValueError(f"class {dataset.class_names[label]!r} has {len(members)} train images: "
                             f"data.validation_fraction {fraction} holds out {count} of them; every class needs at "
                             "least one image on each side (add images or change the fraction)")
        chosen = np.random.default_rng([seed, int(label)]).permutation(len(members))[:count]
        held[members[chosen]] = True
    part = lambda mask: ImageSet(dataset.images[mask], dataset.labels[mask], dataset.class_names)
    return part(~held), part(held)


def load_splits(source: str, image_size: int, test_fraction: float, validation_fraction: float,
                seed: int) -> dict[str, ImageSet]:
    """The data stage's three splits: train and validation from the source's train split, and its test split."""
    train, validation = hold_out(load_dataset(source, "train", image_size, test_fraction, seed), validation_fraction,
                                 seed)
    return {"train": train, "validation": validation,
            "test": load_dataset(source, "test", image_size, test_fraction, seed)}
