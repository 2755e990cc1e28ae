"""GPU check: teacher vs DD 1-step latency at the published sizes, and an end-to-end smoke on the GPU.

Speed does not depend on the weights, so the models are the published architectures with random weights
(bf16). For each preset and batch size it times, with CUDA events (median of `--repeats` after a warm-up):
  teacher        the KV-cached sampler with the paper's recipe (LlamaGen: 256 token steps, cfg 2.0, top-k 8000;
                 VAR: 10 scale steps through the VQVAE's f_hat, cfg 2.0 ramped over scales, top-k 900,
                 top-p 0.95), eager
  teacher_graph  the same whole sampling loop captured once as a CUDA graph and replayed
  dd_1step       the DD student's single forward on noise (+ argmax), eager and as a CUDA graph (for VAR the
                 VARStudent of dd/next_scale/student.py: 1 + 680 positions, block mask, noise/data embedding)
  teacher_stage  the teacher as the stages sample it: fp32 weights through dd/fast_path.py (bf16 autocast, one
                 CUDA graph per batch shape), against teacher_graph (bar: within 1.3x); dd_1step_stage likewise
  dd_hybrid{K}   hybrid sampling (method.md section 6) as a CUDA graph: the student, K steps of the teacher's
                 own sampler after a prefill of the student's first tokens, the student again from the paper's
                 intermediate timestep (LlamaGen 80 tokens, VAR-d16 5 scales, larger VARs 4); K as in the
                 paper's hybrid rows (LlamaGen-L 22/42/81 steps: K = 20/40/79; VAR-d16 3/4/6 steps: K = 1/2/4)
Then a smoke run: a few hundred pairs from llamagen-b through the flow map, a few student training steps on
them, and 1- and 2-step sampling, all on the GPU. Last, the published path through the pipeline's own stages
(scripts/published_pipeline.py) for each of --pipeline-presets (default llamagen-b): the teacher and tokenizer
checkpoints written in the published format (random weights), fetched by the tokenizer and teacher stages from
file:// URLs, then pairs, student, sample, sample_dd and latency with the paper recipe at small counts (256
pairs, 10 student steps, 128 samples, batch 64), exactly as `dvc repro` runs them (evaluate needs Inception
weights, which this offline machine lacks). Then scripts/throughput.py for each of --throughput-presets: each stage's
marginal cost per pair, step and sample, and the paper's scale projected on 8 GPUs of this kind.

    python scripts/gpu_check.py                 # prints a table; --out DIR also writes gpu_check.json there
    python scripts/gpu_check.py --sections pipeline --pipeline-presets var-d16
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
import yaml

from dd.config import FlowConfig, PairsConfig, RecipeConfig, SampleConfig, TrainConfig, resolve
from dd.fast_path import fast_sampler
from dd.models.llamagen import GPT, PRESETS
from dd.models.var import VAR, PRESETS as VAR_PRESETS
from dd.models.var_vqvae import MultiScaleVQVAE, PRESETS as VAE_PRESETS
from dd.next_scale.sampling import sample_var_scales, sample_var_teacher, teacher_sampler as var_teacher_sampler
from dd.next_scale.student import VARStudent, sample_var_dd
from dd.pairs import read_pairs, write_pairs
from dd.presets import paper_recipe
from dd.provenance import record
from dd.raster.sampling import sample_teacher
from dd.raster.sampling import sequence_map
from dd.raster.student import DDStudent, sample_dd, student_loss
from dd.seeding import balanced_labels, per_sample_noise
from dd.training import read_log, train

PAPER_RECIPE = RecipeConfig(cfg_scale=2.0, temperature=1.0, top_k=8000, top_p=1.0)   # DD's LlamaGen setting
VAR_PAPER_RECIPE = RecipeConfig(cfg_scale=2.0, temperature=1.0, top_k=900, top_p=0.95)  # DD's VAR setting
CODE_DIM = 8
# Hybrid sampling's teacher steps, per family (the paper's hybrid rows)
HYBRID_TEACHER_STEPS = {"llamagen": (20, 40, 79), "var": (1, 2, 4)}
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def random_model(preset: str, device) -> GPT:
    model = GPT(PRESETS[preset], head_std=0.02)
    return model.to(device, torch.bfloat16).eval().requires_grad_(False)


def time_call(function, repeats: int) -> float:
    """Median seconds of function() over repeats, after one warm-up call, timed with CUDA events."""
    function()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def as_graph(function):
    """Capture function() (static inputs it closes over) as one CUDA graph; returns replay()."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        function()   # warm-up outside the graph (allocator, kernels selection)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        function()
    return graph.replay


