"""The DD2 part of each family (dd/families/__init__.py), by teacher preset."""
from dd.config import Config
from dd.dd2 import with_student_generator
from dd.families import DD2Family, DD2Parts, family_of
from dd.families.student import load_student, student_family
from dd.layout import Layout
from dd.next_scale import dd2 as next_scale
from dd.raster import dd2 as raster


def dd2_family(preset: str) -> DD2Family:
    """The DD2 part of the preset's family: dd/raster/dd2.py or dd/next_scale/dd2.py."""
    return {"raster": raster, "next_scale": next_scale}[family_of(preset)]


def dd2_parts(config: Config, layout: Layout, teacher, tokenizer) -> DD2Parts:
    """The teacher's DD2 networks, the generator as dd2.generator_init says: the family's (the paper's, from the
    AR-diffusion model) or the student stage's DD1 student (dd/dd2.py StudentGenerator), trainable."""
    parts = dd2_family(layout.teacher).dd2_parts(teacher, tokenizer, config.recipe)
    if config.dd2.generator_init == "ar_diffusion":
        return parts
    device = next(teacher.parameters()).device
    return with_student_generator(parts, lambda: load_student(layout, teacher).train().requires_grad_(True),
                                  student_family(layout.teacher).empty_student, tokenizer.codebook.to(device))
