"""Configuration: one frozen dataclass per params.yaml section, validated once on load.

params.yaml is the only source of hyperparameters. `load_config` reads it, rejects unknown keys and wrong
types (naming the offending key and the fix), and returns a `Config` whose sections are frozen, so nothing
downstream can change what ran. Derived quantities are properties or computed in code, never stored back.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

from dd.presets import paper_recipe


class ConfigError(ValueError):
    """A params file that does not describe a valid run; the message names the key and the fix."""


# ---------------------------------------------------------------------------------------------------------
# Sections (one per params.yaml section; field names are the params keys, the CLI options and metric keys)
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DataConfig:
    source: str = "fashion-mnist"     # "fashion-mnist" (Debian package) or a folder with one subfolder per class
    image_size: int = 32              # images are centre-padded (or resized) to this square size
    test_fraction: float = 0.15       # held out when an image folder has no train/ and test/ subfolders
    validation_fraction: float = 0.1  # of each class's train images, held out to choose settings on (dd/data.py)
    seed: int = 0


@dataclass(frozen=True)
class ClassifierConfig:
    """The evaluation feature classifier (dd/evaluation.py): small, so it trains in ~1.5 minutes on 2 cores."""
    channels: int = 16                # width of the first conv block; each later block doubles it
    feature_dim: int = 128            # penultimate features used for FID / precision / recall
    train_steps: int = 1000
    batch_size: int = 128
    learning_rate: float = 2e-3
    seed: int = 0


@dataclass(frozen=True)
class TokenizerConfig:
    source: str = "train"             # "train": k-means patches fitted here; "download": the preset's published VQ
    url: str = ""                     # download: "" takes the preset's published URL (dd/presets.py)
    sha256: str = ""                  # download: checked before the file is used; "" skips the check
    patch_size: int = 4               # each token codes a patch_size x patch_size patch
    codebook_size: int = 256          # V
    code_dim: int = 8                 # d: dimension of the code vectors the flow map and the student see
    kmeans_iterations: int = 25
    kmeans_samples: int = 400_000     # patches sampled from the train split to fit the codebook
    seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """One training run (teacher or student): the loop in dd/training.py reads nothing else."""
    train_steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.05
    ema_decay: float = 0.999
    checkpoint_every: int = 250       # steps between resumable checkpoints
    log_every: int = 25
    precision: str = "fp32"           # "fp32"; "bf16": autocast the matrix products (weights and optimizer stay
                                      # fp32); "auto": bf16 where the device has native bf16 (CUDA, or a CPU with
                                      # AVX512-BF16 or AMX: 1.3x faster var-tiny steps on our 2-core EPYC), fp32
                                      # where it has not (bf16 there is emulated, 8x slower) (dd/training.py)
    compile: bool = False             # torch.compile the model: fuses the elementwise work around the matrix
                                      # products (1.25x faster steps on our 2-core CPUs, ~60 s of compiling)
    seed: int = 0


@dataclass(frozen=True)
class VQVAETrainingConfig:
    """The tokenizer of a next-scale (VAR) teacher trained here (tokenizer.source: train): VAR's multi-scale
    VQVAE with L2 reconstruction + commitment + codebook losses (dd/next_scale/tokenizer.py). Raster teachers fit the
    k-means tokenizer (`tokenizer`) instead and never read this section, so it is set per teacher only, under
    overrides.<teacher>.vqvae (`resolve` refuses it at the top of the file)."""
    preset: str = "vae-tiny"          # a dd/models/var_vqvae.py preset whose codebook and scales fit the teacher
    commitment: float = 0.25          # beta, the weight of the commitment loss (VAR's value)
    seed: int = 0                     # initial weights (train.seed draws the batches)
    train: TrainConfig = TrainConfig()


@dataclass(frozen=True)
class TeacherConfig:
    source: str = "train"             # "train": the pipeline trains it; "download": a published checkpoint
    url: str = ""                     # download: "" takes the preset's published URL (dd/presets.py)
    sha256: str = ""                  # download: checked before the file is used; "" skips the check
    class_dropout: float = 0.1        # label -> null class during training, for classifier-free guidance
    nll_images: int = 2000            # validation images for validation_nll_per_token (0: all of them)
    train: TrainConfig = TrainConfig()


@dataclass(frozen=True)
class RecipeConfig:
    """The teacher's sampling recipe. DD distils the distribution AFTER these (method.md section 2).

    Guidance follows each family's published sampler: for a raster (LlamaGen) teacher, logits = uncond +
    cfg_scale (cond - uncond) when cfg_scale > 1, and the conditional model alone at or below 1 (dd/raster/teacher.py);
    for a next-scale (VAR) teacher, cfg_scale is VAR's `cfg`, ramped over the scales, t_k = cfg k / (K - 1),
    logits = (1 + t_k) cond - t_k uncond: 0 is unguided (dd/next_scale/teacher.py). Then temperature, top-k (exactly k
    codes), top-p."""
    cfg_scale: float = 1.5            # >= 0
    temperature: float = 1.0          # > 0
    top_k: int = 0                    # >= 0; 0 keeps every token
    top_p: float = 1.0                # in (0, 1]; 1.0 keeps every token

    def __post_init__(self):
        checks = {"cfg_scale": (self.cfg_scale >= 0, "must be >= 0 (LlamaGen: <= 1 is unguided; VAR: 0 is)"),
                  "temperature": (self.temperature > 0, "must be > 0: logits are divided by it"),
                  "top_k": (self.top_k >= 0, "must be >= 0 (0 keeps every token)"),
                  "top_p": (0 < self.top_p <= 1, "must be in (0, 1] (1.0 keeps every token)")}
        for key, (ok, hint) in checks.items():
            if not ok:
                raise ConfigError(f"invalid value for recipe.{key}: {getattr(self, key)!r} {hint}")


@dataclass(frozen=True)
class FlowConfig:
    """The per-token flow map's ODE solver (dd/flow.py)."""
    solver_steps: int = 20            # RK4 steps (4 field evaluations each) from t = 1 to t_end
    t_end: float = 1e-3               # the token is read off here; basins are decided long before
    compile: bool = False             # torch.compile each solver step (dd/flow.py): 3x faster, ~13 s to compile


