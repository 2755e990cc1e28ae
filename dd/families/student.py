"""The student part of each family (dd/families/__init__.py), by teacher preset."""
from dd.families import StudentFamily, family_of
from dd.next_scale import student as next_scale
from dd.raster import student as raster


def student_family(preset: str) -> StudentFamily:
    """The student part of the preset's family: dd/raster/student.py or dd/next_scale/student.py."""
    return {"raster": raster, "next_scale": next_scale}[family_of(preset)]
