"""Is the next-scale student short of its teacher because of how it decodes, or because of what it knows?

The student stage trains var-tiny's student with cross-entropy against each pair's token (target `tokens`) and
samples by argmax of its logits. Its 1-step images are less diverse than the teacher's (recall 0.19 against
0.34 in eval.json) and its class accuracy is higher (0.96 against 0.95): argmax picks the likeliest token where
the student is unsure. Two alternatives test that reading:

  decode `flow`: each token is the flow map (dd/flow.py) of its own noise under softmax(logits), the law the
      student predicts for it, instead of argmax: a token drawn with that law, deterministically;
  decode `temperature=T`: inverse-CDF draw from softmax(logits / T) with u = Phi(noise[..., 0]), the
      teacher sampler's draw (dd/sampling.py): deterministic, and more diverse as T grows;
  target `teacher-probs`: the student learns the teacher's law for every token given the trajectory state's
      data (cross-entropy against the teacher's teacher-forced distribution after its recipe, at the positions
      still noise; noise logits off, as that law does not depend on the token's own noise). With decode `flow`
      it then only has to infer the context: given the exact law, the flow map gives the teacher's token.

For each --target this trains a student from the teacher (the stage's params, --train-steps steps; target
`stage` takes the student stage's own student instead), then prints one JSON line per decode and step count
(1, and 2 from the largest trained timestep): FID, fid_to_teacher, precision, recall and class accuracy in the
evaluate stage's classifier features, over the first --num-samples samples of the sample_dd stage (its seed and
labels). With target `stage`, decode argmax and all sample.num_samples samples, the line is the evaluate
stage's `dd` row.

Needs every stage of TEACHER up to its student (target `stage`: up to evaluate's inputs). On 2 cores a
`teacher-probs` step costs about 1.8x a `tokens` step (the teacher's forward pass with guidance, no gradient).

    python scripts/decoding_trial.py var-tiny --target stage --target tokens --target teacher-probs \\
        --train-steps 2000 --decode argmax --decode flow --decode temperature=0.5 --num-samples 5000
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from dd.artifacts import compute_device, load_frozen_teacher, load_tokenizer, teacher_classes
from dd.config import Config, load_config
from dd.flow import flow_map
from dd.layout import Layout, load_samples
from dd.models.var import VAR
from dd.pairs import read_pairs
from dd.provenance import record
from dd.sampling import run_sampler
from dd.seeding import inverse_cdf, token_uniforms
from dd.student import soft_targets
from dd.training import train
from dd.var_student import VARStudent, noise_position_loss, sample_var_dd, student_inputs, student_loss
from flow_map_rule import teacher_forced_probs
from pipeline.evaluate import classifier_measure
from pipeline.sample_dd import load_student

# decode(logits (B, L, V), noise (B, L, E)) -> tokens (B, L)
Decode = Callable[[Tensor, Tensor], Tensor]


def decoder(name: str, codebook: Tensor, config: Config) -> Decode:
    """`argmax`, `flow` or `temperature=T` (module docstring)."""
    if name == "argmax":
        return lambda logits, noise: logits.argmax(-1)
    if name == "flow":
        def flow(logits: Tensor, noise: Tensor) -> Tensor:
            probs = logits.float().softmax(-1)                                              # (B, L, V)
            chosen = flow_map(noise.flatten(0, 1), probs.flatten(0, 1), codebook, num_steps=config.flow.solver_steps,
                              t_end=config.flow.t_end, compile=config.flow.compile)         # (B * L,)
            return chosen.view(noise.shape[:2])
        return flow
    if name.startswith("temperature="):
        temperature = float(name.removeprefix("temperature="))

        def draw(logits: Tensor, noise: Tensor) -> Tensor:
            probs = (logits.float() / temperature).softmax(-1)                              # (B, L, V)
            return inverse_cdf(probs.flatten(0, 1), token_uniforms(noise).flatten()).view(noise.shape[:2])
        return draw
    raise SystemExit(f"--decode {name!r}: use argmax, flow or temperature=T")


class DecodedStudent:
    """A VARStudent whose `predict` decodes its logits with `decode` instead of argmax, for sample_var_dd. At the
    second step the student's inputs hold codes where scales are data, but sample_var_dd keeps the first step's
    tokens there, and elsewhere the inputs are the noise itself, so each kept token is decoded from its own noise."""

    def __init__(self, student: VARStudent, decode: Decode):
        self.student, self.decode, self.config = student, decode, student.config

    def predict(self, labels: Tensor, inputs: Tensor, timestep: int) -> Tensor:
        return self.decode(self.student(labels, inputs, timestep), inputs)                  # (B, L)


def train_student(target: str, train_steps: int, teacher: VAR, tokenizer, config: Config, layout: Layout,
                  run_dir: Path, device: torch.device) -> VARStudent:
    """A student from the teacher, trained on the stage's pairs against `target` (`tokens` or `teacher-probs`)."""
    noise, tokens, labels = read_pairs(layout.pairs_dir)
    codebook, vqvae = tokenizer.codebook.to(device), tokenizer.model
    timesteps = torch.tensor(config.student.timesteps)
    torch.manual_seed(config.student.train.seed)
    student = VARStudent.from_teacher(teacher, codebook).to(device)
    soft = soft_targets(codebook, config.student.target_width)                             # (V, V)
    if target == "teacher-probs":
        student.noise_logits.weight.data.zero_()
        student.noise_logits.weight.requires_grad_(False)

    def loss_fn(model, indices, generator):
        sample_timesteps = timesteps[torch.randint(len(timesteps), (len(indices),), generator=generator)].to(device)
        batch_labels, batch_noise, batch_tokens = (x[indices].to(device) for x in (labels, noise, tokens))
        if target == "tokens":
            return student_loss(model, batch_labels, batch_noise, batch_tokens, codebook, sample_timesteps, soft)
        with torch.no_grad():   # no_grad, not inference_mode: the target enters the loss autograd saves
            probs = teacher_forced_probs(teacher, vqvae, config.recipe, batch_labels, batch_tokens).float()  # (B, L, V)
        inputs = student_inputs(batch_tokens, batch_noise, codebook, sample_timesteps, student.config)
        logits = model(batch_labels, inputs, sample_timesteps)                                # (B, L, V)
        # The stage's loss reads each token's target from a table of rows; here each (sample, position) is a row.
        rows = torch.arange(probs.shape[0] * probs.shape[1], device=device).view(probs.shape[:2])  # (B, L)
        return noise_position_loss(logits, rows, sample_timesteps, student.config, probs.flatten(0, 1))

    train_config = dataclasses.replace(config.student.train, train_steps=train_steps)
    ema = train(student, loss_fn, len(tokens), train_config, run_dir, run_dir / "log.jsonl",
                record(Path(__file__), target, train_config), f"student ({target})")
    return ema.eval().requires_grad_(False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", help="a next-scale teacher of params.yaml `teachers`, e.g. var-tiny")
    parser.add_argument("--target", action="append", required=True, choices=["stage", "tokens", "teacher-probs"],
                        help="repeat; `stage` is the student stage's student (no training)")
    parser.add_argument("--decode", action="append", help="argmax, flow or temperature=T; repeat (default argmax, flow)")
    parser.add_argument("--train-steps", type=int, default=2000, help="for targets tokens and teacher-probs")
    parser.add_argument("--num-samples", type=int, default=5000, help="the first N samples of the sample_dd stage")
    parser.add_argument("--run-dir", type=Path, help="keep the trained students here (resumable); default a temp dir")
    args = parser.parse_args()

    layout, config = Layout(args.teacher), load_config("params.yaml", args.teacher)
    device = compute_device()
    teacher, tokenizer = load_frozen_teacher(layout, device), load_tokenizer(layout, device)
    if not isinstance(teacher, VAR):
        raise SystemExit(f"{args.teacher} is not a next-scale (VAR) teacher: this trial is for var-tiny's student")
    codebook = tokenizer.codebook.to(device)
    decodes = {name: decoder(name, codebook, config) for name in args.decode or ["argmax", "flow"]}
    # the evaluate stage's metrics, in its classifier features (validation_fid: the figure to choose on)
    measure, _ = classifier_measure(config, layout, load_samples(layout.samples_dir / "teacher_reference.npz"))
    intermediate = config.student.intermediate_timestep
    run_root = args.run_dir or Path(tempfile.mkdtemp(prefix="decoding_trial_"))

    for target in args.target:
        if target == "stage":
            student, train_steps = load_student(layout, teacher), config.student.train.train_steps
        else:
            student, train_steps = train_student(target, args.train_steps, teacher, tokenizer, config, layout,
                                                 run_root / f"{target}-{args.train_steps}", device), args.train_steps
        for decode_name, decode in decodes.items():
            for steps in (1, 2):
                sampler = functools.partial(sample_var_dd, DecodedStudent(student, decode), codebook, steps, intermediate)
                tokens, labels = run_sampler(sampler, range(args.num_samples), config.sample.seed, tokenizer.num_tokens,
                                             codebook.shape[1], teacher_classes(layout), config.sample.batch_size,
                                             description=f"{target} {decode_name} {steps} step", device=device,
                                             labels_mode=config.sample.labels)
                metrics = measure({"images": tokenizer.decode(tokens), "labels": labels.numpy()})
                print(json.dumps({"target": target, "train_steps": train_steps, "decode": decode_name, "steps": steps,
                                  **metrics}), flush=True)


if __name__ == "__main__":
    main()
