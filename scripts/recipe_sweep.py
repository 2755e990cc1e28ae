"""Which sampling recipe to distil: a trained teacher's FID, and its onestep baseline's, under several recipes.

DD distils the teacher's distribution after its recipe (params.yaml `recipe`), and the onestep baseline draws
every token from that distribution's per-position marginals, so the recipe moves both rows of eval.json. For
each recipe this samples the teacher (sample i from its own seeded noise, as the sample stage does), estimates
the per-class, per-position marginals from those samples, draws onestep from them with fresh noise, and prints
one JSON line with both FIDs in the pipeline classifier's features against the validation split.

Needs the data, classifier, tokenizer and teacher stages of TEACHER (`dvc repro teacher@var-tiny`). About a
minute per recipe for 5,000 var-tiny samples on 2 cores.

    python scripts/recipe_sweep.py var-tiny --recipe 1.5,64 --recipe 1.0,0 --recipe 0,0
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from pathlib import Path

import torch

from dd.artifacts import load_frozen_teacher, load_tokenizer, teacher_classes
from dd.config import load_config
from dd.evaluation import frechet_distance, load_classifier, predict
from dd.families.sampling import sampling_family
from dd.layout import Layout, load_images
from dd.sampling import TokenMarginals, run_sampler, sample_onestep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", help="a teacher of params.yaml `teachers`, e.g. var-tiny")
    parser.add_argument("--recipe", action="append", required=True, metavar="CFG,TOP_K",
                        help="guidance scale and top-k (0 keeps every code); repeat for each recipe")
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=2, help="the teacher's noise; onestep's is seed + 1")
    parser.add_argument("--data", type=Path, default=Path("data"), help="the pipeline's data folder")
    args = parser.parse_args()

    config, layout = load_config(teacher=args.teacher), Layout(args.teacher, args.data)
    teacher, tokenizer, classifier = load_frozen_teacher(layout), load_tokenizer(layout), load_classifier(layout.classifier_dir)
    real_features, _ = predict(classifier, load_images(layout, "validation").images)
    num_classes, code_dim = teacher_classes(layout), tokenizer.codebook.shape[1]
    run = functools.partial(run_sampler, indices=range(args.num_samples), num_tokens=tokenizer.num_tokens,
                            code_dim=code_dim, num_classes=num_classes, batch_size=args.batch_size)

    def fid(tokens: torch.Tensor) -> float:
        return frechet_distance(real_features, predict(classifier, tokenizer.decode(tokens))[0])

    for text in args.recipe:
        cfg_scale, top_k = text.split(",")
        recipe = dataclasses.replace(config.recipe, cfg_scale=float(cfg_scale), top_k=int(top_k))
        start = time.perf_counter()
        sampler = sampling_family(args.teacher).teacher_sampler(teacher, tokenizer, recipe)
        tokens, labels = run(sampler, seed=args.seed, description=f"teacher {text}")
        marginals = TokenMarginals.from_samples(tokens, labels, num_classes, tokenizer.codebook_size)
        onestep, _ = run(functools.partial(sample_onestep, marginals), seed=args.seed + 1, description="onestep")
        teacher_fid, onestep_fid = fid(tokens), fid(onestep)
        print(json.dumps({"cfg_scale": recipe.cfg_scale, "top_k": recipe.top_k, "num_samples": args.num_samples,
                          "teacher_fid": round(teacher_fid, 2), "onestep_fid": round(onestep_fid, 2),
                          "teacher_over_onestep": round(teacher_fid / onestep_fid, 3),
                          "seconds": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
