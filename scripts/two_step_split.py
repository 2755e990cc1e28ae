"""Where does DD's 2-step error come from: the first step's early tokens, or the second step's later ones?

DD's second step keeps the first step's tokens before the intermediate timestep t (scales for VAR, tokens for
LlamaGen) and regenerates the rest at t. On pairs, whose teacher tokens are known, this script replaces each
part by the teacher's own and measures the FID of every combination, in the classifier features of the
`evaluate` stage, against the test split:

    teacher                      the pairs' tokens (what the student imitates)
    1-step                       the student at t = 0
    2-step                       DD's 2-step sampler
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
import json

import numpy as np
import torch

from dd.artifacts import Layout, load_classifier, load_frozen_teacher, load_images, load_student, load_tokenizer
from dd.config import load_config
from dd.evaluation import image_metrics, predict
from dd.pairs import read_pairs
from heldout_agreement import position_groups
from pipeline.student import student_family


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", help="a teacher of params.yaml `teachers`, e.g. var-tiny")
    parser.add_argument("--num-pairs", type=int, default=10000, help="pairs to measure (at most the pair set)")
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(2)

    layout, config = Layout(args.teacher), load_config("params.yaml", args.teacher)
    teacher, tokenizer = load_frozen_teacher(layout), load_tokenizer(layout)
    student = load_student(layout, teacher).eval()
    parts = student_family(args.teacher, teacher)           # the student stage's inputs, first_noise
    intermediate = max(config.student.timesteps)             # where sample_dd's second step starts
    first_late = parts.first_noise(intermediate)             # first token the second step regenerates
    codebook, n, batch = tokenizer.codebook, args.num_pairs, args.batch_size

    noise, tokens, labels = read_pairs(layout.pairs_dir)
    if not 0 < n <= len(tokens):
        raise SystemExit(f"--num-pairs {n}: the pair set of {args.teacher} holds {len(tokens)}; ask for 1 to {len(tokens)}")
    noise, tokens, labels = noise[:n], tokens[:n], labels[:n]

    @torch.inference_mode()
    def student_tokens(early: torch.Tensor | None) -> torch.Tensor:
        """The student at t = 0 (early None), or at the intermediate timestep after the tokens `early` (n, L)."""
        out = []
        for i in range(0, n, batch):
            rows = slice(i, i + batch)
            if early is None:
                out.append(student.predict(labels[rows], noise[rows], 0))
            else:
                inputs = parts.inputs(early[rows], noise[rows], codebook, intermediate)
                out.append(student.predict(labels[rows], inputs, intermediate))
        return torch.cat(out)                                                       # (n, L)

    def spliced(early: torch.Tensor, late: torch.Tensor) -> torch.Tensor:
        return torch.cat([early[:, :first_late], late[:, first_late:]], dim=1)     # (n, L)

    one_step = student_tokens(None)
    methods = {"teacher": tokens, "1-step": one_step,
               "2-step": spliced(one_step, student_tokens(one_step)),
               "teacher early + step 2": spliced(tokens, student_tokens(tokens)),
               "teacher early + 1-step late": spliced(tokens, one_step)}

    classifier = load_classifier(layout)
    real_features, _ = predict(classifier, load_images(layout, "test").images)
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
