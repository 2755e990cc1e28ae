"""Published teachers through the pipeline: the paper recipe a preset carries and its overrides, and the
teacher and tokenizer stages with source: download against a local server that serves checkpoints in the
published formats (random weights; the full-size files are in test_download's slow test)."""
import json

import pytest
import torch
import yaml

import pipeline.teacher
import pipeline.tokenizer
from dd.artifacts import load_frozen_teacher, load_tokenizer
from dd.config import ConfigError, config_from_dict, load_config, resolve
from dd.download import ChecksumError, DownloadError
from dd.layout import Layout
from dd.models.llamagen import GPT, PRESETS as LLAMAGEN_PRESETS
from dd.models.llamagen_vq import PRESETS as VQ_PRESETS, VQConfig, VQModel
from dd.presets import PUBLISHED, Published
from dd.raster.vq_tokenizer import VQTokenizer
from dd.training import read_log
from tests.test_download import checkpoint_bytes, hub, serve  # noqa: F401  (hub is a fixture)

# A VQ with llamagen-tiny's vocabulary (256 codes of dimension 8) and VQ-16's structure, small for a CPU.
VQ_TEST = VQConfig(codebook_size=256, codebook_embed_dim=8, z_channels=32, ch=32, ch_mult=(1, 1, 1, 1, 2),
                   num_res_blocks=1)


# ---- params: the paper recipe and overrides ---------------------------------------------------------------

def test_a_published_teacher_runs_the_paper_recipe_unless_overridden():
    params = yaml.safe_load(open("params.yaml"))
    params["overrides"] = {"llamagen-b": {"evaluate": {"reference": "ref.npz"}, "recipe": {"cfg_scale": 3}}}
    config = resolve(params, "llamagen-b")
    assert (config.teacher.source, config.tokenizer.source) == ("download", "download")
    assert (config.recipe.cfg_scale, config.recipe.top_k) == (3.0, 8000)       # override over the paper's 2.0
    assert (config.sample.num_samples, config.sample.labels, config.evaluate.extractor) == (50_000, "uniform", "inception")
    assert config.student.timesteps == (0, 80) and config.pairs.num_pairs == 1_200_000
    assert config.student.train == resolve(params).student.train                 # unset by the recipe: the file's
    tiny = resolve(params, "llamagen-tiny")                                       # the embedded default: the file alone
    assert (tiny.recipe.cfg_scale, tiny.teacher.source, tiny.evaluate.extractor) == (1.5, "train", "classifier")


def test_bad_overrides_name_the_key(tmp_path):
    params = yaml.safe_load(open("params.yaml"))
    params["overrides"] = {"llamagen-b": {"recipe": {"cfg": 3.0}}}
    with pytest.raises(ConfigError, match=r"recipe\.cfg.*overrides\.llamagen-b"):
        resolve(params, "llamagen-b")
    params["overrides"] = {"llamagen-b": {"evaluate": {"reference": "r.npz"}, "latency": {"batch_sizes": [1, 4]}}}
    with pytest.raises(ConfigError, match="evaluate.latency_batch_size.*latency.batch_sizes"):
        resolve(params, "llamagen-b")
    params["overrides"] = {"llamagen-b": {"teachers": ["x"]}}
    with pytest.raises(ConfigError, match="overrides.llamagen-b.teachers"):
        resolve(params, "llamagen-b")


def test_a_listed_published_teacher_without_reference_statistics_fails_on_load(tmp_path):
    params = yaml.safe_load(open("params.yaml"))
    params["teachers"] = ["llamagen-tiny", "llamagen-b"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="evaluate.reference"):
        load_config(path)                      # even for a shared stage: every listed teacher is validated
    params["overrides"] = {"llamagen-b": {"evaluate": {"reference": "ref.npz"}}}
    path.write_text(yaml.safe_dump(params))
    assert load_config(path, "llamagen-b").evaluate.reference == "ref.npz"


# ---- the teacher and tokenizer stages with source: download -------------------------------------------

