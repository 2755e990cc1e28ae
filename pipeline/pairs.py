"""Stage `pairs`: the DD pair dataset, (noise, tokens, class) from the teacher's flow map, as webdataset shards."""
import time

from dd.artifacts import Layout, compute_device, load_frozen_teacher, load_tokenizer, teacher_weights, tokenizer_weights
from dd.checkpoint import file_sha256, save_json
from dd.config import Config, fingerprint
from dd.pairs import write_pairs


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    teacher, tokenizer = load_frozen_teacher(layout, compute_device()), load_tokenizer(layout)
    # Shards kept from an earlier run must come from the same teacher, codebook and params.
    run_fingerprint = fingerprint(config.recipe, config.flow, config.pairs, file_sha256(teacher_weights(layout)),
                                  file_sha256(tokenizer_weights(layout)))
    started = time.time()
    manifest = write_pairs(teacher, tokenizer.codebook, config.recipe, config.flow, config.pairs, layout.pairs_dir,
                           run_fingerprint, progress)
    metrics = {"num_pairs": manifest["num_pairs"], "num_shards": len(manifest["shards"]),
               "seconds_this_run": round(time.time() - started, 1)}
    save_json(layout.metrics_dir / "pairs.json", metrics)
    return metrics
