"""The teacher part of each family (dd/families/__init__.py), by teacher preset."""
from dd.families import TeacherFamily, family_of
from dd.next_scale import teacher as next_scale
from dd.raster import teacher as raster


def teacher_family(preset: str) -> TeacherFamily:
    """The teacher part of the preset's family: dd/raster/teacher.py or dd/next_scale/teacher.py."""
    return {"raster": raster, "next_scale": next_scale}[family_of(preset)]
