"""Stage `pairs`: the DD pair dataset, (noise, tokens, class) from the teacher's flow map, as webdataset shards.

The map from noise to tokens is the teacher's family's (dd/families/sampling.py `pair_map`)."""
import time

from dd.artifacts import load_frozen_teacher, load_tokenizer, teacher_weights, tokenizer_weights
from dd.checkpoint import file_sha256, save_json
from dd.config import Config
from dd.device import compute_device
from dd.families.sampling import sampling_family
from dd.fast_path import fast_path_mode, fast_sampler
from dd.layout import Layout
from dd.pairs import write_pairs
from dd.provenance import record, stage_entry


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    device = compute_device()
    teacher, tokenizer = load_frozen_teacher(layout, device), load_tokenizer(layout, device)
    # On CUDA the teacher's forward runs in bf16 and the whole map (teacher and flow map) replays as a CUDA graph
    # (dd/fast_path.py); the flow map itself always solves in fp32.
    teacher_map = fast_sampler(sampling_family(layout.teacher).pair_map(config, teacher, tokenizer), config.sample, device)
    # Shards kept from an earlier run must come from the same teacher, codebook, params, code and precision
    # (write_pairs adds the pairs section's own); num_pairs and batch_size change no pair's bytes, so a grown set
    # keeps its shards.
    map_record = record(stage_entry("pairs"), config.recipe, config.flow, file_sha256(teacher_weights(layout)),
                        file_sha256(tokenizer_weights(layout)), fast_path_mode(config.sample, device)["precision"])
    started = time.time()
    manifest = write_pairs(teacher_map, tokenizer.num_tokens, tokenizer.codebook.shape[1], teacher.config.num_classes,
                           config.pairs, layout.pairs_dir, map_record, progress, device)
    metrics = {"num_pairs": manifest["num_pairs"], "num_shards": len(manifest["shards"]),
               "seconds_this_run": round(time.time() - started, 1)}
    save_json(layout.metrics_dir / "pairs.json", metrics)
    return metrics
