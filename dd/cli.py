"""The `dd` command line: run any pipeline stage alone, with the same params.yaml that `dvc repro` uses.

Every stage command calls the same `pipeline.<stage>.run` function as the DVC stage of that name, so
`dd pairs llamagen-tiny` and `dvc repro pairs@llamagen-tiny` do the same work (DVC also records it).
"""
from __future__ import annotations

import importlib
import json
import os
import time
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich import print as rich_print

from dd.config import ConfigError, load_config, to_dict
from dd.layout import Layout

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)

Teacher = Annotated[str, typer.Argument(help="A teacher listed under `teachers:` in params.yaml, e.g. llamagen-tiny.")]
Params = Annotated[Path, typer.Option("--params", help="The params file (validated on load).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the resolved config as JSON and exit.")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]
Threads = Annotated[int, typer.Option("--threads", help="torch CPU threads; 0 keeps torch's default.")]


def _run_stage(stage: str, teacher: str | None, params: Path, dry_run: bool, progress: bool, threads: int) -> None:
    try:
        config = load_config(params)
        if teacher is not None and teacher not in config.teachers:
            raise typer.BadParameter(f"'{teacher}' is not in params.yaml teachers {list(config.teachers)}; add it "
                                     "there first (DVC runs one stage per listed teacher)", param_hint="TEACHER")
        config = load_config(params, teacher)   # resolved for this teacher: a published one carries its recipe
    except ConfigError as error:
        raise typer.BadParameter(str(error), param_hint="params") from None
    if dry_run:
        typer.echo(json.dumps(to_dict(config), indent=2))
        return
    if threads:
        torch.set_num_threads(threads)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        # Launched by torchrun: pairs and training split their work by rank (never a home-made launcher).
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    module = importlib.import_module(f"pipeline.{stage}")
    layout = Layout(teacher or "")
    started = time.time()
    result = module.run(config, layout, progress=progress)
    seconds = time.time() - started
    # A wall-clock record of every stage run, for the pipeline's time budget (not a DVC output: it is noise).
    with open(layout.data_root / "stage_times.jsonl", "a") as log:
        # The CPU's vector extensions set the speed: the same run took 1.8x as long on AVX2 as on AVX-512 (README).
        log.write(json.dumps({"stage": stage, "teacher": teacher, "seconds": round(seconds, 1),
                              "threads": torch.get_num_threads(), "cpu": torch.backends.cpu.get_cpu_capability(),
                              "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    typer.echo(f"stage {stage} {teacher or ''} took {seconds:.1f} s", err=True)
    rich_print({k: v for k, v in result.items() if not isinstance(v, dict)} if stage == "evaluate" else result)


@app.command()
def data(params: Params = Path("params.yaml"), dry_run: DryRun = False, threads: Threads = 0):
    """Load the train and test splits (data.source) and fit them to data.image_size.

    Examples:
      dd data
      dd data --dry-run
    """
    _run_stage("data", None, params, dry_run, False, threads)


@app.command()
def classifier(params: Params = Path("params.yaml"), dry_run: DryRun = False, progress: Progress = True,
               threads: Threads = 0):
    """Train the evaluation classifier whose features FID / precision / recall use.

    Examples:
      dd classifier
    """
    _run_stage("classifier", None, params, dry_run, progress, threads)


def _teacher_command(stage: str, summary: str):
    def command(teacher: Teacher, params: Params = Path("params.yaml"), dry_run: DryRun = False,
                progress: Progress = True, threads: Threads = 0):
        _run_stage(stage, teacher, params, dry_run, progress, threads)
    command.__doc__ = f"{summary}\n\nExamples:\n  dd {stage.replace('_', '-')} llamagen-tiny\n  " \
                      f"dd {stage.replace('_', '-')} llamagen-tiny --dry-run"
    app.command(name=stage.replace("_", "-"))(command)


_teacher_command("resolve", "Write the params each of the teacher's stages reads, after presets and overrides, to "
                            "data/<teacher>/params/<stage>.json: the files dvc.yaml makes each stage depend on.")
_teacher_command("tokenizer", "Fit the teacher's VQ tokenizer on the train split, or download a published teacher's "
                              "VQ (tokenizer.source; tokenizer.*).")
_teacher_command("teacher", "Train the AR teacher (teacher.*; rerun the same command to resume), or download the "
                            "published checkpoint (teacher.source: download; resumes a partial file, checks sha256).")
_teacher_command("pairs", "Generate the DD (noise, tokens, class) pairs as webdataset shards (pairs.*, recipe.*, "
                          "flow.*); rerun to resume, complete shards are kept. Under torchrun, shards are split over ranks.")
_teacher_command("student", "Train the DD student (DD1) on the pairs (student.*), if `methods` lists dd1; rerun the "
                            "same command to resume.")
_teacher_command("dd2", "Train DD2 (dd2.*), if `methods` lists dd2: the AR-diffusion model on the pair tokens (GTS), "
                        "then the one-step generator (CSD); rerun the same command to resume.")
_teacher_command("sample", "Sample the teacher, the onestep and skip baselines and tokenizer reconstructions.")
_teacher_command("sample_dd", "Sample every distilled row: DD1 at student.steps steps (1 or 2), with "
                              "student.teacher_steps of the teacher's own between the two (hybrid sampling; 0: off), "
                              "and sample.dd_variants; DD2 in one step and dd2.teacher_steps.")
_teacher_command("latency", "Benchmark seconds per image of every method at latency.batch_sizes, side by side.")
_teacher_command("evaluate", "FID, fid_to_teacher, precision/recall, class accuracy; eval.json, grids and plot.")


@app.command()
def report(params: Params = Path("params.yaml")):
    """Print the results tables (markdown) from metrics/<teacher>/eval.json and latency.json: the README's tables.

    One table per teacher, every row of its eval.json in order (teacher, dd and its variants, the baselines),
    with both FIDs (the test split, which reports; the validation split, which settings are chosen on) and the
    latency and speed-up over the teacher at each of latency.batch_sizes, all from one latency run.

    Examples:
      dd report
    """
    config = load_config(params)
    for teacher in config.teachers:
        layout = Layout(teacher)
        table = json.loads((layout.metrics_dir / "eval.json").read_text())
        latency = json.loads((layout.metrics_dir / "latency.json").read_text())
        protocol, batches = table["protocol"], config.latency.batch_sizes
        typer.echo(f"\n**{teacher}**: {config.sample.num_samples:,} samples per method; FID in the "
                   f"{protocol['feature_extractor']} against the {protocol['reference']}; fid_to_teacher against "
                   f"{protocol['teacher_reference']['num_samples']:,} teacher samples of their own seed; latency "
                   f"{latency['threads']} {latency['device'].upper()} threads\n")
        typer.echo("| method | steps | FID | validation FID | / teacher | fid_to_teacher | precision | recall | "
                   + " | ".join(f"ms/img batch {b} | speed-up" for b in batches) + " |")
        typer.echo("|---" * (8 + 2 * len(batches)) + "|")
        for method in _report_order(table):
            row = table[method]
            timing = [f"{1000 * t['seconds_per_image']:.2f} | {t['speedup']:.1f}x" if t else "- | -"
                      for t in (latency[f"batch_{b}"].get(method) for b in batches)]
            cells = [_cell(row.get(key)) for key in ("precision", "recall")]      # null under Inception
            typer.echo(f"| {method} | {row['steps']} | {row['fid']:.2f} | {_cell(row.get('validation_fid'), '.2f')} | "
                       f"{row['fid'] / table['teacher']['fid']:.2f} | {row['fid_to_teacher']:.2f} | {' | '.join(cells)} | "
                       + " | ".join(timing) + " |")


def _report_order(table: dict) -> list[str]:
    """eval.json's rows (stored in key order) as the results table lists them: the teacher, the distilled rows,
    the baselines, the tokenizer's reconstruction; a row repeated under another name (same_as) once."""
    rows = [m for m in table if m != "protocol" and "same_as" not in table[m]]
    rank = lambda m: (m != "teacher", not m.startswith("dd"), m == "reconstruction")
    return sorted(rows, key=rank)        # stable: within a group, eval.json's order


def _cell(value: float | None, form: str = ".3f") -> str:
    return "-" if value is None else f"{value:{form}}"


@app.command()
def download(url: Annotated[str, typer.Argument(help="http(s):// or file:// URL of the checkpoint.")],
             destination: Annotated[Path, typer.Argument(help="Where the verified file goes.")],
             sha256: Annotated[str, typer.Option("--sha256", help="Expected hex digest, checked before the file "
                                                 "is renamed into place.")] = "",
             retries: Annotated[int, typer.Option("--retries", help="Further attempts after a transient "
                                                  "failure, with exponential backoff.")] = 5,
             progress: Progress = True):
    """Download a published checkpoint: resumes a partial file, retries, verifies, renames atomically.

    Examples:
      dd download https://huggingface.co/FoundationVision/LlamaGen/resolve/main/c2i_B_256.pt data/llamagen-b/c2i_B_256.pt
      dd download https://huggingface.co/FoundationVision/var/resolve/main/var_d16.pth var_d16.pth --sha256 <hex>
    """
    from dd.download import DownloadError, download as fetch

    try:
        path = fetch(url, destination, sha256=sha256 or None, retries=retries, progress=progress)
    except DownloadError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{path} ({path.stat().st_size} bytes)")


@app.command("code-deps")
def code_deps(stage: Annotated[str, typer.Argument(help="A stage of dvc.yaml (e.g. pairs); all stages if omitted.")] = "",
              check: Annotated[bool, typer.Option("--check", help="Compare with dvc.yaml's deps; exit 1 naming "
                                                  "every missing or stale code dep.")] = False,
              dvc_file: Annotated[Path, typer.Option("--dvc-file", help="The pipeline file --check reads.")] = Path("dvc.yaml")):
    """The code a stage runs: pipeline/<stage>.py and every project module it imports, transitively. These are
    its dvc.yaml code deps, and their hashes are in every checkpoint or shard set it resumes (dd/provenance.py).

    Examples:
      dd code-deps pairs
      dd code-deps --check
    """
    import yaml

    from dd.provenance import dvc_deps_problems, stage_code_files

    stages = yaml.safe_load(dvc_file.read_text())["stages"]
    if stage and stage not in stages:
        raise typer.BadParameter(f"no stage '{stage}' in {dvc_file}: {', '.join(stages)}", param_hint="STAGE")
    if check:
        problems = dvc_deps_problems({stage: stages[stage]} if stage else stages)
        for problem in problems:
            typer.echo(problem, err=True)
        if problems:
            raise typer.Exit(1)
        typer.echo(f"{dvc_file}: every stage lists exactly the code it runs")
        return
    for name in [stage] if stage else stages:
        typer.echo(f"{name}:\n" + "".join(f"  - {path}\n" for path in stage_code_files(name)), nl=False)


if __name__ == "__main__":
    app()
