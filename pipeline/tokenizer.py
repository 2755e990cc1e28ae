"""Stage `tokenizer`: the VQ codebook of one teacher, fitted on the train split."""
from dd.artifacts import Layout, load_images
from dd.checkpoint import save_json, save_torch
from dd.config import Config
from dd.progress import progress_bar
from dd.tokenizer import fit_tokenizer, tokenizer_metrics


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    train, test = load_images(layout, "train"), load_images(layout, "test")
    with progress_bar("tokenizer k-means", config.tokenizer.kmeans_iterations, enabled=progress) as advance:
        tokenizer = fit_tokenizer(train.images, config.tokenizer, progress=advance)
    save_torch(layout.tokenizer_dir / "tokenizer.pt", tokenizer.state_dict())
    metrics = tokenizer_metrics(tokenizer, test.images)
    save_json(layout.metrics_dir / "tokenizer.json", metrics)
    return metrics