def samplers(preset: str, device) -> tuple[dict, int, int, int]:
    """({name: sampler(labels, noise)}, tokens per image, code dim, classes) of a preset: teacher, dd_1step and
    dd_hybrid{K} on bf16 weights (the fastest we write), and teacher_stage, dd_1step_stage as the stages run them
    (fp32 weights through dd/fast_path.py: bf16 autocast, and on CUDA one graph per batch shape)."""
    # Where the second student step starts: the paper recipe's for a published preset (resolving one here would
    # ask for the Inception reference it does not use), params.yaml's for the embedded ones
    recipe = paper_recipe(preset)
    intermediate = (max(recipe["student"]["timesteps"]) if recipe
                    else resolve(yaml.safe_load(PARAMS.read_text()), preset).student.intermediate_timestep)
    if preset in VAR_PRESETS:
        model = VAR(VAR_PRESETS[preset]).to(device, torch.bfloat16).eval().requires_grad_(False)
        vae_preset = "vae-tiny" if preset == "var-tiny" else "vae-ch160v4096z32"
        vqvae = MultiScaleVQVAE(VAE_PRESETS[vae_preset]).to(device).eval().requires_grad_(False)
        config = model.config
        codebook = vqvae.codebook.to(torch.bfloat16)
        student = VARStudent.from_teacher(model, codebook)
        teacher = lambda labels, noise: sample_var_teacher(model, vqvae, VAR_PAPER_RECIPE, labels, noise)
        dd_sampler = functools.partial(sample_var_dd, student, codebook)
        continuation = lambda labels, noise, stop, given: sample_var_scales(model, vqvae, VAR_PAPER_RECIPE, stop, labels,
                                                                          noise.float(), given)
        fp32 = copy.deepcopy(model).float()
        teacher_stage = var_teacher_sampler(fp32, types.SimpleNamespace(model=vqvae), VAR_PAPER_RECIPE)
        dd_stage = functools.partial(sample_var_dd, VARStudent.from_teacher(fp32, vqvae.codebook), vqvae.codebook, 1, 0)
        sizes, family = (config.num_tokens, config.code_dim, config.num_classes), "var"
    else:
        model = random_model(preset, device)
        student = DDStudent(model, CODE_DIM).to(device, torch.bfloat16).eval().requires_grad_(False)
        codebook = torch.randn(model.config.vocab_size, CODE_DIM, device=device, dtype=torch.bfloat16)
        teacher = lambda labels, noise: sample_teacher(model, PAPER_RECIPE, labels, noise)
        dd_sampler = functools.partial(sample_dd, student, codebook)
        continuation = lambda labels, noise, stop, given: sample_teacher(model, PAPER_RECIPE, labels, noise.float(), stop,
                                                                         given)
        fp32 = copy.deepcopy(model).float()
        teacher_stage = functools.partial(sample_teacher, fp32, PAPER_RECIPE)
        student_fp32 = DDStudent(fp32, CODE_DIM).to(device).eval().requires_grad_(False)
        dd_stage = functools.partial(sample_dd, student_fp32, codebook.float(), 1, 0)
        sizes, family = (model.config.num_image_tokens, CODE_DIM, model.config.num_classes), "llamagen"
    dd = lambda labels, noise: dd_sampler(1, 0, labels, noise.to(torch.bfloat16))

    def hybrid(teacher_steps: int, labels, noise):
        return dd_sampler(2, intermediate, labels, noise.to(torch.bfloat16), teacher=continuation,
                          teacher_steps=teacher_steps)
    stage = functools.partial(fast_sampler, config=SampleConfig(), device=torch.device(device))
    named = {"teacher": teacher, "dd_1step": dd, "teacher_stage": stage(teacher_stage), "dd_1step_stage": stage(dd_stage),
             **{f"dd_hybrid{k}": functools.partial(hybrid, k) for k in HYBRID_TEACHER_STEPS[family] if k < intermediate}}
    return named, *sizes


