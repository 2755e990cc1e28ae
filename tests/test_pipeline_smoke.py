"""The whole pipeline under DVC on tiny overrides: every stage runs and eval.json has the contract's fields."""
import copy
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dd.checkpoint import load_state_dict
from dd.config import dd_method
from dd.teachers import preset_config

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "teachers": ["llamagen-tiny"],     # the raster teacher alone: var-tiny's full-size overrides would train for
                                       # minutes (its own test below runs it on a small image folder)
    "classifier": {"train_steps": 30},
    "tokenizer": {"kmeans_iterations": 3, "kmeans_samples": 20000},
    # compile off: ~60 s of compiling per model would dwarf 10 steps
    "teacher": {"train": {"train_steps": 10, "checkpoint_every": 5, "log_every": 5, "compile": False}},
    "pairs": {"num_pairs": 200, "shard_size": 100, "batch_size": 100},
    "student": {"train": {"train_steps": 10, "checkpoint_every": 5, "log_every": 5, "compile": False}},
    # trained only where a test adds dd2 to `methods`
    "dd2": {"head_width": 32, "gts": {"train_steps": 6, "batch_size": 8, "checkpoint_every": 3, "log_every": 3},
            "csd": {"train_steps": 4, "batch_size": 8, "checkpoint_every": 2, "log_every": 2}, "teacher_steps": [32]},
    "sample": {"num_samples": 200, "batch_size": 100},
    "latency": {"batch_sizes": [1, 8], "repeats": 1},
    "evaluate": {"grid_samples": 16, "latency_batch_size": 8},
}
METHODS = ["teacher", "dd", "onestep", "skip"]
FIELDS = ["steps", "fid", "fid_to_teacher", "precision", "recall", "class_accuracy", "seconds_per_image", "speedup"]


def _merge(base: dict, override: dict) -> dict:
    return {k: _merge(base.get(k, {}), v) if isinstance(v, dict) else v for k, v in override.items()} | \
        {k: v for k, v in base.items() if k not in override}


def _run(args, cwd):
    # PYTHONPATH: the stages run the run's own copy of dd/ and pipeline/, the files DVC hashes as their deps
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
               PYTHONPATH=str(cwd))
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _stages_rerun(cwd) -> set[str]:
    """`dvc repro`, and the stages it ran."""
    return _repro(cwd)[0]


def _repro(cwd, *targets: str) -> tuple[set[str], str]:
    """`dvc repro [targets]`: the stages it ran, and everything it and they printed."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
               PYTHONPATH=str(cwd))
    result = subprocess.run(["dvc", "repro", *targets], cwd=cwd, env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"dvc repro failed:\n{output[-5000:]}"
    return set(re.findall(r"Running stage '([^']+)'", output)), output


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _check_hybrid_samples(cwd, teacher: str, teacher_steps: int, first_tokens: int) -> None:
    """After a rerun with hybrid sampling in which the teacher remakes every token before the second step (n = 0):
    the DD samples begin with the teacher's own samples' first tokens (same noise, the teacher's own draw), and
    eval.json counts the teacher's steps and one student call."""
    dd_tokens, teacher_tokens = (np.load(cwd / "data" / teacher / folder / name)["tokens"]
                                 for folder, name in (("samples_dd", "dd.npz"), ("samples", "teacher.npz")))
    assert np.array_equal(dd_tokens[:, :first_tokens], teacher_tokens[:, :first_tokens])
    assert not np.array_equal(dd_tokens, teacher_tokens)
    assert json.loads((cwd / "metrics" / teacher / "eval.json").read_text())["dd"]["steps"] == teacher_steps + 1


FASHION_MNIST = pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").exists(),
                                   reason="needs the Debian package dataset-fashion-mnist (.ci/run installs it)")


@pytest.fixture(scope="module")
def llamagen_tiny_run(tmp_path_factory) -> tuple[Path, dict]:
    """The whole pipeline under DVC on tiny params (llamagen-tiny on Fashion-MNIST), run once for the tests below,
    and its params. Each test works on its own copy (`_copy_run`), so one test's reruns never change what another
    sees."""
    root = tmp_path_factory.mktemp("llamagen_tiny_run")
    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    _repro_in_new_repository(root, params)
    return root, params


