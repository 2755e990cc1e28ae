"""Stage `evaluate`: FID, fid_to_teacher, precision, recall, class accuracy and latency of every method.

Writes metrics/<teacher>/eval.json ({method: {...}, "protocol": {...}}), one PNG grid of samples per method and
a FID-vs-latency plot. params `evaluate.extractor` picks the features every number is measured in:

- "classifier" (the embedded default): the pipeline's own classifier (stage `classifier`), against the held-out
  test split (`fid`, precision, recall: the reported figures) and the validation split (`validation_fid`: the one
  settings are chosen on). Offline, and meaningful for 32 px greyscale data; comparable only with numbers in the
  same features.
- "inception" (published 256 px ImageNet teachers): clean-fid's Inception (dd/inception.py), against the
  reference named in `evaluate.reference`; adds Inception Score. Comparable with published FIDs only as far as
  the reference and the extractor are the same, so every row records both, and its sample count.

fid_to_teacher is measured against teacher_reference, a second set of teacher samples of its own seed
(pipeline/sample.py), so the teacher row's own value is a real distance between two draws rather than zero, and
no method, DD included, is measured against samples it shares noise with or was trained on.
"""
import dataclasses
from collections.abc import Callable
from pathlib import Path

from dd import inception
from dd.checkpoint import load_json, save_json
from dd.config import Config
from dd.device import compute_device
from dd.evaluation import (first_of_each_class, image_metrics, load_classifier, plot_fid_vs_latency, precision_recall,
                           predict, save_comparison, save_grid)
from dd.families.sampling import sampling_family
from dd.layout import Layout, load_images, load_samples
from dd.teachers import preset_config
from pipeline.sample_dd import distilled_steps

# Measures one method's samples ({"images", "labels", ...}) into its eval.json row.
Measure = Callable[[dict], dict]


def classifier_measure(config: Config, layout: Layout, teacher_reference: dict) -> tuple[Measure, dict]:
    classifier = load_classifier(layout.classifier_dir)
    test, validation = load_images(layout, "test"), load_images(layout, "validation")
    real_features, validation_features = predict(classifier, test.images)[0], predict(classifier, validation.images)[0]
    teacher_features, _ = predict(classifier, teacher_reference["images"])

    def measure(samples: dict) -> dict:
        return dataclasses.asdict(image_metrics(classifier, samples["images"], samples["labels"], real_features,
                                                teacher_features, k=config.evaluate.precision_recall_k,
                                                validation_features=validation_features))

    protocol = {"feature_extractor": f"dd classifier ({config.classifier.feature_dim}-d features)",
                "reference": f"{config.data.source} test split ({len(test)} images)",
                "validation_reference": f"{config.data.source} validation split ({len(validation)} images, held out "
                                        "of the train split): validation_fid, the figure settings are chosen on"}
    return measure, protocol


def inception_measure(config: Config, layout: Layout, teacher_reference: dict) -> tuple[Measure, dict]:
    reference_path = config.evaluate.reference
    if not reference_path or not Path(reference_path).exists():
        raise FileNotFoundError(
            f"evaluate.reference: {reference_path!r} not found. Set evaluate.reference (or "
            f"overrides.{layout.teacher}.evaluate.reference) in params.yaml to an .npz holding the Inception feature "
            "mean `mu` and covariance `sigma`, such as the ADM evaluator's VIRTUAL_imagenet256_labeled.npz, or to a "
            "folder of reference images (precision/recall need the folder)")
    device = compute_device()
    model = inception.load_inception(config.evaluate.inception_weights or None, device)
    # Once for all methods: a folder of 50k reference images is minutes of Inception even on a GPU.
    reference = inception.load_reference(reference_path, model, device)
    teacher_features, _ = inception.inception_outputs(model, teacher_reference["images"], device=device)
    teacher_statistics = inception.statistics(teacher_features)

    def measure(samples: dict) -> dict:
        features, probabilities = inception.inception_outputs(model, samples["images"], device=device)
        own = inception.statistics(features)
        precision, recall = (None, None) if reference.features is None else \
            precision_recall(reference.features, features, k=config.evaluate.precision_recall_k)
        score, score_std = inception.inception_score(probabilities)
        return {"fid": inception.frechet_distance(own, reference.statistics), "validation_fid": None,
                "fid_to_teacher": inception.frechet_distance(own, teacher_statistics),
                "precision": precision, "recall": recall, "class_accuracy": None,
                "inception_score": score, "inception_score_std": score_std, "num_samples": len(features),
                "extractor": inception.EXTRACTOR, "reference": reference_path}

    protocol = {
        "feature_extractor": inception.EXTRACTOR,
        "reference": reference_path,
        "inception_score": f"{inception.IS_SPLITS} splits (mean and std over equal parts of each method's samples)",
        "precision_recall": ("null: the reference is an .npz of statistics, without the features the k-NN balls need"
                             if reference.features is None else
                             f"k = {config.evaluate.precision_recall_k} nearest neighbours in Inception features"),
        "class_accuracy": "null: Inception's 1008 TensorFlow classes are not the teacher's label order",
        "validation_reference": "null: a published teacher's reference statistics have no validation split",
    }
    return measure, protocol


