"""Where does DD's 2-step error come from: the first step's early tokens, or the second step's later ones?

DD's second step keeps the first step's tokens before the intermediate timestep t (scales for VAR, tokens for
LlamaGen) and regenerates the rest at t. On pairs, whose teacher tokens are known, this script replaces each
part by the teacher's own and measures the FID of every combination, in the classifier features of the
`evaluate` stage, against the validation split:

    teacher                      the pairs' tokens (what the student imitates)
    1-step                       the student at t = 0
    2-step                       DD's 2-step sampler (sample_dd's)
    teacher early + step 2       the second step from the teacher's tokens before t: a perfect first step
    teacher early + 1-step late  the 1-step tokens after t under the teacher's tokens before t

"teacher early + step 2" bounds what any improvement of the first step can give the 2-step sampler; the gap
between it and "teacher" is the second step's own error. Prints one JSON line per combination: FID, its ratio
to the teacher row's, recall, and the agreement with the teacher's tokens over all tokens, over the tokens the
second step regenerates (`late`), and per scale (VAR) or quarter of the sequence (LlamaGen).

Needs the classifier, teacher, pairs and student stages of TEACHER; uses the first N pairs (their noise was
drawn like the samplers', one seed per sample). About 3 minutes for 10,000 var-tiny pairs on 2 cores.

    python scripts/two_step_split.py var-tiny --num-pairs 10000
"""
from __future__ import annotations

import argparse
import functools
import json

import numpy as np
import torch

from dd.evaluation import image_metrics, load_classifier, predict
from dd.layout import load_images
from dd.pairs import read_pairs
from dd.teachers import family
from heldout_agreement import load_trained, position_groups
from pipeline.sample_dd import DD_SAMPLERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", help="a teacher of params.yaml `teachers`, e.g. var-tiny")
    parser.add_argument("--num-pairs", type=int, default=10000, help="pairs to measure (at most the pair set)")
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(2)

    layout, config, teacher, tokenizer, student, parts = load_trained(args.teacher)   # parts: inputs, first_noise
    intermediate = config.student.intermediate_timestep      # where sample_dd's second step starts
    first_late = parts.first_noise(intermediate)             # first token the second step regenerates
    codebook, n, batch = tokenizer.codebook, args.num_pairs, args.batch_size

    noise, tokens, labels = read_pairs(layout.pairs_dir)
    if not 0 < n <= len(tokens):
        raise SystemExit(f"--num-pairs {n}: the pair set of {args.teacher} holds {len(tokens)}; ask for 1 to {len(tokens)}")
    noise, tokens, labels = noise[:n], tokens[:n], labels[:n]

    dd_sampler = functools.partial(DD_SAMPLERS[family(args.teacher)], student, codebook)   # sample_dd's sampler

    @torch.inference_mode()
    def batched(make) -> torch.Tensor:
        """make(rows) -> tokens (b, L) of those pairs, over all n pairs in batches: (n, L)."""
        return torch.cat([make(slice(i, i + batch)) for i in range(0, n, batch)])

    def spliced(early: torch.Tensor, late: torch.Tensor) -> torch.Tensor:
        return torch.cat([early[:, :first_late], late[:, first_late:]], dim=1)     # (n, L)

    # The 2-step row reruns the first step inside sample_dd's sampler (one more student pass) so that it is
    # exactly what sample_dd draws.
    one_step = batched(lambda rows: dd_sampler(1, intermediate, labels[rows], noise[rows]))
    # The second step alone, from the teacher's tokens before the intermediate timestep.
    second_step = batched(lambda rows: student.predict(
        labels[rows], parts.inputs(tokens[rows], noise[rows], codebook, intermediate), intermediate))
    methods = {"teacher": tokens, "1-step": one_step,
               "2-step": batched(lambda rows: dd_sampler(2, intermediate, labels[rows], noise[rows])),
               "teacher early + step 2": spliced(tokens, second_step),
               "teacher early + 1-step late": spliced(tokens, one_step)}

    classifier = load_classifier(layout.classifier_dir)
    real_features, _ = predict(classifier, load_images(layout, "validation").images)
    groups = position_groups(teacher)
    print(f"{args.teacher}, first {n} pairs; the second step starts at t = {intermediate} "
          f"(tokens {first_late}-{tokens.shape[1] - 1} regenerated)")
    for name, method_tokens in methods.items():
        images = np.concatenate([tokenizer.decode(method_tokens[i:i + batch]) for i in range(0, n, batch)])
        metrics = image_metrics(classifier, images, labels.numpy(), real_features, None,
                                k=config.evaluate.precision_recall_k)
        if name == "teacher":
            teacher_fid = metrics.fid                                               # the first row
        hits = (method_tokens == tokens).double()                                   # (n, L)
        print(json.dumps({"method": name, "num_samples": n, "fid": round(metrics.fid, 4),
                          "fid_over_teacher": round(metrics.fid / teacher_fid, 4), "recall": metrics.recall,
                          "agreement": float(hits.mean()), "agreement_late": float(hits[:, first_late:].mean()),
                          "agreement_per_group": {group: round(float(hits[:, a:b].mean()), 4) for group, a, b in groups}}),
              flush=True)


if __name__ == "__main__":
    main()
