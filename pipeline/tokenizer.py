"""Stage `tokenizer`: one teacher's VQ tokenizer, made here from the train split (tokenizer.source: train) or
the published VQ autoencoder of a published teacher (tokenizer.source: download; dd/presets.py has the URLs).

Made here by the teacher's family (make_tokenizer): k-means patches for a raster (LlamaGen) teacher, the embedded
default llamagen-tiny (dd/raster/tokenizer.py); VAR's multi-scale VQVAE, trained with the training loop
(overrides.<teacher>.vqvae; rerun to resume), for a next-scale teacher such as var-tiny (dd/next_scale/tokenizer.py).
"""
import torch

from dd.checkpoint import fetch_published, save_json
from dd.config import Config
from dd.families.tokenizer import tokenizer_family
from dd.layout import Layout
from dd.presets import published
from dd.teachers import preset_config
from dd.tokenizers import SIDECAR, build_tokenizer_model


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    if config.tokenizer.source == "download":
        return download(config, layout, progress)
    return tokenizer_family(layout.teacher).make_tokenizer(config, layout, progress)


def download(config: Config, layout: Layout, progress: bool = True) -> dict:
    """The published VQ weights, as published; tokenizer.json, written last, names them and the token grid."""
    spec = published(layout.teacher)
    url = config.tokenizer.url or spec.tokenizer_url
    with torch.device("meta"):                                        # its config, no weights
        model = build_tokenizer_model(spec.tokenizer_preset)
    teacher_config = preset_config(layout.teacher)
    codes = getattr(model.config, "codebook_size", None) or model.config.vocab_size
    if codes != teacher_config.vocab_size:
        raise ValueError(f"tokenizer preset {spec.tokenizer_preset} has {codes} codes but teacher {layout.teacher} "
                         f"predicts {teacher_config.vocab_size}: fix the tokenizer preset in dd/presets.py")
    (layout.tokenizer_dir / SIDECAR).unlink(missing_ok=True)          # until the new weights are verified
    meta = fetch_published(url, config.tokenizer.sha256, layout.tokenizer_dir,
                           lambda: build_tokenizer_model(spec.tokenizer_preset), progress)
    grid_size = getattr(teacher_config, "grid_size", None)            # raster teachers; VAR grids are per scale
    metrics = {"source": "download", "preset": spec.tokenizer_preset, **meta}
    save_json(layout.metrics_dir / "tokenizer.json", metrics)
    save_json(layout.tokenizer_dir / SIDECAR, {**metrics, "grid_size": grid_size})
    return metrics
