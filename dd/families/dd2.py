"""The DD2 part of each family (dd/families/__init__.py), by teacher preset."""
from dd.families import DD2Family, family_of
from dd.next_scale import dd2 as next_scale
from dd.raster import dd2 as raster


def dd2_family(preset: str) -> DD2Family:
    """The DD2 part of the preset's family: dd/raster/dd2.py or dd/next_scale/dd2.py."""
    return {"raster": raster, "next_scale": next_scale}[family_of(preset)]