@dataclass(frozen=True)
class PairsConfig:
    num_pairs: int = 60_000
    shard_size: int = 2_000           # pairs per webdataset tar; also the unit of resumption
    batch_size: int = 250             # pairs computed at once; does not change the pairs (sample-indexed seeds)
    seed: int = 1


@dataclass(frozen=True)
class StudentConfig:
    timesteps: tuple[int, ...] = (0, 32)   # training timesteps in tokens (scales) already data: all-noise first,
                                            # the largest is where a second step starts. Each example draws one
                                            # entry uniformly: list a timestep twice to train it twice as often
    steps: int = 1                          # sampling steps: 1 (t=0) or 2 (t=0 then the largest timestep)
    teacher_steps: int = 0                  # hybrid sampling (2 steps): the teacher's own steps before the
                                            # second, remaking the last teacher_steps tokens (scales) before it
    target_width: float = 0.3               # soft targets over neighbouring codes, in median nearest-code
                                            # distances (dd/dd1.py); 0 = one-hot cross-entropy
    train: TrainConfig = TrainConfig()

    @property
    def distinct_timesteps(self) -> tuple[int, ...]:
        """Each training timestep once, ascending (the list may repeat one to weight it): what is measured."""
        return tuple(sorted(set(self.timesteps)))

    @property
    def intermediate_timestep(self) -> int:
        """Where 2-step sampling starts its second step: the largest training timestep (0 if none is listed)."""
        return max(self.timesteps, default=0)

    @property
    def sampling_steps(self) -> int:
        """Sequential network steps of DD sampling: the student's calls and, hybrid, the teacher's steps between
        them; the first call is skipped when the teacher remakes every token the second call keeps."""
        if not self.teacher_steps:
            return self.steps
        return self.teacher_steps + 1 + (self.teacher_steps < self.intermediate_timestep)

    def sampling(self, steps: int, teacher_steps: int) -> "StudentConfig":
        """This student sampled another way (a row of sample.dd_variants)."""
        return dataclasses.replace(self, steps=steps, teacher_steps=teacher_steps)


def dd_method(steps: int, teacher_steps: int) -> str:
    """The eval.json row of a DD sampling setting beside the `dd` row: dd-2step, or dd-hybrid-K for K teacher steps."""
    return f"dd-hybrid-{teacher_steps}" if teacher_steps else f"dd-{steps}step"


