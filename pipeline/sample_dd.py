"""Stage `sample_dd`: images from the DD student at `student.steps` steps (1 or 2), with `student.teacher_steps`
of the teacher's own between the two (hybrid sampling, method.md section 6): the `dd` row; and each setting of
sample.dd_variants beside it (dd-2step, dd-hybrid-K), so one run gives every DD row of the results table."""
import functools

from dd.artifacts import load_frozen_teacher, load_tokenizer, teacher_classes
from dd.checkpoint import load_state_dict, with_weights
from dd.config import Config, StudentConfig, dd_method
from dd.device import compute_device
from dd.families.sampling import sampling_family
from dd.families.student import student_family
from dd.layout import Layout
from dd.sampling import Sampler, run_sampler
from pipeline.sample import save_samples


def load_student(layout: Layout, teacher):
    """The student stage's result, of the teacher's family, frozen, on the teacher's device."""
    code_dim = load_tokenizer(layout).codebook.shape[1]
    student = with_weights(lambda: student_family(layout.teacher).empty_student(teacher, code_dim),
                           load_state_dict(layout.student_dir / "model.pt"))
    return student.to(next(teacher.parameters()).device).eval().requires_grad_(False)


def dd_settings(config: Config) -> dict[str, StudentConfig]:
    """The DD rows this stage samples: `dd` (student.steps / teacher_steps) and each of sample.dd_variants."""
    return {"dd": config.student, **{dd_method(steps, teacher_steps): config.student.sampling(steps, teacher_steps)
                                     for steps, teacher_steps in config.sample.dd_variants}}


def dd_samplers(config: Config, layout: Layout) -> dict[str, Sampler]:
    """The family's DD sampler (dd/families/student.py `sample`) bound to the trained student, one per DD row:
    (labels, noise) -> tokens; timesteps count tokens (raster) or scales (next scale)."""
    device = compute_device()
    tokenizer, teacher = load_tokenizer(layout, device), load_frozen_teacher(layout, device)
    continuation = sampling_family(layout.teacher).teacher_continuation(teacher, tokenizer, config.recipe)
    sample = functools.partial(student_family(layout.teacher).student_parts(teacher).sample,
                               load_student(layout, teacher), tokenizer.codebook.to(device))
    return {method: functools.partial(sample, setting.steps, setting.intermediate_timestep,
                                      **({"teacher": continuation, "teacher_steps": setting.teacher_steps}
                                         if setting.teacher_steps else {}))
            for method, setting in dd_settings(config).items()}


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    device = compute_device()
    tokenizer = load_tokenizer(layout, device)
    settings, samplers = dd_settings(config), dd_samplers(config, layout)
    for method, sampler in samplers.items():
        tokens, labels = run_sampler(sampler, range(config.sample.num_samples), config.sample.seed,
                                     tokenizer.num_tokens, tokenizer.codebook.shape[1], teacher_classes(layout),
                                     config.sample.batch_size,
                                     description=f"{method} ({settings[method].sampling_steps} steps)",
                                     progress=progress, device=device, labels_mode=config.sample.labels)
        save_samples(layout.dd_samples_dir / f"{method}.npz", tokens, labels, tokenizer.decode(tokens))
    return {method: {"steps": setting.steps, "teacher_steps": setting.teacher_steps,
                     "sampling_steps": setting.sampling_steps} for method, setting in settings.items()}
