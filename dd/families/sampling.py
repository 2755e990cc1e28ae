"""The sampling part of each family (dd/families/__init__.py), by teacher preset."""
from dd.families import SamplingFamily, family_of
from dd.next_scale import sampling as next_scale
from dd.raster import sampling as raster


def sampling_family(preset: str) -> SamplingFamily:
    """The sampling part of the preset's family: dd/raster/sampling.py or dd/next_scale/sampling.py."""
    return {"raster": raster, "next_scale": next_scale}[family_of(preset)]