@dataclass(frozen=True)
class CSDConfig:
    """DD2's stage 2, conditional score distillation (dd/dd2.py `train_csd`). A step is one generator update and
    the `guidance_updates` guidance updates before it; both networks use Adam, betas (0.9, 0.95), as the paper."""
    train_steps: int = 1000
    guidance_updates: int = 2             # K: the paper's 5 (LlamaGen-L, early VAR) and 2 (later, VAR-d24)
    batch_size: int = 64
    generator_learning_rate: float = 1e-4
    guidance_learning_rate: float = 2e-4
    warmup_steps: int = 50                # linear warm-up of both rates, then constant (the paper's warm-up)
    guidance_warmup_steps: int = 0        # guidance-only steps (one update each) before the first generator update:
                                          # psi first learns the generator's law instead of the teacher's it starts
                                          # from (the paper's "performance alignment", design/dd2.md section 4)
    ema_decay: float = 0.999              # the generator's EMA, min(decay, (1 + s) / (10 + s)) as the paper's
    checkpoint_every: int = 100
    log_every: int = 25
    precision: str = "fp32"               # as TrainConfig.precision
    seed: int = 0


@dataclass(frozen=True)
class DD2Config:
    """DD2 (dd/dd2.py; design/dd2.md), trained by the dd2 stage when `methods` lists it: stage 1 tunes the
    AR-diffusion model (the teacher with a diffusion head) on the pair shards' tokens with the GTS loss, stage 2
    trains the one-step generator with CSD against the teacher and a guidance network."""
    head_width: int = 256                 # the diffusion head (dd/diffusion_head.py): width and residual blocks
    head_depth: int = 3
    seed: int = 0                         # the head's initial weights
    gts: TrainConfig = TrainConfig()
    csd: CSDConfig = CSDConfig()
    teacher_steps: tuple[int, ...] = ()   # multi-step rows dd2-hybrid-K: the generator's tokens, then the teacher
                                          # remakes the last K timesteps (tokens; scales for a next-scale teacher)
    generator_init: str = "ar_diffusion"  # what the generator starts as: "ar_diffusion", the paper's (the stage-1
                                          # model taking one Euler step from pure noise), or "dd1", the student
                                          # stage's DD1 student with its soft code expectation as the output


def dd2_method(teacher_steps: int) -> str:
    """The eval.json row of DD2: dd2 (one step), or dd2-hybrid-K (the teacher remakes the last K timesteps)."""
    return f"dd2-hybrid-{teacher_steps}" if teacher_steps else "dd2"


@dataclass(frozen=True)
class SampleConfig:
    num_samples: int = 10_000         # per method
    labels: str = "balanced"          # "balanced": sample i has class i % K, like the balanced test split;
                                      # "uniform": a uniformly random class from (seed, i), the paper's protocol
    batch_size: int = 250
    skip_tokens: int = 32             # the skip baseline's teacher stops this many tokens early
    seed: int = 2
    reference_seed: int = 3           # teacher_reference, fid_to_teacher's second teacher sample set (num_samples):
                                      # its own seed, so it shares no noise with any method's samples or the pairs
    dd_variants: tuple[tuple[int, ...], ...] = ()   # further DD rows beside `dd` (student.steps / teacher_steps):
                                      # [steps, teacher_steps] each, e.g. [[2, 0], [2, 16]]: dd-2step, dd-hybrid-16
    precision: str = "auto"           # every sampler's matrix products (pairs' teacher too; dd/fast_path.py): "auto"
                                      # bf16 on CUDA and fp32 on the CPU; "bf16" or "fp32" everywhere
    cuda_graphs: bool = True          # on CUDA, each sampler's whole loop (pairs' map too) captured as a CUDA graph


@dataclass(frozen=True)
class LatencyConfig:
    batch_sizes: tuple[int, ...] = (1, 256)
    repeats: int = 5                  # the median of this many timed runs is reported
    threads: int = 0                  # torch threads while timing; 0 keeps torch's default


@dataclass(frozen=True)
class EvaluateConfig:
    extractor: str = "classifier"     # "classifier": the pipeline's own (offline); "inception": clean-fid's Inception
    reference: str = ""               # inception: an .npz with mu and sigma, or a folder of reference images
    inception_weights: str = ""       # inception: a TorchScript inception-2015-12-05.pt; "" uses clean-fid's cache
    precision_recall_k: int = 3
    grid_samples: int = 100           # images per PNG grid (a square number lays out best)
    latency_batch_size: int = 256     # whose seconds_per_image goes into eval.json


