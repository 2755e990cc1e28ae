"""The DD2 part of each family (dd/families/__init__.py), by teacher preset."""
from dd.families import DD2Family, family_of
from dd.raster import dd2 as raster


def dd2_family(preset: str) -> DD2Family:
    """The DD2 part of the preset's family: dd/raster/dd2.py (next-scale teachers: not built yet)."""
    family = family_of(preset)
    if family != "raster":
        raise NotImplementedError(f"DD2 is built for raster (LlamaGen) teachers only so far, not {preset} ({family}); "
                                  f"leave dd2 out of `methods` for it: -S '++overrides.{preset}.methods=[dd1]'")
    return raster
