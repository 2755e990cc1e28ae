"""DD2 under other settings, on a finished run's teacher and pairs: the dd2 stage, then its 1-step validation FID.

Each variant is params.yaml with some keys set (`--set dd2.csd.guidance_updates=5`, as `dvc exp run -S`). It
runs in a folder of its own, DATA/TEACHER/dd2_sweep/<name>/ (its params.yaml, its dd2 checkpoints and
metrics), which links the run's teacher, tokenizer and pairs, so nothing of the run is touched and a rerun of the
same variant resumes its training. Variants whose stage 1 settings agree (recipe, head, seed, dd2.gts) share one
stage 1 (DATA/TEACHER/dd2_sweep/gts-<fingerprint>/), so a sweep over stage 2 trains stage 1 once. Prints one JSON line: the variant's settings, dd2.json's figures (GTS error,
token-law distances, seconds of each stage) and the 1-step FID against the validation split, from
--num-samples samples of the sample stage's seed. Settings are chosen on these figures; the test split is for
eval.json only.

Needs the pairs and student stages of TEACHER and the classifier (`dvc repro student@llamagen-tiny classifier`).

    python scripts/dd2_sweep.py llamagen-tiny --name k5 --set dd2.csd.guidance_updates=5
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import yaml

from dd.artifacts import load_tokenizer, teacher_classes
from dd.config import fingerprint, load_config
from dd.evaluation import frechet_distance, load_classifier, predict
from dd.layout import Layout, load_images
from dd.sampling import run_sampler
from pipeline import dd2 as dd2_stage
from pipeline.sample_dd import dd_samplers

LINKED = ("teacher", "tokenizer", "pairs", "student", "params")   # the run's per-teacher outputs a variant reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", help="a raster teacher of params.yaml `teachers`, e.g. llamagen-tiny")
    parser.add_argument("--name", required=True, help="the variant's folder name (a rerun of it resumes)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a params.yaml key (dotted path) and its YAML value; repeat for several")
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--data", type=Path, default=Path("data"), help="the pipeline's data folder")
    parser.add_argument("--progress", action="store_true", help="progress bars")
    args = parser.parse_args()

    run, folder = Layout(args.teacher, args.data), args.data / args.teacher / "dd2_sweep" / args.name
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["methods"] = ["dd1", "dd2"]          # dd1: its student may start the generator (dd2.generator_init)
    for assignment in args.set:
        key, _, value = assignment.partition("=")
        _assign(params, key.split("."), yaml.safe_load(value))
    (folder / "data" / args.teacher).mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    config = load_config(folder / "params.yaml", args.teacher)          # validated as the pipeline's
    config = dataclasses.replace(config, dd2=dataclasses.replace(config.dd2, teacher_steps=[]))
    for name in LINKED:
        _link(folder / "data" / args.teacher / name, getattr(run, f"{name}_dir"))
    for name in ("dataset", "classifier"):
        _link(folder / "data" / name, run.data_root / name)
    layout = Layout(args.teacher, folder / "data", metrics_root=folder / "metrics")
    gts = config.recipe, config.dd2.head_width, config.dd2.head_depth, config.dd2.seed, config.dd2.gts
    shared = args.data / args.teacher / "dd2_sweep" / f"gts-{fingerprint(*gts)}"
    shared.mkdir(parents=True, exist_ok=True)
    layout.dd2_dir.mkdir(parents=True, exist_ok=True)
    _link(layout.dd2_dir / "gts", shared)

    figures = dd2_stage.run(config, layout, args.progress)
    started = time.perf_counter()
    tokenizer, classifier = load_tokenizer(layout), load_classifier(layout.classifier_dir)
    tokens, _ = run_sampler(dd_samplers(config, layout)["dd2"], range(args.num_samples), config.sample.seed,
                            tokenizer.num_tokens, tokenizer.codebook.shape[1], teacher_classes(layout),
                            config.sample.batch_size, "dd2 (1 step)", args.progress)
    real, _ = predict(classifier, load_images(layout, "validation").images)
    fid = frechet_distance(real, predict(classifier, tokenizer.decode(tokens))[0])
    print(json.dumps({"teacher": args.teacher, "name": args.name, "set": args.set, **figures,
                      "validation_fid": round(fid, 3), "num_samples": args.num_samples,
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
