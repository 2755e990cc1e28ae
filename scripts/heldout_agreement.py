"""Does the student overfit its pairs? Token agreement on pairs it trained on against pairs it never saw.

The student stage reports token agreement on its first training pairs. Sampling draws fresh noise, so what
counts is agreement on pairs the student never saw. This script makes N fresh pairs exactly as the pairs stage
would (sample indices num_pairs .. num_pairs + N - 1, so they are the pairs a larger `pairs.num_pairs` would
add), and prints, for every training timestep, the student's agreement with the teacher's tokens on the first
N training pairs and on the fresh ones: overall (the positions still noise) and per scale (VAR) or per quarter
of the sequence (LlamaGen). A gap says that more pairs would help the student more than more steps on the same
pairs.

Needs the teacher, pairs and student stages of TEACHER. About 50 s per 2,000 var-tiny pairs on 2 cores.

    python scripts/heldout_agreement.py var-tiny --num-pairs 2000
"""
from __future__ import annotations

import argparse

import torch

from dd.artifacts import load_frozen_teacher, load_tokenizer
from dd.config import load_config
from dd.layout import Layout
from dd.models.var import VAR
from dd.pairs import read_pairs
from dd.seeding import balanced_labels, per_sample_noise
from pipeline.pairs import pair_map
from pipeline.sample_dd import load_student
from pipeline.student import student_family


def position_groups(teacher) -> list[tuple[str, int, int]]:
    """(name, start, stop) of each scale (VAR) or quarter of the sequence (LlamaGen)."""
    if isinstance(teacher, VAR):
        return [(f"scale {k}", start, stop) for k, (start, stop) in enumerate(teacher.config.scale_slices)]
    L = teacher.config.num_image_tokens
    return [(f"tokens {q * L // 4}-{(q + 1) * L // 4 - 1}", q * L // 4, (q + 1) * L // 4) for q in range(4)]


def load_trained(teacher_name: str):
    """The stages' config, frozen teacher, tokenizer, EMA student and the student family's parts (layout too)."""
    layout, config = Layout(teacher_name), load_config("params.yaml", teacher_name)
    teacher, tokenizer = load_frozen_teacher(layout), load_tokenizer(layout)
    student = load_student(layout, teacher).eval()
    return layout, config, teacher, tokenizer, student, student_family(teacher_name, teacher)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", help="a teacher of params.yaml `teachers`, e.g. var-tiny")
    parser.add_argument("--num-pairs", type=int, default=2000, help="pairs in each set (training, fresh)")
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(2)

    layout, config, teacher, tokenizer, student, parts = load_trained(args.teacher)   # parts: inputs, first_noise
    codebook, n, batch = tokenizer.codebook, args.num_pairs, args.batch_size

    noise, tokens, labels = read_pairs(layout.pairs_dir)
    if not 0 < n <= len(tokens):
        raise SystemExit(f"--num-pairs {n}: the pair set of {args.teacher} holds {len(tokens)}; ask for 1 to {len(tokens)}")
    trained = (noise[:n], tokens[:n], labels[:n])
    fresh_indices = range(len(tokens), len(tokens) + n)            # what a larger pair set would add next
    fresh_labels = balanced_labels(fresh_indices, teacher.config.num_classes)
    fresh_noise = per_sample_noise(config.pairs.seed, fresh_indices, tokenizer.num_tokens, codebook.shape[1])
    teacher_map = pair_map(config, args.teacher, teacher, tokenizer)
    fresh_tokens = torch.cat([teacher_map(fresh_labels[i:i + batch], fresh_noise[i:i + batch]) for i in range(0, n, batch)])
    fresh = (fresh_noise, fresh_tokens, fresh_labels)

    @torch.inference_mode()
    def hits(pairs, t) -> torch.Tensor:
        noise, tokens, labels = pairs
        predicted = torch.cat([student.predict(labels[i:i + batch], parts.inputs(tokens[i:i + batch], noise[i:i + batch], codebook, t), t)
                               for i in range(0, n, batch)])
        return (predicted == tokens).double()                       # (n, L)

    groups = position_groups(teacher)
    print(f"{args.teacher}: token agreement on the first {n} training pairs / {n} fresh pairs "
          f"(indices {fresh_indices.start}-{fresh_indices.stop - 1})")
    for t in config.student.distinct_timesteps:
        first_noise = parts.first_noise(t)
        on_trained, on_fresh = hits(trained, t), hits(fresh, t)
        overall = f"{on_trained[:, first_noise:].mean():.2%} / {on_fresh[:, first_noise:].mean():.2%}"
        per_group = ", ".join(f"{name} {on_trained[:, a:b].mean():.1%} / {on_fresh[:, a:b].mean():.1%}"
                              for name, a, b in groups if b > first_noise)
        print(f"t = {t}: {overall}  ({per_group})")


if __name__ == "__main__":
    main()
