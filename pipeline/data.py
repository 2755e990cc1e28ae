"""Stage `data`: the train and test image splits, fitted to the working image size."""
from dd.artifacts import Layout
from dd.checkpoint import save_json
from dd.config import Config
from dd.data import load_dataset


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    # Reading the IDX files takes seconds: no progress bar to show.
    summary = {}
    for split in ("train", "test"):
        images = load_dataset(config.data.source, split, config.data.image_size, config.data.test_fraction,
                              config.data.seed)
        images.save(layout.dataset_dir / f"{split}.npz")
        summary[f"{split}_images"] = len(images)
    summary.update(num_classes=len(images.class_names), image_shape=list(images.images.shape[1:]))
    save_json(layout.metrics_root / "data.json", summary)
    return summary