def _repro_in_new_repository(root: Path, params: dict) -> None:
    """The project's stages and code in a new git + DVC repository at root, with these params, and `dvc repro`."""
    for name in ["dvc.yaml", "dd", "pipeline"]:
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / name)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    _run(["git", "init", "-q"], root)
    _run(["dvc", "init", "-q"], root)
    _run(["dvc", "repro"], root)


def _copy_run(run: tuple[Path, dict], tmp_path: Path) -> tuple[Path, dict]:
    root, params = run
    shutil.copytree(root, tmp_path / "run", symlinks=True)
    return tmp_path / "run", copy.deepcopy(params)


@FASHION_MNIST
def test_dvc_repro_on_tiny_params(llamagen_tiny_run, tmp_path):
    run_dir, params = _copy_run(llamagen_tiny_run, tmp_path)
    table = json.loads((run_dir / "metrics" / "llamagen-tiny" / "eval.json").read_text())
    for method in METHODS:
        assert all(isinstance(table[method][field], (int, float)) for field in FIELDS), method
    # Beside the 1-step dd row, the DD rows of sample.dd_variants: 2 steps, and hybrid with 16 teacher steps
    assert {m: table[m]["steps"] for m in ("dd", "dd-2step", "dd-hybrid-16")} == {"dd": 1, "dd-2step": 2, "dd-hybrid-16": 18}
    assert all(isinstance(table["dd-hybrid-16"][field], (int, float)) for field in FIELDS)
    for picture in ("grids/dd.png", "grids/dd-hybrid-16.png", "fid_vs_latency.png", "comparison.png"):
        assert (run_dir / "metrics" / "llamagen-tiny" / picture).exists(), picture

    # `dd report`: one row per eval.json row, skip included, with the latency at both benchmark batch sizes
    report = _run(["dd", "report"], run_dir)
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in report.splitlines() if line.startswith("| ")}
    assert list(rows)[1:6] == ["teacher", "dd", "dd-2step", "dd-hybrid-16", "onestep"]   # after the header
    assert {"teacher", "dd", "dd-2step", "dd-hybrid-16", "skip", "onestep", "reconstruction"} <= set(rows)
    assert rows["dd"][1] == "1" and rows["dd"][2] == f"{table['dd']['fid']:.2f}" and len(rows["dd"]) == 12
    assert rows["reconstruction"][-4:] == ["-", "-", "-", "- |"] and rows["teacher"][9] == "1.0x"

    # The training curves dvc.yaml declares render: `dvc plots show` reads every plot file, each with its rows.
    plots = json.loads(_run(["dvc", "plots", "show", "--json"], run_dir))
    assert not plots.get("errors"), plots["errors"]
    for log in ("teacher_log.json", "student_log.json"):
        [plot] = plots["data"][f"metrics/llamagen-tiny/{log}"]
        assert [row["step"] for row in plot["content"]["data"]["values"]] == [5, 10], log

    # A change of DD sampling, here to 2 steps with the teacher making the first 32 tokens (hybrid), reruns
    # sampling, latency and evaluation only (after resolve, which writes their params)
    params["student"].update(steps=2, teacher_steps=32)
    (run_dir / "params.yaml").write_text(yaml.safe_dump(params))
    assert _stages_rerun(run_dir) == {f"{stage}@llamagen-tiny" for stage in ("resolve", "sample_dd", "latency",
                                                                              "evaluate")}
    _check_hybrid_samples(run_dir, "llamagen-tiny", teacher_steps=32, first_tokens=32)

    # DD2 beside DD1 (methods: [dd1, dd2]): the student stage reruns and keeps its finished training (the same
    # weights), dd2 trains, and sampling, latency and evaluation rerun; eval.json gains DD2's rows
    metrics, data = run_dir / "metrics" / "llamagen-tiny", run_dir / "data" / "llamagen-tiny"
    assert json.loads((metrics / "dd2.json").read_text()) == {"trained": False}
    student = load_state_dict(data / "student" / "model.pt")
    params["methods"] = ["dd1", "dd2"]
    (run_dir / "params.yaml").write_text(yaml.safe_dump(params))
    assert _stages_rerun(run_dir) == {f"{stage}@llamagen-tiny" for stage in ("resolve", "student", "dd2", "sample_dd",
                                                                              "latency", "evaluate")}
    assert _same_weights(load_state_dict(data / "student" / "model.pt"), student)
    table = json.loads((metrics / "eval.json").read_text())
    assert {m: table[m]["steps"] for m in ("dd", "dd2", "dd2-hybrid-32")} == {"dd": 33, "dd2": 1, "dd2-hybrid-32": 33}
    assert all(isinstance(table[m][field], (int, float)) for m in ("dd2", "dd2-hybrid-32") for field in FIELDS)
    figures = json.loads((metrics / "dd2.json").read_text())
    assert figures["trained"] and 0 < figures["gts_relative_error"] < 1 and 0 <= figures["marginal_tv"] <= 1
    dd2, hybrid = (np.load(data / "samples_dd" / f"{name}.npz")["tokens"] for name in ("dd2", "dd2-hybrid-32"))
    assert np.array_equal(hybrid[:, :32], dd2[:, :32]) and not np.array_equal(hybrid, dd2)
    assert [row["step"] for row in json.loads((metrics / "dd2_log.json").read_text())] == [2, 4]