@dataclass(frozen=True)
class Config:
    teachers: tuple[str, ...] = ("llamagen-tiny",)
    methods: tuple[str, ...] = ("dd1",)   # the distillation methods trained and evaluated side by side on each
                                          # teacher: "dd1" (stage student; rows dd, dd-*), "dd2" (stage dd2; dd2, dd2-*)
    data: DataConfig = DataConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    vqvae: VQVAETrainingConfig = VQVAETrainingConfig()
    teacher: TeacherConfig = TeacherConfig()
    recipe: RecipeConfig = RecipeConfig()
    flow: FlowConfig = FlowConfig()
    pairs: PairsConfig = PairsConfig()
    student: StudentConfig = StudentConfig()
    dd2: DD2Config = DD2Config()
    sample: SampleConfig = SampleConfig()
    latency: LatencyConfig = LatencyConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

    def __post_init__(self):
        checks = {
            "data.validation_fraction": 0 < self.data.validation_fraction < 1,
            "methods": len(self.methods) >= 1 and len(set(self.methods)) == len(self.methods)
                       and set(self.methods) <= set(METHODS),
            "student.steps": self.student.steps in (1, 2),
            "dd2.csd.guidance_updates": self.dd2.csd.guidance_updates >= 1,
            "dd2.csd.guidance_warmup_steps": self.dd2.csd.guidance_warmup_steps >= 0,
            "dd2.csd.precision": self.dd2.csd.precision in PRECISIONS,
            "dd2.teacher_steps": all(k > 0 for k in self.dd2.teacher_steps),
            "dd2.generator_init": self.dd2.generator_init in ("ar_diffusion", "dd1")
                                  and (self.dd2.generator_init != "dd1" or "dd1" in self.methods),
            "student.timesteps": len(self.student.timesteps) >= 1 and self.student.timesteps[0] == 0,
            "teacher.source": self.teacher.source in ("train", "download"),
            "tokenizer.source": self.tokenizer.source in ("train", "download"),
            "sample.labels": self.sample.labels in ("balanced", "uniform"),
            "evaluate.extractor": self.evaluate.extractor in ("classifier", "inception"),
            "evaluate.reference": self.evaluate.extractor != "inception" or bool(self.evaluate.reference),
            "evaluate.latency_batch_size": self.evaluate.latency_batch_size in self.latency.batch_sizes,
            "pairs.shard_size": self.pairs.shard_size > 0 and self.pairs.num_pairs > 0,
            "sample.reference_seed": self.sample.reference_seed not in (self.sample.seed, self.pairs.seed),
            "student.timesteps (2 steps)": self.student.steps == 1 or self.student.intermediate_timestep > 0,
            "student.teacher_steps": self._valid_sampling(self.student.steps, self.student.teacher_steps),
            "sample.dd_variants": all(len(variant) == 2 and self._valid_sampling(*variant)
                                      for variant in self.sample.dd_variants),
            **{f"{section}.train.precision": getattr(self, section).train.precision in PRECISIONS
               for section in TRAINED_SECTIONS},
            "dd2.gts.precision": self.dd2.gts.precision in PRECISIONS,
            "sample.precision": self.sample.precision in PRECISIONS,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"invalid value for {key}: {_HINTS[key]}")

    def _valid_sampling(self, steps: int, teacher_steps: int) -> bool:
        """DD sampling in 1 or 2 steps; hybrid (teacher_steps > 0) needs 2 and at most the intermediate timestep."""
        if steps not in (1, 2) or (steps == 2 and self.student.intermediate_timestep <= 0):
            return False
        return teacher_steps == 0 or (steps == 2 and 0 < teacher_steps <= self.student.intermediate_timestep)


PRECISIONS = ("fp32", "bf16", "auto")
METHODS = ("dd1", "dd2")                             # `methods`: the distillation methods
TRAINED_SECTIONS = ("vqvae", "teacher", "student")   # the sections with a `train` TrainConfig