def latency_table(presets, batch_sizes, repeats, device) -> list[dict]:
    rows = []
    for preset in presets:
        named, num_tokens, code_dim, num_classes = samplers(preset, device)
        for batch_size in batch_sizes:
            labels = balanced_labels(range(batch_size), num_classes).to(device)
            noise = per_sample_noise(0, range(batch_size), num_tokens, code_dim).to(device)
            call = {name: functools.partial(sampler, labels, noise) for name, sampler in named.items()}
            timings = {"teacher": time_call(call["teacher"], repeats), "dd_1step": time_call(call["dd_1step"], repeats)}
            torch.cuda.empty_cache()   # the eager runs' cached blocks go back, so the graphs' private pool fits
            timings["teacher_graph"] = time_call(as_graph(call["teacher"]), repeats)
            timings["dd_1step_graph"] = time_call(as_graph(call["dd_1step"]), repeats)
            hybrids = [name for name in named if name.startswith("dd_hybrid")]
            for name in hybrids:
                timings[f"{name}_graph"] = time_call(as_graph(call[name]), repeats)
            for name in ("teacher_stage", "dd_1step_stage"):      # they capture their own graphs (dd/fast_path.py)
                timings[name] = time_call(call[name], repeats)
            row = {"preset": preset, "batch_size": batch_size,
                   **{f"{k}_ms_per_image": 1000 * v / batch_size for k, v in timings.items()}}
            row["speedup_eager"] = timings["teacher"] / timings["dd_1step"]
            row["speedup_graph"] = timings["teacher_graph"] / timings["dd_1step_graph"]
            row["speedup_stage"] = timings["teacher_graph"] / timings["dd_1step_stage"]
            row["graph_gain_teacher"] = timings["teacher"] / timings["teacher_graph"]
            row["stage_teacher_over_graph"] = timings["teacher_stage"] / timings["teacher_graph"]   # bar: <= 1.3
            row.update({f"speedup_{name[len('dd_'):]}_graph": timings["teacher_graph"] / timings[f"{name}_graph"]
                        for name in hybrids})
            rows.append(row)
            print(json.dumps(row), flush=True)
        del named
        torch.cuda.empty_cache()
    return rows


