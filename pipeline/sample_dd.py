"""Stage `sample_dd`: images from every distilled row of the methods `methods` lists, one run for all of them.

DD1 (the student stage's student): `dd` at student.steps (1 or 2) with student.teacher_steps of the teacher's own
between the two (hybrid sampling, method.md section 6), and each setting of sample.dd_variants beside it
(dd-2step, dd-hybrid-K). DD2 (the dd2 stage's generator): `dd2`, one step, and dd2-hybrid-K for each K of
dd2.teacher_steps, where the teacher remakes the generator's last K timesteps."""
import functools

from dd.artifacts import load_frozen_teacher, load_tokenizer, teacher_classes
from dd.checkpoint import load_json, load_state_dict, with_weights
from dd.config import Config, StudentConfig, dd2_method, dd_method
from dd.dd2 import sample_dd2
from dd.device import compute_device
from dd.families.dd2 import dd2_parts
from dd.families.sampling import sampling_family
from dd.families.student import load_student, student_family
from dd.fast_path import fast_samplers
from dd.layout import Layout
from dd.sampling import Sampler, run_sampler
from pipeline.sample import save_samples


def load_generator(layout: Layout, parts, teacher):
    """The dd2 stage's generator (its EMA), frozen, on the teacher's device."""
    meta, code_dim = load_json(layout.dd2_dir / "model.json"), load_tokenizer(layout).codebook.shape[1]
    generator = with_weights(lambda: parts.empty_generator(teacher, code_dim, meta["head_width"], meta["head_depth"]),
                             load_state_dict(layout.dd2_dir / "model.pt"))
    return generator.to(next(teacher.parameters()).device).eval().requires_grad_(False)


def dd_settings(config: Config) -> dict[str, StudentConfig]:
    """DD1's rows: `dd` (student.steps / teacher_steps) and each of sample.dd_variants (none without dd1)."""
    if "dd1" not in config.methods:
        return {}
    return {"dd": config.student, **{dd_method(steps, teacher_steps): config.student.sampling(steps, teacher_steps)
                                     for steps, teacher_steps in config.sample.dd_variants}}


def distilled_steps(config: Config) -> dict[str, int]:
    """Every distilled row this stage samples and its sequential model steps: DD1's, then DD2's (1 + the
    teacher's steps)."""
    dd2_rows = {dd2_method(k): 1 + k for k in (0, *config.dd2.teacher_steps)} if "dd2" in config.methods else {}
    return {**{method: setting.sampling_steps for method, setting in dd_settings(config).items()}, **dd2_rows}


def dd_samplers(config: Config, layout: Layout) -> dict[str, Sampler]:
    """(labels, noise) -> tokens of every distilled row, bound to the trained networks: the family's DD sampler
    (dd/families/student.py `sample`) for DD1's, dd/dd2.py's for DD2's; timesteps count tokens (raster) or scales."""
    device = compute_device()
    tokenizer, teacher = load_tokenizer(layout, device), load_frozen_teacher(layout, device)
    codebook = tokenizer.codebook.to(device)
    continuation = sampling_family(layout.teacher).teacher_continuation(teacher, tokenizer, config.recipe)
    samplers = {}
    if "dd1" in config.methods:
        sample = functools.partial(student_family(layout.teacher).student_parts(teacher).sample,
                                   load_student(layout, teacher), codebook)
        samplers |= {method: functools.partial(sample, setting.steps, setting.intermediate_timestep,
                                               **({"teacher": continuation, "teacher_steps": setting.teacher_steps}
                                                  if setting.teacher_steps else {}))
                     for method, setting in dd_settings(config).items()}
    if "dd2" in config.methods:
        parts = dd2_parts(config, layout, teacher, tokenizer)
        generate = functools.partial(parts.generate, load_generator(layout, parts, teacher))
        samplers |= {dd2_method(k): functools.partial(sample_dd2, generate, codebook,
                                                      **({"teacher": continuation, "kept": parts.kept_tokens(k),
                                                          "last_timestep": parts.num_timesteps} if k else {}))
                     for k in (0, *config.dd2.teacher_steps)}
    return samplers


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    device = compute_device()
    tokenizer = load_tokenizer(layout, device)
    steps, samplers = distilled_steps(config), fast_samplers(dd_samplers(config, layout), config.sample, device)
    for method, sampler in samplers.items():
        tokens, labels = run_sampler(sampler, range(config.sample.num_samples), config.sample.seed,
                                     tokenizer.num_tokens, tokenizer.codebook.shape[1], teacher_classes(layout),
                                     config.sample.batch_size, description=f"{method} ({steps[method]} steps)",
                                     progress=progress, device=device, labels_mode=config.sample.labels)
        save_samples(layout.dd_samples_dir / f"{method}.npz", tokens, labels, tokenizer.decode(tokens))
    return {method: {"sampling_steps": count} for method, count in steps.items()}