_HINTS = {
    **{f"{section}.train.precision": "use 'fp32', 'bf16' or 'auto'" for section in TRAINED_SECTIONS},
    "data.validation_fraction": "the share of each class's train images held out for validation: strictly between "
                                "0 and 1, e.g. 0.1",
    "methods": "a list of distinct methods among 'dd1' and 'dd2', e.g. -S 'methods=[dd1,dd2]'",
    "student.steps": "use 1 or 2",
    "dd2.csd.guidance_updates": "the guidance network must follow the generator: at least 1 update per generator update",
    "dd2.csd.precision": "use 'fp32', 'bf16' or 'auto'",
    "dd2.csd.guidance_warmup_steps": "a count of guidance-only steps before the generator's first update, 0 or more",
    "dd2.gts.precision": "use 'fp32', 'bf16' or 'auto'",
    "sample.precision": "use 'fp32', 'bf16' or 'auto' (bf16 on CUDA, fp32 on the CPU)",
    "dd2.generator_init": "use 'ar_diffusion' (the paper's) or 'dd1' (the DD1 student, which needs dd1 in `methods`)",
    "dd2.teacher_steps": "a list of positive teacher steps, e.g. [16]: row dd2-hybrid-16 (the teacher remakes the last 16)",
    "student.timesteps": "a list starting with 0 (the all-noise timestep), e.g. [0, 32]",
    "teacher.source": "use 'train' or 'download'",
    "tokenizer.source": "use 'train' or 'download'",
    "sample.labels": "use 'balanced' or 'uniform'",
    "evaluate.extractor": "use 'classifier' or 'inception'",
    "evaluate.latency_batch_size": "must be one of latency.batch_sizes: the benchmarked batch whose timings go into eval.json",
    "evaluate.reference": "Inception FID needs reference statistics: set it to an .npz with mu and sigma (such as the "
                          "ADM evaluator's VIRTUAL_imagenet256_labeled.npz) or a folder of images, e.g. "
                          "overrides.<teacher>.evaluate.reference in params.yaml",
    "pairs.shard_size": "num_pairs and shard_size must be positive",
    "sample.dd_variants": "a list of [steps, teacher_steps] pairs, each as student.steps and student.teacher_steps "
                          "allow: steps 1 or 2, and 0 < teacher_steps <= the largest of student.timesteps (2 steps "
                          "only), e.g. [[2, 0], [2, 16]]; a teacher with fewer timesteps takes its own under "
                          "overrides.<teacher>.sample.dd_variants",
    "sample.reference_seed": "the teacher reference set needs its own seed: different from sample.seed (the methods' "
                             "samples) and pairs.seed (the student's training pairs), or it shares their noise",
    "student.timesteps (2 steps)": "2-step sampling needs an intermediate timestep above 0, e.g. timesteps: [0, 32]",
    "student.teacher_steps": "hybrid sampling needs steps: 2 and 0 < teacher_steps <= the largest of "
                             "student.timesteps (0 turns it off), e.g. -S student.steps=2 -S student.teacher_steps=8; "
                             "a teacher with fewer timesteps takes its own: -S '++overrides.var-tiny.student.teacher_steps=3'",
}


# The resolved params each per-teacher stage reads, by dotted key. `dd resolve TEACHER` writes them to
# data/<teacher>/params/<stage>.json after presets and overrides (resolve below), and each stage in dvc.yaml
# depends on its own file rather than on the whole `overrides.<teacher>` entry: a change to one teacher's
# override (or to a preset's recipe) reruns exactly the stages whose resolved params changed.
STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "tokenizer": ("data", "tokenizer", "vqvae"),
    "teacher": ("data", "tokenizer", "teacher"),                   # its resume fingerprint covers all three
    "pairs": ("recipe", "flow", "pairs", "sample.precision", "sample.cuda_graphs"),
    "student": ("methods", "student.timesteps", "student.target_width", "student.train"),
    "dd2": ("methods", "recipe", "dd2.head_width", "dd2.head_depth", "dd2.seed", "dd2.gts", "dd2.csd",
            "dd2.generator_init", "sample.precision", "sample.cuda_graphs"),
    "sample": ("recipe", "sample", "tokenizer.source"),
    "sample_dd": ("methods", "student.steps", "student.teacher_steps", "student.timesteps", "dd2.teacher_steps",
                  "sample.num_samples", "sample.labels", "sample.batch_size", "sample.seed", "sample.dd_variants",
                  "sample.precision", "sample.cuda_graphs"),
    "latency": ("latency", "recipe", "methods", "student.steps", "student.teacher_steps", "student.timesteps",
                "dd2.teacher_steps", "sample.skip_tokens", "sample.dd_variants", "sample.precision",
                "sample.cuda_graphs"),
    "evaluate": ("data.source", "classifier.feature_dim", "tokenizer.source", "evaluate", "methods", "student.steps",
                 "student.teacher_steps", "student.timesteps", "dd2.teacher_steps", "sample.skip_tokens",
                 "sample.reference_seed", "sample.dd_variants"),
}


