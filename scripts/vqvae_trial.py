"""One trial of var-tiny's VQVAE: train a vae-tiny variant on the train split, print what it costs and how close
its tokens come to the data, without running the whole pipeline (the tokenizer stage is this training; the
teacher, pairs and student after it take another ~20 minutes).

Prints one JSON line: training seconds per step; encode + decode milliseconds per validation image; the validation
images' reconstruction FID (the pipeline's floor row) and MSE; and the FID of `onestep` drawn from the
per-position marginals of the train images' tokens (the pipeline draws it from the teacher's samples instead,
which need a teacher). FIDs are in the features of the pipeline's classifier, as in eval.json. Needs the data
and classifier stages (`dvc repro classifier`). About 5 minutes for 1,000 steps on 2 cores.

    python scripts/vqvae_trial.py --ch-mult 1,1,2 --steps 1000 --learning-rate 0.004
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dd.config import TrainConfig
from dd.evaluation import load_classifier
from dd.evaluation import frechet_distance, predict
from dd.layout import Layout, load_images
from dd.models.var_vqvae import PRESETS
from dd.sampling import TokenMarginals
from dd.seeding import balanced_labels, per_sample_noise, token_uniforms
from dd.var_tokenizer import MultiScaleTokenizer, train_vqvae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ch-mult", default="1,1,2", help="channel multiplier per level (3 levels: 32 px -> 8x8)")
    parser.add_argument("--num-res-blocks", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=0.004)
    parser.add_argument("--commitment", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0, help="initial weights and batches")
    parser.add_argument("--sample-seed", type=int, default=2, help="onestep's noise (params.yaml sample.seed)")
    parser.add_argument("--data", type=Path, default=Path("data"), help="the pipeline's data folder")
    args = parser.parse_args()

    config = dataclasses.replace(PRESETS["vae-tiny"], ch_mult=tuple(int(m) for m in args.ch_mult.split(",")),
                                 num_res_blocks=args.num_res_blocks)
    layout = Layout("", args.data)
    train_set, validation = load_images(layout, "train"), load_images(layout, "validation")
    images = torch.from_numpy(train_set.images)                                        # (N, H, W, C) uint8
    train_config = TrainConfig(train_steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                               warmup_steps=20, weight_decay=0.0, ema_decay=0.0, checkpoint_every=args.steps,
                               log_every=25, precision="fp32", compile=False, seed=args.seed)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        trained = train_vqvae(config, images, train_config, args.commitment, args.seed, Path(run_dir),
                              Path(run_dir) / "log.jsonl", "trial")
    train_seconds = time.perf_counter() - started

    tokenizer, classifier = MultiScaleTokenizer(trained), load_classifier(layout.classifier_dir)
    real, _ = predict(classifier, validation.images)
    started = time.perf_counter()
    reconstructions = tokenizer.decode(tokenizer.encode(validation.images))
    codec_seconds = time.perf_counter() - started

    # onestep: each token from its class's per-position law over the train images' tokens.
    marginals = TokenMarginals.from_samples(tokenizer.encode(train_set.images),
                                            torch.from_numpy(train_set.labels).long(), int(train_set.labels.max()) + 1,
                                            tokenizer.codebook_size)
    indices = range(len(validation))
    uniforms = token_uniforms(per_sample_noise(args.sample_seed, indices, tokenizer.num_tokens, 1))      # (N, L)
    onestep = tokenizer.decode(marginals.draw(balanced_labels(indices, len(marginals.counts)), uniforms))

    print(json.dumps({
        "ch_mult": args.ch_mult, "num_res_blocks": args.num_res_blocks, "steps": args.steps,
        "batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "parameters_M": round(sum(p.numel() for p in trained.parameters()) / 1e6, 3),
        "seconds_per_step": round(train_seconds / args.steps, 3),
        "codec_ms_per_image": round(1000 * codec_seconds / len(validation), 2),
        "reconstruction_fid": round(frechet_distance(real, predict(classifier, reconstructions)[0]), 2),
        "reconstruction_mse": round(float(np.mean((reconstructions / 255.0 - validation.images / 255.0) ** 2)), 5),
        "onestep_fid_data_marginals": round(frechet_distance(real, predict(classifier, onestep)[0]), 2),
    }))


if __name__ == "__main__":
    main()
