"""Stage `classifier`: the small CNN whose features FID, precision and recall are measured in."""
import dataclasses

from dd.artifacts import Layout, load_images
from dd.checkpoint import save_json, save_weights
from dd.config import Config
from dd.evaluation import predict, train_classifier


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    train, test = load_images(layout, "train"), load_images(layout, "test")
    classifier = train_classifier(train, len(train.class_names), config.classifier, progress=progress)
    _, predicted = predict(classifier, test.images)
    metrics = {"test_accuracy": float((predicted == test.labels).mean())}
    save_weights(layout.classifier_dir / "model.pt", classifier.state_dict(),
                 {"in_channels": int(train.images.shape[3]), "num_classes": len(train.class_names),
                  "config": dataclasses.asdict(config.classifier), **metrics})
    save_json(layout.metrics_root / "classifier.json", metrics)
    return metrics
