"""Stage `data`: the train, validation and test image splits, fitted to the working image size.

Validation is held out of the source's train split (data.validation_fraction of each class): settings are
chosen on it, and the test split only reports (README)."""
from dd.checkpoint import save_json
from dd.config import Config
from dd.data import load_splits
from dd.layout import Layout


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    # Reading the IDX files takes seconds: no progress bar to show.
    data = config.data
    splits = load_splits(data.source, data.image_size, data.test_fraction, data.validation_fraction, data.seed)
    for split, images in splits.items():
        images.save(layout.dataset_dir / f"{split}.npz")
    summary = {f"{split}_images": len(images) for split, images in splits.items()}
    summary.update(num_classes=len(images.class_names), image_shape=list(images.images.shape[1:]))
    save_json(layout.metrics_root / "data.json", summary)
    return summary
