"""Stage `sample_dd`: images from the DD student at `student.steps` steps (1 or 2), with `student.teacher_steps`
of the teacher's own between the two (hybrid sampling, method.md section 6)."""
import functools

from dd.artifacts import load_frozen_teacher, load_tokenizer, teacher_classes
from dd.checkpoint import load_state_dict, with_weights
from dd.config import Config
from dd.device import compute_device
from dd.families.sampling import sampling_family
from dd.families.student import student_family
from dd.layout import Layout
from dd.sampling import run_sampler
from pipeline.sample import save_samples


def load_student(layout: Layout, teacher):
    """The student stage's result, of the teacher's family, frozen, on the teacher's device."""
    code_dim = load_tokenizer(layout).codebook.shape[1]
    student = with_weights(lambda: student_family(layout.teacher).empty_student(teacher, code_dim),
                           load_state_dict(layout.student_dir / "model.pt"))
    return student.to(next(teacher.parameters()).device).eval().requires_grad_(False)


def dd_sampler(config: Config, layout: Layout):
    """The family's DD sampler (dd/families/student.py `sample`), bound to the trained student: (labels, noise) ->
    tokens; timesteps count tokens (raster) or scales (next scale)."""
    device = compute_device()
    tokenizer, teacher = load_tokenizer(layout, device), load_frozen_teacher(layout, device)
    continuation = sampling_family(layout.teacher).teacher_continuation(teacher, tokenizer, config.recipe)
    hybrid = {"teacher": continuation, "teacher_steps": config.student.teacher_steps} if config.student.teacher_steps else {}
    return functools.partial(student_family(layout.teacher).student_parts(teacher).sample, load_student(layout, teacher),
                             tokenizer.codebook.to(device), config.student.steps,
                             config.student.intermediate_timestep, **hybrid)


def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    device = compute_device()
    tokenizer = load_tokenizer(layout, device)
    tokens, labels = run_sampler(dd_sampler(config, layout), range(config.sample.num_samples), config.sample.seed,
                                 tokenizer.num_tokens, tokenizer.codebook.shape[1], teacher_classes(layout),
                                 config.sample.batch_size, description=f"dd ({config.student.sampling_steps} step)",
                                 progress=progress, device=device, labels_mode=config.sample.labels)
    save_samples(layout.dd_samples_dir / "dd.npz", tokens, labels, tokenizer.decode(tokens))
    return {"dd": len(tokens), "steps": config.student.steps, "teacher_steps": config.student.teacher_steps}
