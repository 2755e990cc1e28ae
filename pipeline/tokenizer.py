"""Stage `tokenizer`: one teacher's VQ tokenizer: k-means patches fitted on the train split (tokenizer.source:
train, the embedded default), or the published VQ autoencoder of a published teacher (tokenizer.source:
download; dd/presets.py has the URLs)."""
from dd.artifacts import Layout, load_images
from dd.checkpoint import fetch_published, save_json, save_torch
from dd.config import Config
from dd.presets import published
from dd.progress import progress_bar
from dd.teachers import preset_config
from dd.tokenizer import fit_tokenizer, tokenizer_metrics
from dd.vq_tokenizer import SIDECAR, build_tokenizer_model


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    return (download if config.tokenizer.source == "download" else fit)(config, layout, progress)


def fit(config: Config, layout: Layout, progress: bool = True) -> dict:
    train, test = load_images(layout, "train"), load_images(layout, "test")
    with progress_bar("tokenizer k-means", config.tokenizer.kmeans_iterations, enabled=progress) as advance:
        tokenizer = fit_tokenizer(train.images, config.tokenizer, progress=advance)
    save_torch(layout.tokenizer_dir / "tokenizer.pt", tokenizer.state_dict())
    metrics = tokenizer_metrics(tokenizer, test.images)
    save_json(layout.metrics_dir / "tokenizer.json", metrics)
    return metrics


def download(config: Config, layout: Layout, progress: bool = True) -> dict:
    """The published VQ weights, as published; tokenizer.json, written last, names them and the token grid."""
    spec = published(layout.teacher)
    url = config.tokenizer.url or spec.tokenizer_url
    model, teacher_config = build_tokenizer_model(spec.tokenizer_preset), preset_config(layout.teacher)
    codes = getattr(model.config, "codebook_size", None) or model.config.vocab_size
    if codes != teacher_config.vocab_size:
        raise ValueError(f"tokenizer preset {spec.tokenizer_preset} has {codes} codes but teacher {layout.teacher} "
                         f"predicts {teacher_config.vocab_size}: fix the tokenizer preset in dd/presets.py")
    (layout.tokenizer_dir / SIDECAR).unlink(missing_ok=True)          # until the new weights are verified
    meta = fetch_published(url, config.tokenizer.sha256, layout.tokenizer_dir, model, progress)
    grid_size = getattr(teacher_config, "grid_size", None)            # raster teachers; VAR grids are per scale
    metrics = {"source": "download", "preset": spec.tokenizer_preset, **meta}
    save_json(layout.metrics_dir / "tokenizer.json", metrics)
    save_json(layout.tokenizer_dir / SIDECAR, {**metrics, "grid_size": grid_size})
    return metrics
