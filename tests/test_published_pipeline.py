"""scripts/published_pipeline.py takes a published teacher of either family through every stage but evaluate:
here tiny presets published as the real ones are (file format, file:// download, strict load, paper recipe), so a
full-size run (on the CPU for var-d16, on the GPU through scripts/gpu_check.py) measures instead of debugging."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml

from dd.models.llamagen_vq import PRESETS as VQ_PRESETS
from dd.presets import PUBLISHED, Published
from tests.test_published import VQ_TEST

spec = importlib.util.spec_from_file_location("published_pipeline",
                                              Path(__file__).parents[1] / "scripts" / "published_pipeline.py")
published_pipeline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(published_pipeline)


@pytest.mark.parametrize("preset, family, tokenizer, recipe_of", [
    ("llamagen-tiny", "llamagen", "vq-test", "llamagen-b"), ("var-tiny", "var", "vae-tiny", "var-d16")])
def test_every_stage_runs_on_checkpoints_in_the_published_format(monkeypatch, preset, family, tokenizer, recipe_of):
    monkeypatch.setitem(VQ_PRESETS, "vq-test", VQ_TEST)
    paper_recipe = PUBLISHED[recipe_of].paper_recipe
    monkeypatch.setitem(PUBLISHED, preset, Published(family, f"https://hub.example/{preset}.pth", tokenizer,
                                                     f"https://hub.example/{tokenizer}.pth", paper_recipe))
    counts = published_pipeline.small_counts(num_pairs=8, student_steps=2, num_samples=8, batch_size=4)
    counts["student"]["train"]["compile"] = False            # ~60 s of compiling would dwarf two steps
    if family == "llamagen":                                  # llamagen-b's intermediate (80) and skip exceed 64 tokens
        counts["student"]["timesteps"], counts["sample"]["skip_tokens"] = [0, 32], 32
    report = published_pipeline.published_pipeline(preset, counts)

    assert list(report["stage_seconds"]) == list(published_pipeline.STAGES)
    assert report["recipe"] == paper_recipe["recipe"]         # the paper's recipe, carried by the preset
    # params.yaml's sections sit under it, as in `dvc repro`: its precision and learning rate, not the defaults.
    params_train = yaml.safe_load(published_pipeline.PARAMS.read_text())["student"]["train"]
    assert {key: report["student_train"][key] for key in ("precision", "learning_rate", "warmup_steps")} == {
        key: params_train[key] for key in ("precision", "learning_rate", "warmup_steps")}
    assert [row["step"] for row in report["student_log"]] == [1, 2]
    assert all(np.isfinite(row["train/loss"]) for row in report["student_log"])
    assert report["dd_images_shape"][0] == 8
    baselines = ["onestep", "skip"] if family == "llamagen" else ["onestep", "skip-1", "skip-2"]
    assert report["sample_methods"] == sorted([*baselines, "teacher", "teacher_reference"])
    assert sorted(key for key in report["latency"] if key.startswith("batch_")) == ["batch_1", "batch_4"]
    assert all(report["latency"][key]["dd"]["seconds_per_image"] > 0 for key in ("batch_1", "batch_4"))
    assert list(report["peak_rss_gib"]) == list(published_pipeline.STAGES)
