"""Does DD reach its teacher with more compute? The student stage with more pairs and more training examples.

var-tiny's DD has scored 1.33x-1.63x its teacher's FID in every run, and its onestep bar (DD at most 0.25x
onestep's FID) needs about 1.0x. On 2 CPU cores the student stage cannot grow inside the 75-minute run, so this
asks the question where compute is cheap (a GPU): is the student short of training, or of something more
training cannot give?

`train` (on the GPU) runs the pairs stage once for the largest --run's pair count, from a finished run's
tokenizer and teacher (--source, a `data/` folder), then the student stage for every --run side by side, each in
its own process and data folder: the stage's own code (pipeline.pairs.run, pipeline.student.run) with params.yaml
resolved for the teacher and the --run's overrides. A smaller pair set is the first shards of the largest (pairs
are a function of their sample index), linked, not regenerated. Each finished run's EMA weights go to
OUT/<name>.pt and its figures to OUT/summary.json, rewritten as each run ends.

`score` (on the CPU, where the committed run sampled) samples every OUT/<name>.pt as the sample_dd stage does, at
1 and 2 steps, and measures it with the evaluate stage's classifier features beside the source run's teacher and
onestep samples, in one run, so the ratios compare like with like.

    python scripts/student_scaling.py train var-tiny --source data --out /tmp/scaling \\
        --run stage:num_pairs=24000 --run x16:num_pairs=192000,batch_size=512
    python scripts/student_scaling.py score var-tiny --source data --out /tmp/scaling
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from dd.config import load_config
from dd.layout import Layout, load_samples
from dd.pairs import PROVENANCE

PARAMS = Path("params.yaml")         # the project's, from its root (as `dd` and the other scripts read it)
TRAIN_KEYS = ("batch_size", "train_steps", "learning_rate", "warmup_steps", "weight_decay", "seed")


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    num_pairs: int
    train: dict               # overrides of student.train (TRAIN_KEYS)

    @classmethod
    def parse(cls, text: str) -> "Run":
        """NAME:num_pairs=N[,batch_size=B,train_steps=S,learning_rate=LR,...]"""
        name, _, spec = text.partition(":")
        values = dict(item.split("=", 1) for item in spec.split(",") if item)
        if not name.replace("-", "").replace("_", "").isalnum() or "num_pairs" not in values:
            raise argparse.ArgumentTypeError(f"--run {text!r}: expected NAME:num_pairs=N[,batch_size=B,...]")
        unknown = set(values) - {"num_pairs", *TRAIN_KEYS}
        if unknown:
            raise argparse.ArgumentTypeError(f"--run {text!r}: unknown keys {sorted(unknown)}; "
                                             f"use num_pairs and {', '.join(TRAIN_KEYS)}")
        num_pairs = int(values.pop("num_pairs"))
        return cls(name, num_pairs, {k: float(v) if k == "learning_rate" else int(v) for k, v in values.items()})


def run_config(teacher: str, run: Run | None = None, **pairs):
    """params.yaml resolved for the teacher, with the run's pair count and student training overrides."""
    config = load_config(PARAMS, teacher)
    if run is not None:
        pairs = {"num_pairs": run.num_pairs, **pairs}
        student = dataclasses.replace(config.student, train=dataclasses.replace(config.student.train, **run.train))
        config = dataclasses.replace(config, student=student)
    return dataclasses.replace(config, pairs=dataclasses.replace(config.pairs, **pairs))