def stage_params(config: Config, stage: str) -> dict:
    """{dotted key: value} of the params `stage` reads (STAGE_PARAMS), from a resolved config."""
    resolved = to_dict(config)

    def lookup(key: str):
        value = resolved
        for part in key.split("."):
            value = value[part]
        return value
    return {key: lookup(key) for key in STAGE_PARAMS[stage]}


# ---------------------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------------------

def _check_value(value, annotation, key: str):
    """Return `value` converted to `annotation`, or raise ConfigError naming `key`."""
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"params key '{key}' must be a mapping of {annotation.__name__} fields")
        return _from_dict(annotation, value, key + ".")
    origin = typing.get_origin(annotation)
    if origin is tuple:
        (item_type, _) = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"params key '{key}' must be a list, got {value!r}")
        return tuple(_check_value(v, item_type, f"{key}[{i}]") for i, v in enumerate(value))
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool) and type(value) is annotation:
        return value
    raise ConfigError(f"params key '{key}' must be {annotation.__name__}, got {value!r} ({type(value).__name__})")


def _from_dict(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown params key '{prefix}{unknown[0]}'; valid keys here: {', '.join(sorted(names))}")
    return cls(**{name: _check_value(value, hints[name], prefix + name) for name, value in data.items()})


def config_from_dict(data: dict) -> Config:
    """Validate a parsed params mapping; defaults fill keys it leaves out."""
    return _from_dict(Config, data or {})


def resolve(data: dict, teacher: str | None = None) -> Config:
    """The Config that one teacher's stages run with (teacher None: the shared stages).

    Three layers, later ones winning: the params file's sections; the paper's recipe that a published preset
    carries (dd/presets.py: cfg, top-k, pairs, 50k samples, Inception...), since the file's sections are tuned
    for the embedded default; and the file's `overrides: {<teacher>: {<section>: {<key>: value}}}`.
    """
    data = dict(data or {})
    overrides = data.pop("overrides", None) or {}
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) or v is None for v in overrides.values()):
        raise ConfigError("params key 'overrides' must map a teacher to sections, e.g. "
                          "overrides: {llamagen-b: {recipe: {cfg_scale: 3.0}}}")
    if "vqvae" in data:
        # Only next-scale teachers read it, and dvc.yaml tracks it through overrides.<teacher> alone: at the top,
        # a change would rerun (or, untracked, silently not rerun) every teacher's tokenizer stage.
        raise ConfigError("params key 'vqvae' is per teacher: set it under overrides.<teacher>.vqvae, e.g. "
                          "overrides: {var-tiny: {vqvae: {train: {train_steps: 250}}}}")
    if teacher is None:
        return config_from_dict(data)
    own = overrides.get(teacher) or {}
    for key in ("teachers", "overrides"):
        if key in own:
            raise ConfigError(f"params key 'overrides.{teacher}.{key}' cannot be set per teacher; set '{key}' at the top")
    try:
        return config_from_dict(_merged(_merged(data, paper_recipe(teacher)), own))
    except ConfigError as error:
        raise ConfigError(f"{error} (resolving params for teacher '{teacher}': the file's sections, then the "
                          f"preset's paper recipe in dd/presets.py, then overrides.{teacher})") from None


def _merged(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        both_sections = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merged(merged[key], value) if both_sections else value
    return merged


def load_config(path: str | Path = "params.yaml", teacher: str | None = None) -> Config:
    """Read and validate params (for every listed teacher, so a bad key fails at once), resolved for `teacher`."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found: run from the project root, or pass --params PATH")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from error
    base = resolve(data)
    for listed in base.teachers:
        resolve(data, listed)
    return resolve(data, teacher)


def to_dict(section) -> dict:
    """A section as plain JSON-able data (for config.json files and fingerprints)."""
    return json.loads(json.dumps(dataclasses.asdict(section)))


def fingerprint(*sections) -> str:
    """A short stable hash of config sections: resumable stages refuse state written under other params."""
    text = json.dumps([to_dict(s) if dataclasses.is_dataclass(s) else s for s in sections], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
