"""Stage `sample_dd`: images from the DD student at `student.steps` steps (1 or 2), with `student.teacher_steps`
of the teacher's own between the two (hybrid sampling, method.md section 6)."""
import functools

from dd.artifacts import compute_device, load_frozen_teacher, load_tokenizer, teacher_classes
from dd.checkpoint import load_state_dict, with_weights
from dd.config import Config
from dd.layout import Layout
from dd.models.var import VAR
from dd.sampling import run_sampler
from dd.student import DDStudent, sample_dd
from dd.teachers import family
from dd.var_student import VARStudent, sample_var_dd
from pipeline.sample import save_samples, teacher_continuation

# Per family, with one signature: (student, codebook, steps, intermediate timestep, labels, noise, teacher,
# teacher_steps) -> tokens; timesteps count tokens (raster) or scales (next scale).
DD_SAMPLERS = {"llamagen": sample_dd, "var": sample_var_dd}


def load_student(layout: Layout, teacher) -> DDStudent | VARStudent:
    """The student stage's result, of the teacher's family, frozen, on the teacher's device."""
    if isinstance(teacher, VAR):
        build = lambda: VARStudent(teacher.config)
    else:
        code_dim = load_tokenizer(layout).codebook.shape[1]
        build = lambda: DDStudent(teacher, code_dim)
    student = with_weights(build, load_state_dict(layout.student_dir / "model.pt"))
    return student.to(next(teacher.parameters()).device).eval().requires_grad_(False)


def dd_sampler(config: Config, layout: Layout):
    device = compute_device()
    tokenizer, teacher = load_tokenizer(layout, device), load_frozen_teacher(layout, device)
    hybrid = {"teacher": teacher_continuation(teacher, tokenizer, config.recipe),
              "teacher_steps": config.student.teacher_steps} if config.student.teacher_steps else {}
    return functools.partial(DD_SAMPLERS[family(layout.teacher)], load_student(layout, teacher),
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