def link(source: Path, target: Path) -> None:
    """target becomes a link to source's folder (a stage's outputs, shared read-only)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(Path(source).resolve())


# ---------------------------------------------------------------------------------------------------------
# train (GPU)
# ---------------------------------------------------------------------------------------------------------

def make_pairs(teacher: str, runs: list[Run], source: Path, work: Path, batch_size: int) -> dict[int, Path]:
    """One pair set per distinct count, each the first shards of the next larger: {num_pairs: data root}."""
    from pipeline import pairs as pairs_stage
    roots, previous = {}, None
    for count in sorted({run.num_pairs for run in runs}):
        root = work / f"pairs{count}"
        for stage in ("tokenizer", "teacher"):
            link(source / teacher / stage, root / teacher / stage)
        pairs_dir = root / teacher / "pairs"
        pairs_dir.mkdir(parents=True)
        if previous is not None:            # shards of the same record, checksums intact, are kept by the stage
            for path in [*previous.glob("pairs-*.tar"), *previous.glob("pairs-*.json")]:
                os.link(path, pairs_dir / path.name)
            shutil.copy(previous / PROVENANCE, pairs_dir)
        started = time.time()
        pairs_stage.run(run_config(teacher, num_pairs=count, batch_size=batch_size),
                        Layout(teacher, root, root / "metrics"), progress=False)
        print(f"pairs: {count} in {time.time() - started:.1f} s", flush=True)
        roots[count], previous = root, pairs_dir
    return roots


def train_one(teacher: str, run: Run, pairs_root: str, work: str, threads: int) -> None:
    """The student stage for one run, in its own process and data folder."""
    from pipeline import student as student_stage
    torch.set_num_threads(threads)
    root = Path(work) / run.name
    for stage in ("tokenizer", "teacher", "pairs"):
        link(Path(pairs_root) / teacher / stage, root / teacher / stage)
    config, started = run_config(teacher, run), time.time()
    metrics = student_stage.run(config, Layout(teacher, root, root / "metrics"), progress=False)
    log = [json.loads(line) for line in (root / "metrics" / teacher / "student_log.jsonl").read_text().splitlines()]
    train = config.student.train
    (root / "result.json").write_text(json.dumps({
        "num_pairs": run.num_pairs, "train": dataclasses.asdict(train), "examples": train.batch_size * train.train_steps,
        **metrics, "seconds": round(time.time() - started, 1), "last_log": log[-1]}))


def train(args, work: Path) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    summary = {"teacher": args.teacher, "device": device, "torch": torch.__version__, "runs": {}}
    started = time.time()
    roots = make_pairs(args.teacher, args.run, Path(args.source), work, args.pairs_batch_size)
    summary["pairs_seconds"] = round(time.time() - started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))

    context = multiprocessing.get_context("spawn")
    threads = args.threads or max(1, (os.cpu_count() or 2) // len(args.run))
    processes = {run.name: context.Process(target=train_one, args=(
        args.teacher, run, str(roots[run.num_pairs]), str(work), threads)) for run in args.run}
    for process in processes.values():
        process.start()
    while processes:
        time.sleep(2)
        for name, process in list(processes.items()):
            if process.is_alive():
                continue
            del processes[name]
            result_path = work / name / "result.json"
            if process.exitcode != 0 or not result_path.exists():
                summary["runs"][name] = {"failed": f"exit code {process.exitcode}"}
            else:
                shutil.copy(work / name / args.teacher / "student" / "model.pt", out / f"{name}.pt")
                summary["runs"][name] = json.loads(result_path.read_text())
            summary["seconds"] = round(time.time() - started, 1)
            (out / "summary.json").write_text(json.dumps(summary, indent=2))
            print(f"{name}: {json.dumps(summary['runs'][name])}", flush=True)


# ---------------------------------------------------------------------------------------------------------
# score (CPU)
# ---------------------------------------------------------------------------------------------------------

def score(args, work: Path) -> None:
    from pipeline import sample_dd as sample_dd_stage
    from pipeline.evaluate import classifier_measure
    source, out, teacher = Path(args.source), Path(args.out), args.teacher
    summary = json.loads((out / "summary.json").read_text())
    for folder in ("dataset", "classifier", f"{teacher}/tokenizer", f"{teacher}/teacher", f"{teacher}/samples"):
        link(source / folder, work / folder)
    layout = Layout(teacher, work, work / "metrics")
    config = run_config(teacher)
    measure, _ = classifier_measure(config, layout, load_samples(layout.samples_dir / "teacher_reference.npz"))
    rows = {method: measure(load_samples(layout.samples_dir / f"{method}.npz")) for method in ("teacher", "onestep")}
    # Validation FIDs: a trial chooses settings, so it never reads the test split's.
    teacher_fid, onestep_fid = rows["teacher"]["validation_fid"], rows["onestep"]["validation_fid"]
    print(f"{teacher}: validation FID teacher {teacher_fid:.2f}, onestep {onestep_fid:.2f} "
          f"({summary['device']} students)\n")
    print("| run | pairs | batch x steps (examples) | token agreement | train s | DD 1-step | / teacher | / onestep "
          "| DD 2-step | / teacher |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, result in summary["runs"].items():
        if "failed" in result:
            print(f"| {name} | {result['failed']} |")
            continue
        layout.student_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / f"{name}.pt", layout.student_dir / "model.pt")
        fids = {}
        for steps in (1, 2):
            stepped = dataclasses.replace(config, student=dataclasses.replace(config.student, steps=steps))
            sample_dd_stage.run(stepped, layout, progress=False)
            rows[f"{name}/{steps}"] = measure(load_samples(layout.dd_samples_dir / "dd.npz"))
            fids[steps] = rows[f"{name}/{steps}"]["validation_fid"]
        agreement = " / ".join(f"{100 * v:.1f}%" for k, v in result.items() if k.startswith("token_agreement"))
        train = result["train"]
        print(f"| {name} | {result['num_pairs']:,} | {train['batch_size']} x {train['train_steps']:,} "
              f"({result['examples']:,}) | {agreement} | {result['seconds']:.0f} | {fids[1]:.2f} | "
              f"{fids[1] / teacher_fid:.3f}x | {fids[1] / onestep_fid:.3f}x | {fids[2]:.2f} | "
              f"{fids[2] / teacher_fid:.3f}x |", flush=True)
    (out / "scores.json").write_text(json.dumps(rows, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser("train", help="pairs, then every --run's student side by side (GPU)")
    train_parser.add_argument("--run", type=Run.parse, action="append", required=True,
                              help="NAME:num_pairs=N[,batch_size=B,train_steps=S,learning_rate=LR,...] over "
                                   "params.yaml's student.train")
    train_parser.add_argument("--pairs-batch-size", type=int, default=4000,
                              help="pairs per flow-map batch (changes no pair's bytes)")
    train_parser.add_argument("--threads", type=int, default=0,
                              help="torch CPU threads of each run's process (0: the cores shared among the runs)")
    score_parser = commands.add_parser("score", help="sample and measure every trained run (CPU)")
    for sub in (train_parser, score_parser):
        sub.add_argument("teacher", help="a teacher of params.yaml, e.g. var-tiny")
        sub.add_argument("--source", required=True, help="a finished run's data folder (tokenizer, teacher; "
                                                         "for score also dataset, classifier and samples)")
        sub.add_argument("--out", required=True, help="where the students and summary.json go")
    args = parser.parse_args()
    # The runs' data folders (pairs, students; links to --source) go when the command ends; OUT keeps the results.
    with tempfile.TemporaryDirectory(prefix=f"student_scaling_{args.command}_") as work:
        (train if args.command == "train" else score)(args, Path(work))


if __name__ == "__main__":
    main()
