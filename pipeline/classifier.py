"""Stage `classifier`: the small CNN whose features FID, precision and recall are measured in."""
import dataclasses

from dd.checkpoint import save_json, save_weights
from dd.config import Config
from dd.evaluation import predict, train_classifier
from dd.layout import Layout, load_images


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    train = load_images(layout, "train")
    classifier = train_classifier(train, len(train.class_names), config.classifier, progress=progress)
    metrics = {}
    for split in ("validation", "test"):      # validation to choose its settings on; test reports
        images = load_images(layout, split)
        metrics[f"{split}_accuracy"] = float((predict(classifier, images.images)[1] == images.labels).mean())
    save_weights(layout.classifier_dir / "model.pt", classifier.state_dict(),
                 {"in_channels": int(train.images.shape[3]), "num_classes": len(train.class_names),
                  "config": dataclasses.asdict(config.classifier), **metrics})
    save_json(layout.metrics_root / "classifier.json", metrics)
    return metrics
