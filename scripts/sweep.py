"""A distillation stage under other settings, on a finished run's teacher and pairs, scored on the validation split.

The stage is `student` (DD1) or `dd2`. Each variant is params.yaml with some keys set (`--set
student.target_width=0`, as `dvc exp run -S`). It runs in a folder of its own, DATA/TEACHER/sweep/<stage>/<name>/
(its params.yaml, its checkpoints and metrics), which links the run's teacher, tokenizer and pairs (and, for dd2,
its DD1 student, which dd2.generator_init=dd1 starts from), so nothing of the run is touched and a rerun of the
same variant resumes its training. dd2 variants whose stage 1 settings agree (recipe, head, seed, dd2.gts) share
one stage 1 (DATA/TEACHER/sweep/dd2/gts-<fingerprint>/), so a sweep over stage 2 trains stage 1 once.

Prints one JSON line: the variant's settings, the stage's metrics (student.json / dd2.json) and the validation
FID of each of the method's rows in sample_dd (DD1: dd and sample.dd_variants; DD2: the 1-step dd2), from
--num-samples samples of the sample stage's seed. Settings are chosen on these figures; the test split is for
eval.json only. A pairs setting (pairs.*) is refused: the variant reads the run's shards.

Needs the pairs stage of TEACHER, the classifier, and for dd2 the student stage (`dvc repro student@llamagen-tiny
classifier`).

    python scripts/sweep.py llamagen-tiny student --name onehot --set student.target_width=0
    python scripts/sweep.py llamagen-tiny dd2 --name k5 --set dd2.csd.guidance_updates=5
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from dd.artifacts import load_tokenizer, teacher_classes
from dd.config import fingerprint, load_config
from dd.evaluation import frechet_distance, load_classifier, predict
from dd.layout import Layout, load_images
from dd.sampling import run_sampler
from pipeline import dd2 as dd2_stage, student as student_stage
from pipeline.sample_dd import dd_samplers, distilled_steps

STAGES = {"student": student_stage, "dd2": dd2_stage}
LINKED = {"student": ("teacher", "tokenizer", "pairs", "params"),          # the run's per-teacher outputs it reads
          "dd2": ("teacher", "tokenizer", "pairs", "params", "student")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", help="a teacher of params.yaml `teachers`, e.g. llamagen-tiny")
    parser.add_argument("stage", choices=sorted(STAGES), help="the distillation stage to rerun")
    parser.add_argument("--name", required=True, help="the variant's folder name (a rerun of it resumes)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a params.yaml key (dotted path) and its YAML value; repeat for several")
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--data", type=Path, default=Path("data"), help="the pipeline's data folder")
    parser.add_argument("--progress", action="store_true", help="progress bars")
    args = parser.parse_args()

    if any(assignment.startswith("pairs.") for assignment in args.set):
        parser.error("a variant reads the run's pair shards: change pairs.* in params.yaml and `dvc repro` instead")
    run, folder = Layout(args.teacher, args.data), args.data / args.teacher / "sweep" / args.stage / args.name
    params = yaml.safe_load(Path("params.yaml").read_text())
    # The dd2 stage reads the DD1 student where dd2.generator_init is dd1; the student stage needs only dd1.
    params["methods"] = ["dd1", "dd2"] if args.stage == "dd2" else ["dd1"]
    params.get("overrides", {}).get(args.teacher, {}).pop("methods", None)
    for assignment in args.set:
        key, _, value = assignment.partition("=")
        _assign(params, key.split("."), yaml.safe_load(value))
    (folder / "data" / args.teacher).mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    config = load_config(folder / "params.yaml", args.teacher)          # validated as the pipeline's
    for name in LINKED[args.stage]:
        _link(folder / "data" / args.teacher / name, getattr(run, f"{name}_dir"))
    for name in ("dataset", "classifier"):
        _link(folder / "data" / name, run.data_root / name)
    layout = Layout(args.teacher, folder / "data", metrics_root=folder / "metrics")
    if args.stage == "dd2":
        gts = config.recipe, config.dd2.head_width, config.dd2.head_depth, config.dd2.seed, config.dd2.gts
        shared = folder.parent / f"gts-{fingerprint(*gts)}"
        shared.mkdir(parents=True, exist_ok=True)
        layout.dd2_dir.mkdir(parents=True, exist_ok=True)
        _link(layout.dd2_dir / "gts", shared)

    figures = STAGES[args.stage].run(config, layout, args.progress)
    started = time.perf_counter()
    tokenizer, classifier = load_tokenizer(layout), load_classifier(layout.classifier_dir)
    real, _ = predict(classifier, load_images(layout, "validation").images)
    rows = {"dd2": dd_samplers(config, layout)["dd2"]} if args.stage == "dd2" else dd_samplers(config, layout)
    steps, fids = distilled_steps(config), {}
    for method, sampler in rows.items():
        tokens, _ = run_sampler(sampler, range(args.num_samples), config.sample.seed, tokenizer.num_tokens,
                                tokenizer.codebook.shape[1], teacher_classes(layout), config.sample.batch_size,
                                f"{method} ({steps[method]} steps)", args.progress, labels_mode=config.sample.labels)
        fids[method] = round(frechet_distance(real, predict(classifier, tokenizer.decode(tokens))[0]), 3)
    print(json.dumps({"teacher": args.teacher, "stage": args.stage, "name": args.name, "set": args.set, **figures,
                      "validation_fid": fids, "num_samples": args.num_samples,
                      "sample_seconds": round(time.perf_counter() - started, 1)}), flush=True)


def _assign(params: dict, keys: list[str], value) -> None:
    for key in keys[:-1]:
        params = params.setdefault(key, {})
    params[keys[-1]] = value


def _link(path: Path, target: Path) -> None:
    if not path.exists():
        path.symlink_to(target.resolve(), target_is_directory=True)


if __name__ == "__main__":
    main()