def smoke(device, num_pairs: int, student_steps: int) -> dict:
    """Pairs -> student training -> sampling on the GPU with llamagen-b's shape (random weights)."""
    teacher = random_model("llamagen-b", device)
    codebook = torch.nn.functional.normalize(torch.randn(teacher.config.vocab_size, CODE_DIM), dim=-1)
    report = {}
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        pair_map = functools.partial(sequence_map, teacher, PAPER_RECIPE, codebook.to(device), FlowConfig())
        write_pairs(pair_map, teacher.config.num_image_tokens, CODE_DIM, teacher.config.num_classes,
                    PairsConfig(num_pairs=num_pairs, shard_size=128, batch_size=128, seed=1), Path(folder),
                    record(Path(__file__), "smoke"),
                    progress=False, device=device)
        torch.cuda.synchronize()
        report["pairs_seconds"] = time.perf_counter() - started
        pairs = read_pairs(Path(folder))
        noise, tokens, labels = (t.to(device) for t in (pairs.noise(torch.arange(len(pairs.tokens))), pairs.tokens, pairs.labels))

    student = DDStudent.from_teacher(teacher.float().cpu(), codebook).to(device)
    codebook = codebook.to(device)
    timesteps = torch.tensor([0, 80], device=device)

    def loss_fn(model, batch):
        indices = batch.local(batch.indices).to(device)
        chosen = batch.local(timesteps[torch.randint(2, (batch.size,), generator=batch.generator).to(device)])
        return student_loss(model, labels[indices], noise[indices], tokens[indices], codebook, chosen)

    config = TrainConfig(train_steps=student_steps, batch_size=16, checkpoint_every=student_steps, log_every=5)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        ema = train(student, loss_fn, len(tokens), config, Path(folder), Path(folder) / "log.json",
                    record(Path(__file__), "smoke"),
                    progress=False)
        torch.cuda.synchronize()
        report["student_seconds_per_step"] = (time.perf_counter() - started) / student_steps
        report["student_last_loss"] = read_log(Path(folder) / "log.json")[-1]["train/loss"]
    for steps in (1, 2):
        sampled = sample_dd(ema.eval(), codebook, steps, 80, labels[:32], noise[:32])
        report[f"dd_{steps}step_tokens_ok"] = bool(sampled.shape == tokens[:32].shape and sampled.max() < 16384)
    report["num_pairs"] = len(tokens)
    print(json.dumps(report), flush=True)
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["llamagen-b", "llamagen-l", "var-d16"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke-pairs", type=int, default=256)
    parser.add_argument("--smoke-student-steps", type=int, default=20)
    parser.add_argument("--sections", nargs="+", choices=["latency", "smoke", "pipeline", "throughput"],
                        default=["latency", "smoke", "pipeline", "throughput"], help="which checks to run (default: all)")
    parser.add_argument("--throughput-presets", nargs="+", default=["llamagen-b", "var-d16"],
                        help="published presets whose stage throughput and paper-scale projection scripts/throughput.py "
                             "measures (default counts)")
    parser.add_argument("--pipeline-presets", nargs="+", default=["llamagen-b"],
                        help="published presets the pipeline section takes through the stages")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this script is the GPU check")
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True   # recorded in the output: it changes numerics, not shapes
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "tf32": True, "dtype": "bfloat16",
              "recipe": {"llamagen": dataclasses.asdict(PAPER_RECIPE), "var": dataclasses.asdict(VAR_PAPER_RECIPE)}}

    def save():   # after every section, so a later section's failure keeps the earlier ones' figures
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2))

    if "latency" in args.sections:
        result["latency"] = latency_table(args.presets, args.batch_sizes, args.repeats, device)
        save()
    if "smoke" in args.sections:
        result["smoke"] = smoke(device, args.smoke_pairs, args.smoke_student_steps)
        save()
    if "pipeline" in args.sections:
        from published_pipeline import published_pipeline, small_counts   # a sibling script, run from here
        for preset in args.pipeline_presets:
            result.setdefault("published_pipeline", {})[preset] = published_pipeline(preset, small_counts(256, 10, 128, 64))
            torch.cuda.empty_cache()
            save()
    if "throughput" in args.sections:
        for preset in args.throughput_presets:    # a process each: its own GPU memory and warm-up, as a user's run
            out = args.out or Path(tempfile.mkdtemp())
            subprocess.run([sys.executable, str(Path(__file__).parent / "throughput.py"), preset, "--out", str(out)],
                           check=True)
            result.setdefault("throughput", {})[preset] = json.loads((out / f"throughput_{preset}.json").read_text())
            save()
    print(f"\n{result['device']}, torch {result['torch']}, bf16, paper recipes (LlamaGen cfg 2.0 top-k 8000; VAR cfg 2.0 "
          "ramped, top-k 900, top-p 0.95)")
    print(f"{'preset':<12}{'batch':>6}{'teacher ms/img':>16}{'graph':>10}{'stage':>10}{'dd 1-step':>11}{'graph':>10}"
          f"{'stage':>10}{'speed-up':>10}")
    for row in result.get("latency", []):
        print(f"{row['preset']:<12}{row['batch_size']:>6}{row['teacher_ms_per_image']:>16.3f}"
              f"{row['teacher_graph_ms_per_image']:>10.3f}{row['teacher_stage_ms_per_image']:>10.3f}"
              f"{row['dd_1step_ms_per_image']:>11.3f}{row['dd_1step_graph_ms_per_image']:>10.3f}"
              f"{row['dd_1step_stage_ms_per_image']:>10.3f}{row['speedup_graph']:>9.1f}x")
        hybrids = [key[len("dd_hybrid"):-len("_graph_ms_per_image")] for key in row
                   if key.startswith("dd_hybrid") and key.endswith("_graph_ms_per_image")]
        if hybrids:
            print(" " * 18 + "hybrid (graph): " + ", ".join(
                f"K={k} {row[f'dd_hybrid{k}_graph_ms_per_image']:.3f} ms/img ({row[f'speedup_hybrid{k}_graph']:.1f}x)"
                for k in hybrids))


if __name__ == "__main__":
    main()