@FASHION_MNIST
def test_a_code_change_reruns_and_restarts_exactly_what_runs_that_code(llamagen_tiny_run, tmp_path):
    """After a complete run, each stage is rerun, and its resumable state discarded, when code it runs changes;
    what the same code and params would make is reused at no cost. The run's stages run its own dd/ and pipeline/
    (PYTHONPATH), the files DVC hashes. Up to the student stage (`dvc repro student@llamagen-tiny`): what reads
    a changed student is the other tests' business."""
    run_dir, _ = _copy_run(llamagen_tiny_run, tmp_path)
    data = run_dir / "data" / "llamagen-tiny"
    stages = lambda *names: {f"{name}@llamagen-tiny" for name in names}
    repro = functools.partial(_repro, run_dir, "student@llamagen-tiny")
    assert _stages_rerun(run_dir) == set()                                    # nothing changed: nothing reruns

    # The flow map's code (a comment: the same pairs). Its shards are made again, by the new code, byte for byte
    # the old ones, so the student, its record unchanged, is reused without a training step.
    shards = {path.name: path.read_bytes() for path in sorted((data / "pairs").glob("pairs-*.tar"))}
    student = load_state_dict(data / "student" / "model.pt")
    (run_dir / "dd" / "flow.py").write_text((run_dir / "dd" / "flow.py").read_text() + "# edited\n")
    rerun, output = repro()
    assert rerun == stages("pairs", "student")
    assert "removing 2 shards: the set was made by other code (dd/flow.py changed)" in output
    assert {path.name: path.read_bytes() for path in sorted((data / "pairs").glob("pairs-*.tar"))} == shards
    assert "resuming from" in output and "afresh" not in output.split("removing 2 shards")[1]
    assert _same_weights(load_state_dict(data / "student" / "model.pt"), student)

    # What the student's loss computes (zero: no gradient). The student trains again from step 0, to other
    # weights; nothing before it reruns.
    _edit(run_dir / "dd" / "raster" / "student.py", "return (per_token * is_noise).sum() / is_noise.sum()",
          "return 0.0 * (per_token * is_noise).sum() / is_noise.sum()")
    rerun, output = repro()
    assert rerun == stages("student")
    assert "was made by other code (dd/raster/student.py changed); starting this training afresh" in output
    assert not _same_weights(load_state_dict(data / "student" / "model.pt"), student)

    # The teacher's loss (label smoothing). The teacher trains again from step 0, to other weights, and what
    # follows reruns: the pairs from the new teacher's weights (other params), the student from step 0.
    teacher = load_state_dict(data / "teacher" / "model.pt")
    _edit(run_dir / "pipeline" / "teacher.py", "tokens[indices].flatten())", "tokens[indices].flatten(), label_smoothing=0.1)")
    rerun, output = repro()
    assert rerun == stages("teacher", "pairs", "student")
    assert "was made by other code (pipeline/teacher.py changed); starting this training afresh" in output
    assert "removing 2 shards: the set was made with other params" in output
    assert output.count("starting this training afresh") == 2                # the teacher's and the student's
    assert not _same_weights(load_state_dict(data / "teacher" / "model.pt"), teacher)
    assert repro()[0] == set()