EXTRACTORS = {"classifier": classifier_measure, "inception": inception_measure}


# comparison.png: the same classes from the teacher, DD1 and DD2 (those trained) and onestep, side by side (the
# first classes only, for a teacher of many).
COMPARED, COMPARISON_CLASSES, COMPARISON_PER_CLASS = ("teacher", "dd", "dd2", "onestep"), 10, 4
# What the progress line shows, where a row has it (null under Inception: class accuracy, and precision/recall
# against an .npz reference).
PRINTED = (("FID", "fid", "7.2f"), ("validation", "validation_fid", "7.2f"), ("to teacher", "fid_to_teacher", "7.2f"),
           ("IS", "inception_score", "6.2f"),
           ("precision", "precision", ".3f"), ("recall", "recall", ".3f"), ("accuracy", "class_accuracy", ".3f"))


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    reference = load_samples(layout.samples_dir / "teacher_reference.npz")
    measure, protocol = EXTRACTORS[config.evaluate.extractor](config, layout, reference)
    timings = load_json(layout.metrics_dir / "latency.json")
    latency = timings[f"batch_{config.evaluate.latency_batch_size}"]
    family = sampling_family(layout.teacher)
    baselines, distilled = family.steps(config, preset_config(layout.teacher)), distilled_steps(config)
    # Rows in the order of the results table: the teacher, every distilled row (DD1's, DD2's), the baselines.
    steps = {"teacher": baselines.pop("teacher"), **distilled, **baselines}
    paths = {method: (layout.dd_samples_dir if method in distilled else layout.samples_dir) / f"{method}.npz"
             for method in steps}
    # The floor row: the local test split through a tokenizer fitted on it. A published teacher's tokenizer
    # (ImageNet, 256 px) has no local data set to reconstruct, so pipeline/sample.py writes no such file.
    if config.tokenizer.source == "download" or not (layout.dataset_dir / "test.npz").exists():
        del paths["reconstruction"]

    fid = "Inception FID" if config.evaluate.extractor == "inception" else "FID"
    table, compared = {}, {}
    num_classes = min(COMPARISON_CLASSES, preset_config(layout.teacher).num_classes)
    for method, path in paths.items():
        samples = load_samples(path)     # one method at a time: 50k images at 256 px are ~10 GB
        row = table[method] = {"steps": steps[method], **measure(samples), **latency.get(method, {})}
        label = f"{method}, {row['steps']} steps, {fid} {row['fid']:.2f}"
        side = int(config.evaluate.grid_samples**0.5)
        save_grid(samples["images"][:side * side], layout.metrics_dir / "grids" / f"{method}.png", num_columns=side,
                  title=f"{layout.teacher}: {label}")
        if method in COMPARED:
            compared[label] = first_of_each_class(samples, num_classes, COMPARISON_PER_CLASS)["images"]
        if progress:
            print(f"{method:>15}: " + "  ".join(f"{name} {table[method][key]:{form}}" for name, key, form in PRINTED
                                                if table[method].get(key) is not None))
    if family.HEADLINE_SKIP != "skip":
        # The evaluation contract's `skip` row (a raster teacher's own): for a next-scale teacher the paper's
        # headline skip baseline, skip-1, repeated under that name and marked, so `dd report` prints it once.
        table["skip"] = {**table[family.HEADLINE_SKIP], "same_as": family.HEADLINE_SKIP}
    table["protocol"] = {**protocol,
                         "fid_to_teacher_reference": f"{len(reference['labels'])} teacher samples of their own seed "
                                                     f"(sample.reference_seed {config.sample.reference_seed}): no "
                                                     "method's samples share their noise and no student trained on them",
                         "teacher_reference": {"num_samples": len(reference["labels"]), "sampler": "teacher",
                                               "seed": config.sample.reference_seed},
                         "latency_batch_size": config.evaluate.latency_batch_size}
    save_json(layout.metrics_dir / "eval.json", table)
    save_comparison(compared, layout.metrics_dir / "comparison.png", COMPARISON_PER_CLASS)
    plot_fid_vs_latency([{"method": m, **table[m]} for m in steps if m != "reconstruction"],
                        layout.metrics_dir / "fid_vs_latency.png", f"{layout.teacher}: {fid} vs latency "
                        f"(batch {config.evaluate.latency_batch_size}, {timings.get('device', 'cpu').upper()})",
                        f"{fid} ({protocol['feature_extractor']})")
    return table
