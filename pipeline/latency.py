"""Stage `latency`: seconds per image of every method at each benchmark batch size, in one run."""
import torch

from dd.artifacts import load_tokenizer, teacher_classes
from dd.checkpoint import save_json
from dd.config import Config
from dd.device import compute_device
from dd.fast_path import fast_path_mode, fast_samplers
from dd.latency import time_methods
from dd.layout import Layout
from dd.pairs import read_pairs
from pipeline.sample import baseline_samplers
from pipeline.sample_dd import dd_samplers


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    if config.latency.threads:
        torch.set_num_threads(config.latency.threads)
    device = compute_device()
    tokenizer = load_tokenizer(layout, device)
    pairs = read_pairs(layout.pairs_dir)
    samplers = fast_samplers({**baseline_samplers(config, layout, pairs.tokens, pairs.labels),
                              **dd_samplers(config, layout)}, config.sample, device)
    results = {"threads": torch.get_num_threads(), "device": device.type, "student_steps": config.student.steps,
               **fast_path_mode(config.sample, device)}
    for batch_size in config.latency.batch_sizes:
        seconds = time_methods(samplers, tokenizer.decode, batch_size, tokenizer.num_tokens,
                               tokenizer.codebook.shape[1], teacher_classes(layout), config.latency.repeats, device)
        results[f"batch_{batch_size}"] = {
            name: {"seconds_per_image": value, "speedup": seconds["teacher"] / value} for name, value in seconds.items()}
        if progress:
            print(f"batch {batch_size}: " + ", ".join(f"{name} {1000 * value:.3f} ms/img" for name, value in seconds.items()))
    save_json(layout.metrics_dir / "latency.json", results)
    return results
