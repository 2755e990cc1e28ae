"""The student part of each family (dd/families/__init__.py), by teacher preset."""
from dd.artifacts import load_tokenizer
from dd.checkpoint import load_state_dict, with_weights
from dd.families import StudentFamily, family_of
from dd.layout import Layout
from dd.next_scale import student as next_scale
from dd.raster import student as raster


def student_family(preset: str) -> StudentFamily:
    """The student part of the preset's family: dd/raster/student.py or dd/next_scale/student.py."""
    return {"raster": raster, "next_scale": next_scale}[family_of(preset)]


def load_student(layout: Layout, teacher):
    """The student stage's result, of the teacher's family, frozen, on the teacher's device."""
    code_dim = load_tokenizer(layout).codebook.shape[1]
    student = with_weights(lambda: student_family(layout.teacher).empty_student(teacher, code_dim),
                           load_state_dict(layout.student_dir / "model.pt"))
    return student.to(next(teacher.parameters()).device).eval().requires_grad_(False)
