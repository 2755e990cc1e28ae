"""The evaluate stage on a fake stage layout (samples, latency.json, no trained models): the Inception path with
tests/test_inception.py's 64-d TorchScript stand-in for inception-2015-12-05.pt, and the classifier path's
eval.json format, which the committed metrics and `dd report` rely on."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import dd.inception as inception
from dd.checkpoint import save_json, save_weights
from dd.config import ClassifierConfig, config_from_dict
from dd.data import ImageSet
from dd.evaluation import FeatureClassifier
from dd.layout import Layout
from dd.teachers import preset_config
from pipeline import evaluate
from pipeline.sample import save_samples
from tests.test_inception import StandInInception

TEACHER = "llamagen-tiny"
METHODS = ("teacher", "dd", "onestep", "skip")
COUNT, SIZE, TOKENS = 30, 32, 16


def smooth_images(seed: int, count: int = COUNT) -> np.ndarray:
    """Blurry colour blobs: a structured distribution, unlike uniform noise."""
    coarse = np.random.default_rng(seed).integers(0, 256, (count, 4, 4, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(image).resize((SIZE, SIZE), Image.BICUBIC)) for image in coarse])


REAL = smooth_images(0)
IMAGES = {
    "teacher": REAL,                                                    # the reference images themselves
    "teacher_reference": smooth_images(1),
    "dd": smooth_images(2),
    "onestep": REAL // 4,                                               # visibly different: darkened
    "skip": np.random.default_rng(3).integers(0, 256, (COUNT, SIZE, SIZE, 3), dtype=np.uint8),   # noise
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = StandInInception()
    with torch.no_grad():
        model.layers[2].weight *= 30          # features of order 1, so FIDs read like real ones (1 to 1000s)
    path = tmp_path_factory.mktemp("inception") / "stand_in_inception.pt"
    torch.jit.script(model).save(str(path))
    return path


def fake_layout(root) -> Layout:
    """What the sample, sample_dd and latency stages leave for evaluate."""
    layout = Layout(teacher=TEACHER, data_root=root / "data", metrics_root=root / "metrics")
    labels = torch.arange(COUNT) % 3
    for method, images in IMAGES.items():
        folder = layout.dd_samples_dir if method == "dd" else layout.samples_dir
        save_samples(folder / f"{method}.npz", torch.zeros(COUNT, TOKENS, dtype=torch.long), labels, images)
    speeds = {"teacher": 1e-2, "dd": 1e-4, "onestep": 5e-5, "skip": 5e-3}
    batch = {method: {"seconds_per_image": value, "speedup": speeds["teacher"] / value} for method, value in speeds.items()}
    save_json(layout.metrics_dir / "latency.json", {"threads": 1, "device": "cpu", "student_steps": 1, "batch_8": batch})
    return layout


def with_test_split(layout: Layout) -> Layout:
    """The data stage's test (and validation) split and the sample stage's reconstructions of it (the floor row)."""
    for split in ("test", "validation"):
        ImageSet(REAL, np.arange(COUNT) % 3, ("a", "b", "c")).save(layout.dataset_dir / f"{split}.npz")
    save_samples(layout.samples_dir / "reconstruction.npz", torch.zeros(COUNT, TOKENS, dtype=torch.long),
                 torch.arange(COUNT) % 3, IMAGES["dd"])
    return layout


def config(tokenizer_source="train", **evaluate_params):
    return config_from_dict({"sample": {"skip_tokens": 4}, "tokenizer": {"source": tokenizer_source},
                             "latency": {"batch_sizes": [1, 8]},
                             "evaluate": {"grid_samples": 16, "latency_batch_size": 8, **evaluate_params}})


def inception_config(reference, weights, tokenizer_source="train"):
    return config(tokenizer_source, extractor="inception", reference=str(reference), inception_weights=str(weights))


def reference_npz(path, weights):
    mu, sigma = inception.statistics(inception.inception_outputs(inception.load_inception(weights), REAL)[0])
    np.savez(path, mu=mu, sigma=sigma)
    return path


def reference_folder(path):
    path.mkdir()
    for i, image in enumerate(REAL):
        Image.fromarray(image).save(path / f"{i:03d}.png")
    return path


@pytest.mark.parametrize("floorless", ["no local data set", "published tokenizer"])
def test_inception_against_reference_statistics(tmp_path, weights, floorless):
    layout = fake_layout(tmp_path)
    if floorless == "published tokenizer":      # the data stage ran, but the sample stage wrote no floor
        ImageSet(REAL, np.arange(COUNT) % 3, ("a", "b", "c")).save(layout.dataset_dir / "test.npz")
    reference = reference_npz(tmp_path / "reference.npz", weights)
    tokenizer_source = "download" if floorless == "published tokenizer" else "train"
    evaluate.run(inception_config(reference, weights, tokenizer_source), layout, progress=False)

    table = json.loads((layout.metrics_dir / "eval.json").read_text())
    assert set(table) == {*METHODS, "protocol"}                # no reconstruction row
    for method in METHODS:
        row = table[method]
        assert all(isinstance(row[key], float) for key in ("fid", "fid_to_teacher", "inception_score")), method
        assert row["extractor"] == inception.EXTRACTOR and row["reference"] == str(reference)
        assert row["num_samples"] == COUNT
        # An .npz holds statistics only: no features for precision/recall; Inception classes are not ours.
        assert row["precision"] is None and row["recall"] is None and row["class_accuracy"] is None
        assert row["seconds_per_image"] > 0 and "speedup" in row
    assert abs(table["teacher"]["fid"]) < 1e-3                     # the reference images themselves
    # Darkened images and noise lie further from the reference than another draw of the same distribution.
    assert min(table["onestep"]["fid"], table["skip"]["fid"]) > 3 * table["dd"]["fid"] > 0
    assert table["teacher"]["fid_to_teacher"] > 0                  # against a second, independent teacher draw
    # steps count the preset's own tokens (the fake samples here hold fewer)
    assert (table["teacher"]["steps"], table["dd"]["steps"], table["onestep"]["steps"]) == \
        (preset_config(TEACHER).num_image_tokens, 1, 1)
    protocol = table["protocol"]
    assert protocol["feature_extractor"] == inception.EXTRACTOR and protocol["reference"] == str(reference)
    assert str(inception.IS_SPLITS) in protocol["inception_score"] and "class_accuracy" in protocol
    assert (layout.metrics_dir / "grids" / "skip.png").exists()
    assert (layout.metrics_dir / "fid_vs_latency.png").exists()


def test_inception_against_a_folder_gives_precision_recall_and_a_reconstruction_row(tmp_path, weights):
    # A local data set and tokenizer (the embedded default measured in Inception features): a floor row.
    layout = with_test_split(fake_layout(tmp_path))
    reference = reference_folder(tmp_path / "reference")
    evaluate.run(inception_config(reference, weights), layout, progress=False)

    table = json.loads((layout.metrics_dir / "eval.json").read_text())
    assert set(table) == {*METHODS, "reconstruction", "protocol"}
    for method in (*METHODS, "reconstruction"):
        assert isinstance(table[method]["precision"], float) and isinstance(table[method]["recall"], float), method
    assert table["teacher"]["precision"] == 1.0 and table["teacher"]["recall"] == 1.0
    assert abs(table["teacher"]["fid"]) < 1e-3 and table["onestep"]["fid"] > 3 * table["dd"]["fid"]
    # The folder gives the same statistics as the .npz computed from the same images.
    npz = reference_npz(tmp_path / "reference.npz", weights)
    assert table["skip"]["fid"] == pytest.approx(
        inception.inception_metrics(inception.load_inception(weights), IMAGES["skip"], npz)["fid"], rel=1e-6)


def test_a_missing_reference_names_the_params_key(tmp_path, weights):
    layout = fake_layout(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"evaluate.reference.*overrides.{TEACHER}.evaluate.reference"):
        evaluate.run(inception_config(tmp_path / "nowhere.npz", weights), layout, progress=False)
    assert not (layout.metrics_dir / "eval.json").exists()


def test_the_classifier_path_keeps_its_eval_json_format(tmp_path):
    layout = with_test_split(fake_layout(tmp_path))
    tiny = ClassifierConfig(channels=4, feature_dim=8)
    torch.manual_seed(0)
    save_weights(layout.classifier_dir / "model.pt", FeatureClassifier(3, 3, tiny).eval().state_dict(),
                 {"in_channels": 3, "num_classes": 3, "config": tiny.__dict__})
    evaluate.run(config(), layout, progress=False)

    table = json.loads((layout.metrics_dir / "eval.json").read_text())
    assert set(table) == {*METHODS, "reconstruction", "protocol"}
    for method in METHODS:
        assert set(table[method]) == {"steps", "fid", "validation_fid", "fid_to_teacher", "precision", "recall",
                                      "class_accuracy", "num_samples", "seconds_per_image", "speedup"}, method
        assert all(isinstance(value, (int, float)) for value in table[method].values()), method
    assert set(table["reconstruction"]) == {"steps", "fid", "validation_fid", "fid_to_teacher", "precision", "recall",
                                            "class_accuracy", "num_samples"}
    assert set(table["protocol"]) == {"feature_extractor", "reference", "validation_reference",
                                      "fid_to_teacher_reference", "teacher_reference", "latency_batch_size"}
    assert table["protocol"]["teacher_reference"] == {"num_samples": COUNT, "sampler": "teacher", "seed": 3}
    assert table["protocol"]["feature_extractor"].startswith("dd classifier")
