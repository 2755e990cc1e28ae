"""Stage `evaluate`: FID, fid_to_teacher, precision, recall, class accuracy and latency of every method.

Writes metrics/<teacher>/eval.json ({method: {...}}), one PNG grid of samples per method and a FID-vs-latency
plot. FID is clean-fid's Frechet distance in the features of the pipeline's own classifier (stage
`classifier`), against the held-out test split; numbers are comparable only with others in the same features.
"""
import dataclasses

from dd.artifacts import Layout, load_classifier, load_images, load_samples
from dd.checkpoint import load_json, save_json
from dd.config import Config
from dd.evaluation import image_metrics, plot_fid_vs_latency, predict, save_grid


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    classifier = load_classifier(layout)
    test = load_images(layout, "test")
    real_features, _ = predict(classifier, test.images)
    teacher_features, _ = predict(classifier, load_samples(layout.samples_dir / "teacher_reference.npz")["images"])
    latency = load_json(layout.metrics_dir / "latency.json")[f"batch_{config.evaluate.latency_batch_size}"]
    num_tokens = load_samples(layout.samples_dir / "teacher.npz")["tokens"].shape[1]
    steps = {"teacher": num_tokens, "dd": config.student.steps, "onestep": 1,
             "skip": num_tokens - config.sample.skip_tokens + 1, "reconstruction": 0}
    paths = {method: layout.samples_dir / f"{method}.npz" for method in steps}
    paths["dd"] = layout.dd_samples_dir / "dd.npz"

    table = {}
    for method, path in paths.items():
        samples = load_samples(path)
        metrics = image_metrics(classifier, samples["images"], samples["labels"], real_features, teacher_features,
                                k=config.evaluate.precision_recall_k)
        table[method] = {"steps": steps[method], **dataclasses.asdict(metrics), **latency.get(method, {})}
        side = int(config.evaluate.grid_samples**0.5)
        save_grid(samples["images"][:side * side], layout.metrics_dir / "grids" / f"{method}.png", num_columns=side)
        if progress:
            print(f"{method:>15}: FID {metrics.fid:7.2f}  to teacher {metrics.fid_to_teacher:7.2f}  "
                  f"precision {metrics.precision:.3f}  recall {metrics.recall:.3f}  accuracy {metrics.class_accuracy:.3f}")
    table["protocol"] = {"feature_extractor": f"dd classifier ({config.classifier.feature_dim}-d features)",
                         "reference": f"{config.data.source} test split ({len(test)} images)",
                         "fid_to_teacher_reference": "teacher samples through the flow map (the first N pairs), independent of the teacher row",
                         "latency_batch_size": config.evaluate.latency_batch_size}
    save_json(layout.metrics_dir / "eval.json", table)
    plot_fid_vs_latency([{"method": m, **table[m]} for m in ("teacher", "dd", "onestep", "skip")],
                        layout.metrics_dir / "fid_vs_latency.png", f"{layout.teacher}: FID vs latency "
                        f"(batch {config.evaluate.latency_batch_size}, CPU)")
    return table
