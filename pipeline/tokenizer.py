"""Stage `tokenizer`: one teacher's VQ tokenizer, made here from the train split (tokenizer.source: train) or
the published VQ autoencoder of a published teacher (tokenizer.source: download; dd/presets.py has the URLs).

Made here, per teacher family: k-means patches for a raster (LlamaGen) teacher, the embedded default
llamagen-tiny; VAR's multi-scale VQVAE, trained with the training loop (overrides.<teacher>.vqvae; rerun to
resume), for a next-scale teacher such as var-tiny.
"""
import torch

from dd.artifacts import compute_device
from dd.checkpoint import fetch_published, file_sha256, save_json, save_torch, save_weights
from dd.config import Config
from dd.layout import Layout, load_images
from dd.models.var_vqvae import PRESETS as VQVAE_PRESETS, VQVAEConfig
from dd.presets import published
from dd.progress import progress_bar
from dd.provenance import record, stage_entry
from dd.teachers import family, preset_config
from dd.tokenizer import fit_tokenizer, tokenizer_metrics
from dd.var_tokenizer import MultiScaleTokenizer, scale_usage, train_vqvae
from dd.vq_tokenizer import SIDECAR, build_tokenizer_model


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    if config.tokenizer.source == "download":
        return download(config, layout, progress)
    return {"llamagen": fit, "var": vqvae}[family(layout.teacher)](config, layout, progress)


def fit(config: Config, layout: Layout, progress: bool = True) -> dict:
    """k-means patches (tokenizer.*), for a raster teacher."""
    train, test = load_images(layout, "train"), load_images(layout, "test")
    (layout.tokenizer_dir / SIDECAR).unlink(missing_ok=True)          # a downloaded VQ's, which would load instead
    with progress_bar("tokenizer k-means", config.tokenizer.kmeans_iterations, enabled=progress) as advance:
        tokenizer = fit_tokenizer(train.images, config.tokenizer, progress=advance)
    save_torch(layout.tokenizer_dir / "tokenizer.pt", tokenizer.state_dict())
    metrics = tokenizer_metrics(tokenizer, test.images)
    save_json(layout.metrics_dir / "tokenizer.json", metrics)
    return metrics


def _checked_vqvae_config(preset: str, teacher: str, image_shape: tuple[int, ...]) -> VQVAEConfig:
    """vqvae.preset's architecture, if its codes and scales are the teacher's and it takes the data's images."""
    if preset not in VQVAE_PRESETS:
        raise ValueError(f"vqvae.preset {preset!r} is not a VQVAE preset: {', '.join(VQVAE_PRESETS)}")
    vqvae_config = VQVAE_PRESETS[preset]
    made, read = [(c.vocab_size, c.code_dim, c.patch_nums) for c in (vqvae_config, preset_config(teacher))]
    if made != read:
        raise ValueError(f"vqvae.preset {preset} makes (codes, code dim, scales) {made} but teacher {teacher} "
                         f"reads {read}: name the VQVAE preset built for it")
    if image_shape != (vqvae_config.image_size, vqvae_config.image_size, vqvae_config.in_channels):
        raise ValueError(f"vqvae.preset {preset} takes {vqvae_config.image_size} px images with "
                         f"{vqvae_config.in_channels} channels; the data stage made {image_shape}")
    return vqvae_config


def vqvae(config: Config, layout: Layout, progress: bool = True) -> dict:
    """VAR's multi-scale VQVAE (vqvae.*), for a next-scale teacher; saved as a published one is (tokenizer.json)."""
    train_set, test = load_images(layout, "train"), load_images(layout, "test")
    preset = config.vqvae.preset
    vqvae_config = _checked_vqvae_config(preset, layout.teacher, train_set.images.shape[1:])
    (layout.tokenizer_dir / SIDECAR).unlink(missing_ok=True)          # until the new weights are saved
    # A checkpoint is resumed only under the same params, preset architecture, training images and code.
    provenance = record(stage_entry("tokenizer"), config.vqvae, config.data, layout.teacher, vqvae_config,
                        file_sha256(layout.dataset_dir / "train.npz"))
    trained = train_vqvae(vqvae_config, torch.from_numpy(train_set.images), config.vqvae.train,
                          config.vqvae.commitment, config.vqvae.seed, layout.tokenizer_dir,
                          layout.tokenizer_dir / "train_log.jsonl", provenance, f"tokenizer {layout.teacher}",
                          progress, compute_device())
    tokenizer = MultiScaleTokenizer(trained)
    test_tokens = tokenizer.encode(test.images)
    metrics = {**tokenizer_metrics(tokenizer, test.images, test_tokens), **scale_usage(tokenizer, test_tokens)}
    # tokenizer.json, written last beside the weights, is what load_tokenizer looks for (as for a published VQ).
    save_weights(layout.tokenizer_dir / "tokenizer.pt", trained.state_dict(),
                 {"source": "train", "preset": preset, "weights": "tokenizer.pt", "grid_size": None,
                  "train_steps": config.vqvae.train.train_steps, **metrics})
    save_json(layout.metrics_dir / "tokenizer.json", metrics)
    return metrics


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
