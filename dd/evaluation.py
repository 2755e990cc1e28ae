"""Everything that turns images into numbers: a feature classifier, FID, precision/recall, plots.

Inception-based FID needs downloaded weights and a 299x299 resize that makes no sense for 32x32
greyscale clothing, so the project trains a small CNN on the dataset's own train split and uses its
penultimate features as an offline stand-in: FID and improved precision/recall are computed in that
feature space, and its predictions measure whether class-conditional samples show the right class.
The Frechet distance itself is clean-fid's, so only the feature extractor differs from the usual recipe.
Images everywhere are uint8 numpy arrays shaped (N, H, W, C).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image, ImageDraw, ImageFont
from rich.progress import Progress, TextColumn
from torch import nn

from dd.checkpoint import atomic_destination, load_json, load_state_dict
from dd.config import ClassifierConfig

POOLED_SIZE = 4  # the classifier's last feature map is average-pooled to POOLED_SIZE x POOLED_SIZE


class LabelledImages(Protocol):
    """Anything with uint8 (N, H, W, C) `images` and int (N,) `labels`, such as dd.data.ImageSet."""

    images: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class ImageMetrics:
    """How good a batch of generated images is; FID to the teacher is None when there is no teacher.

    fid, precision and recall are against the reference split (the test split: reported); validation_fid is
    against the validation split, the one settings are chosen on (None when not measured)."""

    fid: float
    fid_to_teacher: float | None
    precision: float
    recall: float
    class_accuracy: float
    num_samples: int
    validation_fid: float | None = None


def to_unit_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) numpy -> float (N, C, H, W) torch in [0, 1]."""
    return torch.from_numpy(rearrange(images, "n h w c -> n c h w")).float() / 255.0


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv, batch norm, ReLU, then 2x2 max pooling halves the resolution."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class FeatureClassifier(nn.Module):
    """Three conv blocks -> average pool to 4x4 -> feature_dim ReLU features -> class logits.

    Pooling to a 4x4 grid rather than to one pixel keeps where things are (a sleeve, a heel), which
    is worth about a point of Fashion-MNIST accuracy at no extra cost; it also makes the head
    independent of the input size.
    """

    def __init__(self, in_channels: int, num_classes: int, config: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        width = config.channels
        self.body = nn.Sequential(
            conv_block(in_channels, width),
            conv_block(width, 2 * width),
            conv_block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(POOLED_SIZE),
            nn.Flatten(),
        )
        self.features = nn.Sequential(
            nn.Linear(4 * width * POOLED_SIZE**2, config.feature_dim), nn.ReLU(inplace=True)
        )
        self.head = nn.Linear(config.feature_dim, num_classes)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float (B, C, H, W) in [0, 1] -> (features (B, feature_dim), logits (B, num_classes))."""
        features = self.features(self.body(images))
        return features, self.head(features)


def load_classifier(folder: str | Path) -> FeatureClassifier:
    """The classifier stage's result (model.pt and model.json in `folder`), frozen."""
    meta = load_json(Path(folder) / "model.json")
    classifier = FeatureClassifier(meta["in_channels"], meta["num_classes"], ClassifierConfig(**meta["config"]))
    classifier.load_state_dict(load_state_dict(Path(folder) / "model.pt"), strict=True)
    return classifier.eval().requires_grad_(False)


def train_classifier(
    train: LabelledImages,
    num_classes: int,
    config: ClassifierConfig = ClassifierConfig(),
    progress: bool = True,
) -> FeatureClassifier:
    """Train with Adam and a cosine learning-rate decay on random batches (no augmentation).

    Returns the classifier in eval mode, on the CPU, ready for `predict`.
    """
    if train.images.ndim != 4 or train.images.dtype != np.uint8:
        raise ValueError(
            f"training images must be uint8 (N, H, W, C); got {train.images.dtype} {train.images.shape}"
        )
    labels = torch.from_numpy(np.asarray(train.labels, dtype=np.int64))
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}); got [{labels.min()}, {labels.max()}]")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    # Kept as uint8 and converted per batch: a float copy of 60000 images would cost 4x the memory.
    images = torch.from_numpy(rearrange(train.images, "n h w c -> n c h w"))
    classifier = FeatureClassifier(images.shape[1], num_classes, config)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.train_steps)
    classifier.train()
    columns = (*Progress.get_default_columns(), TextColumn("loss {task.fields[loss]:.3f}"))
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("training feature classifier", total=config.train_steps, loss=float("nan"))
        for _ in range(config.train_steps):
            batch = torch.randint(len(images), (config.batch_size,), generator=generator)
            _, logits = classifier(images[batch].float() / 255.0)
            loss = F.cross_entropy(logits, labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update(task, advance=1, loss=loss.item())
    return classifier.eval()


def predict(
    classifier: FeatureClassifier, images: np.ndarray, batch_size: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features (float64, N x D) and predicted labels (int64, N) of uint8 (N, H, W, C) images.

    The classifier must be in eval mode (as `train_classifier` returns it) so batch norm uses its
    running statistics and results do not depend on the batch size.
    """
    features, predictions = [], []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch_features, logits = classifier(to_unit_tensor(images[start : start + batch_size]))
            features.append(batch_features.double().numpy())
            predictions.append(logits.argmax(dim=1).numpy())
    return np.concatenate(features), np.concatenate(predictions).astype(np.int64)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two feature sets (N x D each): clean-fid's Frechet distance of their Gaussian fits.

    Dimensions holding one constant value in both sets (ReLU units that never fire) add exactly
    zero to the distance but make the covariance product singular, so they are dropped first.
    """
    for name, features in (("features_a", features_a), ("features_b", features_b)):
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(
                f"{name} must be (N, D) with N >= 2 to estimate a covariance; got {features.shape}"
            )
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"feature sets differ in width: {features_a.shape[1]} vs {features_b.shape[1]}")
    varying = np.ptp(np.concatenate([features_a, features_b]), axis=0) > 0
    if not varying.any():
        return 0.0
    features_a, features_b = features_a[:, varying], features_b[:, varying]
    # Imported here, not at the top: clean-fid pulls in torchvision (~5 s), and the classifier stage and the
    # scripts import this module where only the evaluation computes a distance.
    from cleanfid.fid import frechet_distance as clean_fid_frechet_distance

    return float(
        clean_fid_frechet_distance(
            np.mean(features_a, axis=0),
            np.cov(features_a, rowvar=False),
            np.mean(features_b, axis=0),
            np.cov(features_b, rowvar=False),
        )
    )


def kth_neighbour_radii(features: torch.Tensor, k: int, chunk_size: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point in the same set."""
    radii = []
    for chunk in features.split(chunk_size):
        distances = torch.cdist(chunk, features)
        # k + 1 smallest because each point's nearest neighbour is itself, at distance 0.
        radii.append(distances.topk(k + 1, dim=1, largest=False).values[:, -1])
    return torch.cat(radii)


def fraction_inside_balls(
    points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk_size: int
) -> float:
    """Fraction of `points` lying within radii[i] of some centres[i] (the k-NN manifold estimate)."""
    inside = [(torch.cdist(chunk, centres) <= radii).any(dim=1) for chunk in points.split(chunk_size)]
    return torch.cat(inside).double().mean().item()


def precision_recall(
    real_features: np.ndarray, fake_features: np.ndarray, k: int = 3, chunk_size: int = 1000
) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al., 2019) with k-nearest-neighbour balls.

    Precision is the fraction of fake samples inside the real manifold (fidelity); recall is the
    fraction of real samples inside the fake manifold (coverage). Distances are computed chunk by
    chunk so 10k x 10k sets need only chunk_size x 10k floats at a time.
    """
    for name, features in (("real_features", real_features), ("fake_features", fake_features)):
        if features.ndim != 2 or len(features) <= k:
            raise ValueError(
                f"{name} must be (N, D) with N > k = {k} to find k neighbours; got {features.shape}"
            )
    real = torch.from_numpy(np.asarray(real_features, dtype=np.float64))
    fake = torch.from_numpy(np.asarray(fake_features, dtype=np.float64))
    real_radii = kth_neighbour_radii(real, k, chunk_size)
    fake_radii = kth_neighbour_radii(fake, k, chunk_size)
    precision = fraction_inside_balls(fake, real, real_radii, chunk_size)
    recall = fraction_inside_balls(real, fake, fake_radii, chunk_size)
    return precision, recall


def class_accuracy(predicted_labels: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of predictions equal to the labels (for samples: the class they were conditioned on)."""
    if predicted_labels.shape != labels.shape or len(labels) == 0:
        raise ValueError(
            f"need two label arrays of equal, non-zero length; got {predicted_labels.shape} and {labels.shape}"
        )
    return float(np.mean(predicted_labels == labels))


def image_metrics(
    classifier: FeatureClassifier,
    images: np.ndarray,
    labels: np.ndarray,
    real_features: np.ndarray,
    teacher_features: np.ndarray | None,
    k: int = 3,
    validation_features: np.ndarray | None = None,
) -> ImageMetrics:
    """All metrics of generated `images` (conditioned on `labels`) against real (reported), teacher and
    validation features; k is the neighbourhood size of precision/recall."""
    features, predicted = predict(classifier, images)
    precision, recall = precision_recall(real_features, features, k=k)
    return ImageMetrics(
        validation_fid=None if validation_features is None else frechet_distance(validation_features, features),
        fid=frechet_distance(real_features, features),
        fid_to_teacher=None if teacher_features is None else frechet_distance(teacher_features, features),
        precision=precision,
        recall=recall,
        class_accuracy=class_accuracy(predicted, np.asarray(labels, dtype=np.int64)),
        num_samples=len(images),
    )


def _tile(images: np.ndarray, num_columns: int, upscale: int) -> np.ndarray:
    """uint8 (N, H, W, C) -> one (rows H, columns W, C) array, blanks after the last image, pixels upscaled."""
    num_rows = -(-len(images) // num_columns)
    blank = np.zeros((num_rows * num_columns - len(images), *images.shape[1:]), dtype=np.uint8)
    grid = rearrange(
        np.concatenate([images, blank]), "(rows columns) h w c -> (rows h) (columns w) c", columns=num_columns
    )
    return grid.repeat(upscale, axis=0).repeat(upscale, axis=1)


def _to_rgb(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert("RGB")


def _labelled(picture: Image.Image, labels: list[tuple[int, str]], height: int = 22) -> Image.Image:
    """picture under a white band holding each (x, text)."""
    canvas = Image.new("RGB", (picture.width, picture.height + height), "white")
    canvas.paste(picture, (0, height))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default(size=13)
    for x, text in labels:
        draw.text((x + 3, 4), text, fill="black", font=font)
    return canvas


def _check_images(images: np.ndarray) -> None:
    if images.ndim != 4 or images.dtype != np.uint8 or len(images) == 0:
        raise ValueError(f"needs non-empty uint8 (N, H, W, C) images; got {images.dtype} {images.shape}")


def save_grid(images: np.ndarray, path: str | Path, num_columns: int, upscale: int = 2, title: str = "") -> None:
    """Tile uint8 (N, H, W, C) images into a PNG, num_columns wide, each pixel an upscale x upscale block, under a
    title band (which method, steps, FID) when a title is given."""
    _check_images(images)
    picture = _to_rgb(_tile(images, num_columns, upscale))
    if title:
        picture = _labelled(picture, [(0, title)])
    with atomic_destination(path) as temporary_path:
        picture.save(temporary_path, format="PNG")


def first_of_each_class(samples: dict, num_classes: int, per_class: int) -> dict:
    """The first per_class samples of each of classes 0..num_classes-1: {"images" (num_classes * per_class, ...),
    "labels"}, class by class; a class with fewer samples is padded with blank images."""
    images, labels = [], []
    for label in range(num_classes):
        chosen = samples["images"][np.flatnonzero(samples["labels"] == label)[:per_class]]
        blank = np.zeros((per_class - len(chosen), *samples["images"].shape[1:]), dtype=np.uint8)
        images.append(np.concatenate([chosen, blank]))
        labels.append(np.full(per_class, label))
    return {"images": np.concatenate(images), "labels": np.concatenate(labels)}


def save_comparison(columns: dict[str, np.ndarray], path: str | Path, per_class: int, upscale: int = 2) -> None:
    """Methods side by side on the same classes: {label: images from first_of_each_class}, each a labelled column
    of one row per class, per_class images wide (e.g. "teacher (64 steps, FID 10.8)", "DD 1-step (...)")."""
    tiles = [_tile(images, per_class, upscale) for images in columns.values()]
    channels = max(tile.shape[-1] for tile in tiles)
    tiles = [np.repeat(tile, channels // tile.shape[-1], axis=-1) for tile in tiles]
    gap = np.full((tiles[0].shape[0], 8 * upscale, channels), 255, dtype=np.uint8)
    starts = np.cumsum([0] + [tile.shape[1] + gap.shape[1] for tile in tiles[:-1]])
    pieces = [piece for tile in tiles for piece in (tile, gap)][:-1]
    picture = _labelled(_to_rgb(np.concatenate(pieces, axis=1)), list(zip(starts.tolist(), columns)))
    with atomic_destination(path) as temporary_path:
        picture.save(temporary_path, format="PNG")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (latency, fid) that no other point beats in both (lower is better), by latency."""
    order = sorted(range(len(points)), key=lambda i: points[i])
    front, best = [], float("inf")
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def plot_fid_vs_latency(rows: list[dict], path: str | Path, title: str, ylabel: str = "FID (classifier features)") -> None:
    """FID against per-image latency, both on log axes (FIDs span two decades), one point per method labelled
    "method (N steps)", and the Pareto front: the methods no other is both faster and better than.

    Builds a bare matplotlib Figure (Agg canvas) rather than using pyplot, so no global backend is set.
    """
    from matplotlib.figure import Figure   # imported here for the same reason as clean-fid above

    figure = Figure(figsize=(7.5, 4.8), layout="constrained")
    axes = figure.subplots()
    milliseconds = [1000.0 * row["seconds_per_image"] for row in rows]
    for row, latency in zip(rows, milliseconds):
        axes.plot([latency], [row["fid"]], marker="o", linestyle="none", label=row["method"])
        axes.annotate(f"{row['method']} ({row['steps']} steps)", (latency, row["fid"]), textcoords="offset points",
                      xytext=(4, 4), fontsize=8)
    front = pareto_front(list(zip(milliseconds, (row["fid"] for row in rows))))
    axes.step([milliseconds[i] for i in front], [rows[i]["fid"] for i in front], where="post", color="grey",
              linestyle="--", linewidth=1, label="Pareto front")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("latency per image (ms, log scale)")
    axes.set_ylabel(f"{ylabel}, log scale")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    with atomic_destination(path) as temporary_path:
        figure.savefig(temporary_path, format="png", dpi=120)