@FASHION_MNIST
def test_a_damaged_shard_after_a_complete_run_is_redone_and_accepted(llamagen_tiny_run, tmp_path):
    run_dir, _ = _copy_run(llamagen_tiny_run, tmp_path)
    shard = run_dir / "data" / "llamagen-tiny" / "pairs" / "pairs-00001.tar"
    original = shard.read_bytes()
    shard.write_bytes(original[:len(original) // 2])                          # truncated
    rerun, output = _repro(run_dir)
    assert rerun == {"pairs@llamagen-tiny"} and "pairs-00001.tar does not match its checksum" in output
    assert shard.read_bytes() == original                                     # redone byte for byte
    # The student stage reads the redone set (checked against the manifest) and keeps its finished training.
    assert "resuming from" in _run(["dd", "student", "llamagen-tiny", "--no-progress"], run_dir)


# var-tiny (a next-scale teacher) on a small image folder, so every stage takes seconds: the VQVAE encodes
# every image in the teacher stage and decodes every sample.
TRAIN = {"train_steps": 2, "batch_size": 8, "checkpoint_every": 1, "log_every": 1, "compile": False}
VAR_TINY = {
    "classifier": {"train_steps": 10},
    "vqvae": {"train": TRAIN},
    "teacher": {"train": TRAIN},
    "pairs": {"num_pairs": 20, "shard_size": 10, "batch_size": 10},
    "student": {"train": TRAIN},
    "sample": {"num_samples": 20, "batch_size": 10},
    "latency": {"batch_sizes": [1, 2], "repeats": 1},
    "evaluate": {"grid_samples": 16, "latency_batch_size": 2},
}


@pytest.mark.slow
@FASHION_MNIST
def test_llamagen_tiny_sweep_on_the_tiny_run(llamagen_tiny_run, tmp_path):
    """scripts/sweep.py on the tiny run. dd2: two variants that share stage 1 (trained once), their figures, and a
    rerun that resumes both stages. student: a variant of another target width scores every DD1 row, and a
    pairs setting is refused (the variant reads the run's shards)."""
    run_dir, _ = _copy_run(llamagen_tiny_run, tmp_path)
    tiny = ["--set", "dd2.gts.train_steps=4", "--set", "dd2.csd.train_steps=2", "--set", "dd2.csd.batch_size=4",
            "--set", "dd2.head_width=32", "--num-samples", "50"]
    command = [sys.executable, str(ROOT / "scripts" / "sweep.py"), "llamagen-tiny", "dd2", *tiny]
    paper = json.loads(_run([*command, "--name", "paper"], run_dir).splitlines()[-1])
    student = _run([*command, "--name", "student", "--set", "dd2.generator_init=dd1"], run_dir)
    assert paper["gts_relative_error"] < 1 and np.isfinite(paper["validation_fid"]["dd2"])
    assert "resuming from" in student and np.isfinite(json.loads(student.splitlines()[-1])["validation_fid"]["dd2"])
    assert len(list((run_dir / "data" / "llamagen-tiny" / "sweep" / "dd2").glob("gts-*"))) == 1
    rerun = _run([*command, "--name", "paper"], run_dir)
    timeless = lambda result: {k: v for k, v in result.items() if not k.endswith("_seconds")}
    assert rerun.count("resuming from") == 2 and timeless(json.loads(rerun.splitlines()[-1])) == timeless(paper)

    sweep = [sys.executable, str(ROOT / "scripts" / "sweep.py"), "llamagen-tiny", "student", "--num-samples", "50"]
    onehot = json.loads(_run([*sweep, "--name", "onehot", "--set", "student.target_width=0"], run_dir).splitlines()[-1])
    params = yaml.safe_load((run_dir / "params.yaml").read_text())
    assert set(onehot["validation_fid"]) == {"dd", *(dd_method(*v) for v in params["sample"]["dd_variants"])}
    assert all(np.isfinite(list(onehot["validation_fid"].values()))) and "token_agreement_t0" in onehot
    refused = subprocess.run([*sweep, "--name", "pairs", "--set", "pairs.num_pairs=8"], cwd=run_dir,
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "pairs.*" in refused.stderr


def _image_folder(root: Path, per_class: dict[str, int]) -> None:
    """root/<split>/<class>/*.png: 28x28 grey images, a bright box whose place depends on the class."""
    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for label in range(10):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 30, (28, 28), dtype=np.uint8)
                image[2 * label:2 * label + 10, 4:4 + 8 + label] = rng.integers(150, 255)
                Image.fromarray(image).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def var_tiny_run(tmp_path_factory) -> tuple[Path, dict]:
    """var-tiny's whole pipeline under DVC on tiny params, run once for the tests below, and its params; each test
    works on its own copy (`_copy_run`)."""
    root = tmp_path_factory.mktemp("var_tiny_run")
    _image_folder(root / "images", {"train": 10, "test": 4})
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["teachers"] = ["var-tiny"]
    params["data"]["source"] = str(root / "images")
    params["student"]["steps"] = 2
    # The tiny settings go over the shared sections and var-tiny's own overrides (its other overrides, e.g.
    # student.timesteps, stay); vqvae exists only per teacher.
    params = _merge(params, {section: value for section, value in VAR_TINY.items() if section in params})
    params["overrides"]["var-tiny"] = _merge(params["overrides"]["var-tiny"], VAR_TINY)
    _repro_in_new_repository(root, params)
    return root, params


def test_var_tiny_stages_under_dvc_on_tiny_params(var_tiny_run, tmp_path):
    run_dir, params = _copy_run(var_tiny_run, tmp_path)
    metrics = run_dir / "metrics" / "var-tiny"
    table = json.loads((metrics / "eval.json").read_text())
    for method in ["teacher", "dd", "onestep", "skip-1", "skip-2"]:
        assert all(isinstance(table[method][field], (int, float)) for field in FIELDS), method
    assert table["skip"] == {**table["skip-1"], "same_as": "skip-1"} and table["reconstruction"]["steps"] == 0
    assert [table[m]["steps"] for m in ("teacher", "skip-1", "skip-2", "dd", "onestep")] == [6, 5, 4, 2, 1]
    assert (table["dd-2step"]["steps"], table["dd-hybrid-3"]["steps"]) == (2, 4)     # the teacher's 3 scales, then 1
    assert len(json.loads((metrics / "tokenizer.json").read_text())["codebook_usage_per_scale"]) == 6
    assert (metrics / "grids" / "skip-2.png").exists() and (metrics / "fid_vs_latency.png").exists()

    # An override of var-tiny's student reruns its student and what follows (dd2 reads the student when
    # dd2.generator_init is dd1; here it only writes its no-op outputs again), not its tokenizer, teacher, pairs
    # or teacher samples; with it, hybrid sampling: the teacher makes the first 3 scales (14 tokens)
    params["overrides"]["var-tiny"]["student"]["train"]["learning_rate"] = 0.001
    params["overrides"]["var-tiny"]["student"]["teacher_steps"] = 3
    (run_dir / "params.yaml").write_text(yaml.safe_dump(params))
    assert _stages_rerun(run_dir) == {f"{stage}@var-tiny" for stage in ("resolve", "student", "dd2", "sample_dd",
                                                                          "latency", "evaluate")}
    _check_hybrid_samples(run_dir, "var-tiny", teacher_steps=3, first_tokens=preset_config("var-tiny").scale_slices[2][1])


@pytest.mark.slow
def test_var_tiny_scripts_on_the_tiny_run(var_tiny_run, tmp_path):
    """The scripts kept for users (scripts/) on the tiny run's stages."""
    run_dir, params = _copy_run(var_tiny_run, tmp_path)

    # scripts/recipe_sweep.py on the trained teacher: one line per recipe, both FIDs finite
    lines = _run([sys.executable, str(ROOT / "scripts" / "recipe_sweep.py"), "var-tiny", "--recipe", "1.5,16",
                  "--recipe", "0,0", "--num-samples", "20", "--batch-size", "10"], run_dir).splitlines()
    rows = [json.loads(line) for line in lines if line.startswith("{")]
    assert [(row["cfg_scale"], row["top_k"]) for row in rows] == [(1.5, 16), (0.0, 0)]
    assert all(np.isfinite([row["teacher_fid"], row["onestep_fid"]]).all() for row in rows)

    # scripts/artifact_hashes.py: every artifact of the run, the same for a copy of it, another for a changed sample
    hashes = lambda root: json.loads(_run([sys.executable, str(ROOT / "scripts" / "artifact_hashes.py"), str(root)],
                                          run_dir))["var-tiny"]
    before = hashes(run_dir)
    assert {"pairs/pairs-00000.tar", "teacher/model.pt", "student/model.pt", "samples_dd/dd.npz"} <= set(before)
    assert before["eval.json fid"]["dd"] == json.loads((run_dir / "metrics/var-tiny/eval.json").read_text())["dd"]["fid"]
    shutil.copytree(run_dir, tmp_path / "copy", symlinks=True)
    assert hashes(tmp_path / "copy") == before
    samples = dict(np.load(run_dir / "data/var-tiny/samples_dd/dd.npz"))
    np.savez(run_dir / "data/var-tiny/samples_dd/dd.npz", **{**samples, "tokens": samples["tokens"][::-1]})
    after = hashes(run_dir)
    assert {key for key in before if before[key] != after[key]} == {"samples_dd/dd.npz"}


@pytest.mark.slow
def test_each_stage_killed_mid_run_resumes_to_the_uninterrupted_result(var_tiny_run, tmp_path):
    """kill -9 during the VQVAE tokenizer's, the teacher's and the student's training and during pair generation,
    then the same command again: every artifact is byte for byte what an uninterrupted run made. All four are
    deterministic on a CPU (same batches from (seed, step), the optimizer's state restored, per-pair seeds), so
    bytes are compared. Each stage runs long enough here (40 steps, 6 shards) to be killed half way."""
    longer = {"train_steps": 40, "checkpoint_every": 10, "log_every": 10}
    runs = {}
    for name in ("uninterrupted", "killed"):
        run_dir, params = _copy_run(var_tiny_run, tmp_path / name)
        own = params["overrides"]["var-tiny"]
        for section in ("vqvae", "teacher", "student"):
            own[section]["train"].update(longer)
        own["pairs"].update(num_pairs=60, shard_size=10, batch_size=5)
        (run_dir / "params.yaml").write_text(yaml.safe_dump(params))
        runs[name] = run_dir
    _run(["dvc", "repro"], runs["uninterrupted"])

    killed = runs["killed"]
    _run(["dvc", "repro", "resolve@var-tiny"], killed)
    data = killed / "data" / "var-tiny"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(killed))
    for stage, progress_file, result in (("tokenizer", "checkpoint.pt", "tokenizer.pt"),
                                         ("teacher", "checkpoint.pt", "model.pt"),
                                         ("pairs", "pairs-00001.json", "manifest.json"),
                                         ("student", "checkpoint.pt", "model.pt")):
        shutil.rmtree(data / stage)
        process = subprocess.Popen(["dd", stage, "var-tiny", "--no-progress"], cwd=killed, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not (data / stage / progress_file).exists() and process.poll() is None:
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL and not (data / stage / result).exists(), f"{stage} finished first"
        output = _run(["dd", stage, "var-tiny", "--no-progress"], killed)
        assert "resuming from" in output or stage == "pairs", output
        expected = runs["uninterrupted"] / "data" / "var-tiny" / stage
        names = sorted(path.name for path in expected.iterdir() if path.suffix in (".pt", ".tar") and path.name != "checkpoint.pt")
        assert names and all((data / stage / name).read_bytes() == (expected / name).read_bytes() for name in names), stage
