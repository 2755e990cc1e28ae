"""Stage `pairs`: the DD pair dataset, (noise, tokens, class) from the teacher's flow map, as webdataset shards."""
import functools
import time

from dd.artifacts import compute_device, load_frozen_teacher, load_tokenizer, teacher_weights, tokenizer_weights
from dd.checkpoint import file_sha256, save_json
from dd.config import Config
from dd.layout import Layout
from dd.pairs import PairMap, write_pairs
from dd.provenance import record, stage_entry
from dd.sequence_map import scale_sequence_map, sequence_map
from dd.teachers import family


def _raster_map(config: Config, teacher, tokenizer) -> PairMap:
    """LlamaGen: token by token, each the flow map of its noise given the tokens before it."""
    codebook = tokenizer.codebook.to(next(teacher.parameters()).device)
    return functools.partial(sequence_map, teacher, config.recipe, codebook, config.flow)


def _next_scale_map(config: Config, teacher, tokenizer) -> PairMap:
    """VAR: scale by scale, each token the flow map of its noise given the coarser scales."""
    codebook = tokenizer.codebook.to(next(teacher.parameters()).device)
    return functools.partial(scale_sequence_map, teacher, tokenizer.model, codebook, config.recipe, config.flow)


def pair_map(config: Config, teacher_name: str, teacher, tokenizer) -> PairMap:
    """The teacher's map from (labels, noise) to tokens, by its family (also for scripts/heldout_agreement.py)."""
    return {"llamagen": _raster_map, "var": _next_scale_map}[family(teacher_name)](config, teacher, tokenizer)


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    device = compute_device()
    teacher, tokenizer = load_frozen_teacher(layout, device), load_tokenizer(layout, device)
    teacher_map = pair_map(config, layout.teacher, teacher, tokenizer)
    # Shards kept from an earlier run must come from the same teacher, codebook, params and code (write_pairs adds
    # the pairs section's own); num_pairs and batch_size change no pair's bytes, so a grown set keeps its shards.
    map_record = record(stage_entry("pairs"), config.recipe, config.flow, file_sha256(teacher_weights(layout)),
                        file_sha256(tokenizer_weights(layout)))
    started = time.time()
    manifest = write_pairs(teacher_map, tokenizer.num_tokens, tokenizer.codebook.shape[1], teacher.config.num_classes,
                           config.pairs, layout.pairs_dir, map_record, progress, device)
    metrics = {"num_pairs": manifest["num_pairs"], "num_shards": len(manifest["shards"]),
               "seconds_this_run": round(time.time() - started, 1)}
    save_json(layout.metrics_dir / "pairs.json", metrics)
    return metrics