@pytest.fixture
def published_tiny(hub, monkeypatch, tmp_path):
    """llamagen-tiny published on the local hub with a VQ of its vocabulary, as PUBLISHED would list it."""
    torch.manual_seed(0)
    teacher_weights = GPT(LLAMAGEN_PRESETS["llamagen-tiny"]).state_dict()
    vq_weights = VQModel(VQ_TEST).state_dict()
    teacher_url, teacher_sha = serve(hub, "c2i_tiny.pt", checkpoint_bytes({"model": teacher_weights}))
    vq_url, vq_sha = serve(hub, "vq_tiny.pt", checkpoint_bytes({"model": vq_weights}))
    monkeypatch.setitem(VQ_PRESETS, "vq-test", VQ_TEST)
    monkeypatch.setitem(PUBLISHED, "llamagen-tiny", Published("llamagen", teacher_url, "vq-test", vq_url, {}))
    layout = Layout("llamagen-tiny", data_root=tmp_path / "data", metrics_root=tmp_path / "metrics")
    return {"layout": layout, "teacher": teacher_weights, "teacher_sha": teacher_sha, "vq_sha": vq_sha, "hub": hub}


def download_config(**teacher) -> object:
    return config_from_dict({"teacher": {"source": "download", **teacher}, "tokenizer": {"source": "download"}})


def test_download_stages_fetch_verify_and_hand_later_stages_the_published_models(published_tiny):
    layout = published_tiny["layout"]
    tokenizer_metrics = pipeline.tokenizer.run(download_config(), layout, progress=False)
    teacher_metrics = pipeline.teacher.run(download_config(sha256=published_tiny["teacher_sha"]), layout, progress=False)

    assert teacher_metrics["sha256"] == published_tiny["teacher_sha"] and tokenizer_metrics["sha256"] == published_tiny["vq_sha"]
    assert json.loads((layout.metrics_dir / "teacher.json").read_text())["url"].endswith("/c2i_tiny.pt")
    assert read_log(layout.metrics_dir / "teacher_log.json") == []           # declared in dvc.yaml; nothing trained
    teacher = load_frozen_teacher(layout)
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in published_tiny["teacher"].items())

    tokenizer = load_tokenizer(layout)
    assert isinstance(tokenizer, VQTokenizer)
    assert tokenizer.codebook.shape == (256, 8) and torch.allclose(tokenizer.codebook.norm(dim=-1), torch.ones(256))
    assert (tokenizer.num_tokens, tokenizer.image_size) == (64, 128)
    tokens = torch.randint(256, (2, 64), generator=torch.Generator().manual_seed(1))
    images = tokenizer.decode(tokens)
    assert images.shape == (2, 128, 128, 3) and images.dtype.name == "uint8"
    assert tokenizer.encode(images).shape == (2, 64)

    # A rerun finds the verified files and downloads nothing.
    requests = len(published_tiny["hub"].ranges)
    pipeline.teacher.run(download_config(sha256=published_tiny["teacher_sha"]), layout, progress=False)
    assert len(published_tiny["hub"].ranges) == requests


def test_a_wrong_checksum_leaves_nothing_a_later_stage_would_take(published_tiny):
    layout = published_tiny["layout"]
    layout.teacher_dir.mkdir(parents=True)
    (layout.teacher_dir / "model.json").write_text('{"preset": "llamagen-tiny"}')   # an older trained teacher's
    with pytest.raises(ChecksumError, match="sha256"):
        pipeline.teacher.run(download_config(sha256="0" * 64), layout, progress=False)
    assert sorted(p.name for p in layout.teacher_dir.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="model.json"):
        load_frozen_teacher(layout)


def test_a_wrong_url_or_a_checkpoint_of_another_model_is_a_clear_error(published_tiny, hub):
    layout = published_tiny["layout"]
    with pytest.raises(DownloadError, match="teacher.url"):
        pipeline.teacher.run(download_config(url=f"{hub.url}/missing.pt"), layout, progress=False)
    url, _ = serve(hub, "vq_as_teacher.pt", checkpoint_bytes({"model": VQModel(VQ_TEST).state_dict()}))
    with pytest.raises(ValueError, match="does not fit the GPT preset"):
        pipeline.teacher.run(download_config(url=url), layout, progress=False)
    assert not (layout.teacher_dir / "model.json").exists()


def test_a_teacher_without_a_published_checkpoint_says_which_have_one(tmp_path):
    layout = Layout("llamagen-tiny", data_root=tmp_path / "data", metrics_root=tmp_path / "metrics")
    with pytest.raises(ValueError, match="published teachers: llamagen-b"):
        pipeline.teacher.run(download_config(), layout, progress=False)
