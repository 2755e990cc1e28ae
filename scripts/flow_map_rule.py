"""How much of the flow map is the rule argmax_j log p_j + s <eps, c_j>? (dd/student.py, NoiseLogits)

The flow map (dd/flow.py) turns each token's noise eps and the teacher's distribution p for it into a token.
Its posterior over codes after one Euler step from pure noise to t = 1/(1 + s) is log p_j + s <eps, c_j> plus
terms that do not involve eps. This script teacher-forces TEACHER on its own pairs (the pair's tokens as the
context), so it has the exact p of every token, and prints, per scale (VAR) or per quarter of the sequence
(LlamaGen), the fraction of the pair tokens (the flow map's choices) that each rule picks:
  - argmax_p: the most probable code, ignoring eps;
  - rule_s: argmax_j log p_j + s <eps, c_j>, for each --scale s;
  - student_t0: the trained student's 1-step prediction (data/<teacher>/student; its context is noise too).
First it prints the share of pair tokens inside the support of their p. The flow map never picks a code the
recipe removed, so anything under 100% means the teacher forcing does not reproduce the pairs' laws (a
shifted context, another recipe) and the table below it is void.

Needs the tokenizer, teacher and pairs stages of TEACHER (and its student stage for the last column); about
20 s on 2 cores for 400 var-tiny pairs.

    python scripts/flow_map_rule.py var-tiny --scale 0.5 --scale 1 --scale 1.5
"""
from __future__ import annotations

import argparse

import torch

from dd.artifacts import load_frozen_teacher, load_tokenizer
from dd.config import load_config
from dd.layout import Layout
from dd.models.var import VAR
from dd.pairs import read_pairs
from dd.teachers import generate
from dd.var_teacher import generate_var
from pipeline.sample_dd import load_student


def teacher_forced_probs(teacher, vqvae, recipe, labels, tokens) -> torch.Tensor:
    """The teacher's distribution after its recipe for every pair token, given the pair's earlier tokens: (B, L, V)."""
    recorded = []
    if isinstance(teacher, VAR):
        slices = teacher.config.scale_slices

        def choose(probs, k):                                   # probs (B*P, V) of scale k
            recorded.append(probs.view(len(labels), -1, probs.shape[-1]))
            return tokens[:, slices[k][0]:slices[k][1]].flatten()
        generate_var(teacher, vqvae, labels, recipe, choose)
    else:
        def choose(probs, i):                                   # probs (B, V) of token i
            recorded.append(probs[:, None])
            return tokens[:, i]
        generate(teacher, labels, recipe, choose)
    return torch.cat(recorded, dim=1)                           # (B, L, V)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", help="a teacher of params.yaml `teachers`, e.g. var-tiny")
    parser.add_argument("--scale", type=float, action="append", help="s of the rule; repeat (default 0.5, 1, 1.5)")
    parser.add_argument("--num-pairs", type=int, default=400, help="the last pairs of the set")
    args = parser.parse_args()
    scales = args.scale or [0.5, 1.0, 1.5]
    torch.set_num_threads(2)

    layout, config = Layout(args.teacher), load_config("params.yaml", args.teacher)
    teacher, tokenizer = load_frozen_teacher(layout), load_tokenizer(layout)
    noise, tokens, labels = (x[-args.num_pairs:] for x in read_pairs(layout.pairs_dir))
    codebook = tokenizer.codebook.float()                                               # (V, d)
    with torch.inference_mode():
        probs = teacher_forced_probs(teacher, getattr(tokenizer, "model", None), config.recipe, labels, tokens)
        student = load_student(layout, teacher) if (layout.student_dir / "model.pt").exists() else None
        student_tokens = student.predict(labels, noise, 0) if student is not None else None
    log_p, eps_dot_codes = probs.clamp_min(1e-30).log(), noise @ codebook.T             # (B, L, V) each
    in_support = probs.gather(-1, tokens[..., None]).gt(0).double().mean().item()

    if isinstance(teacher, VAR):
        groups = [(f"scale {k} ({stop - start} tokens)", start, stop)
                  for k, (start, stop) in enumerate(teacher.config.scale_slices)]
    else:
        quarter = tokens.shape[1] // 4
        groups = [(f"tokens {q * quarter}-{(q + 1) * quarter - 1}", q * quarter, (q + 1) * quarter) for q in range(4)]
    columns = ["argmax_p"] + [f"rule_{s:g}" for s in scales] + (["student_t0"] if student is not None else [])
    print(f"{args.teacher}: {100 * in_support:.2f}% of the pair tokens are inside the support of their p")
    print(f"{args.teacher}: agreement with the flow map's tokens of {len(labels)} pairs")
    print(f"{'':>24}" + "".join(f"{c:>12}" for c in columns))
    for name, start, stop in groups + [("all", 0, tokens.shape[1])]:
        target = tokens[:, start:stop]
        picks = [log_p[:, start:stop].argmax(-1)]
        picks += [(log_p[:, start:stop] + s * eps_dot_codes[:, start:stop]).argmax(-1) for s in scales]
        picks += [student_tokens[:, start:stop]] if student is not None else []
        print(f"{name:>24}" + "".join(f"{(p == target).double().mean().item():>12.3f}" for p in picks))


if __name__ == "__main__":
    main()
