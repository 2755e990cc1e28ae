"""Stage `sample`: images from the teacher, a second teacher set, the baselines and the tokenizer floor.

The second teacher set, teacher_reference, is what fid_to_teacher measures every method against: the teacher's
own sampler with its own seed (sample.reference_seed), so it shares no noise with any method's samples nor with
the pairs the student trained on (a reference made of training pairs would reward a student for memorising them).

The DD student samples in its own stage (sample_dd), so changing student.steps reruns only that, the
latency benchmark and the evaluation.

The teacher's sampler and the skip baselines are its family's (dd/families/sampling.py `baselines`): a raster
(LlamaGen) teacher stops sample.skip_tokens tokens early and draws the rest from the per-position marginals in
one parallel step (`skip`); a next-scale (VAR) teacher stops before its last 1 or 2 scales and its image is
decoded from the partial reconstruction it has (`skip-1`, `skip-2`).
"""
import numpy as np
import torch

from dd.artifacts import load_frozen_teacher, load_tokenizer, teacher_classes
from dd.checkpoint import atomic_destination
from dd.config import Config
from dd.device import compute_device
from dd.families.sampling import sampling_family
from dd.fast_path import fast_samplers
from dd.layout import Layout, load_images
from dd.pairs import read_pairs
from dd.sampling import TokenMarginals, run_sampler
from dd.seeding import per_sample_noise


def baseline_samplers(config: Config, layout: Layout, pair_tokens: torch.Tensor, pair_labels: torch.Tensor) -> dict:
    """Samplers (labels, noise) -> tokens for every method that needs no student."""
    return _baselines(config, layout, pair_tokens, pair_labels)[0]


def _baselines(config: Config, layout: Layout, pair_tokens: torch.Tensor, pair_labels: torch.Tensor) -> tuple[dict, dict]:
    """The samplers, and the skip baselines again as functions (teacher tokens, labels, noise) -> tokens.

    A teacher stopped early makes the same tokens as the full teacher up to where it stops (same noise, same
    computation; tests/test_sampling.py), so this stage cuts the teacher's samples short rather than running
    the teacher twice; the latency stage times the skip samplers themselves. The baselines' per-position
    marginals are estimated from the pairs' tokens: the teacher's own samples.
    """
    device = compute_device()
    teacher, tokenizer = load_frozen_teacher(layout, device), load_tokenizer(layout, device)
    marginals = TokenMarginals.from_samples(pair_tokens, pair_labels, teacher.config.num_classes,
                                            tokenizer.codebook_size).to(device)
    return sampling_family(layout.teacher).baselines(config, teacher, tokenizer, marginals)


def save_samples(path, tokens: torch.Tensor, labels: torch.Tensor, images: np.ndarray) -> None:
    with atomic_destination(path) as temporary:
        np.savez(temporary, tokens=tokens.numpy(), labels=labels.numpy(), images=images)


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    pairs = read_pairs(layout.pairs_dir)
    pair_tokens, pair_labels = pairs.tokens, pairs.labels
    device = compute_device()
    tokenizer, (samplers, skips) = load_tokenizer(layout, device), _baselines(config, layout, pair_tokens, pair_labels)
    samplers = fast_samplers(samplers, config.sample, device)
    num_classes, count = teacher_classes(layout), config.sample.num_samples
    seed, num_tokens, code_dim = config.sample.seed, tokenizer.num_tokens, tokenizer.codebook.shape[1]
    sampled = {}
    for method in ("teacher", "onestep"):
        sampled[method] = run_sampler(samplers[method], range(count), seed, num_tokens, code_dim, num_classes,
                                      config.sample.batch_size, description=method, progress=progress,
                                      device=device, labels_mode=config.sample.labels)
    teacher_tokens, labels = sampled["teacher"]
    noise = per_sample_noise(seed, range(count), num_tokens, code_dim)          # run_sampler's, all at once
    for method, complete in skips.items():
        sampled[method] = complete(*(x.to(device) for x in (teacher_tokens, labels, noise))).cpu(), labels
    for method, (tokens, labels) in sampled.items():
        save_samples(layout.samples_dir / f"{method}.npz", tokens, labels, tokenizer.decode(tokens))

    # teacher_reference, for fid_to_teacher: a second teacher set of the same size and labels, of its own seed.
    tokens, labels = run_sampler(samplers["teacher"], range(count), config.sample.reference_seed, num_tokens, code_dim,
                                 num_classes, config.sample.batch_size, description="teacher reference",
                                 progress=progress, device=device, labels_mode=config.sample.labels)
    save_samples(layout.samples_dir / "teacher_reference.npz", tokens, labels, tokenizer.decode(tokens))

    # The floor: the tokenizer's reconstructions of the held-out test images. A published tokenizer's domain
    # (ImageNet, 256 px) is not the local data set's, so it has no such row.
    if config.tokenizer.source == "download":
        return {"samples_per_method": count, "methods": [*samplers, "teacher_reference"], "reconstructions": 0}
    test = load_images(layout, "test")
    tokens = tokenizer.encode(test.images)
    save_samples(layout.samples_dir / "reconstruction.npz", tokens, torch.from_numpy(test.labels), tokenizer.decode(tokens))
    return {"samples_per_method": count, "methods": [*samplers, "teacher_reference"], "reconstructions": len(test)}
