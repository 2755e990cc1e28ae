"""The tokenizer part of each family (dd/families/__init__.py), by teacher preset."""
from dd.families import TokenizerFamily, family_of
from dd.next_scale import tokenizer as next_scale
from dd.raster import tokenizer as raster


def tokenizer_family(preset: str) -> TokenizerFamily:
    """The tokenizer part of the preset's family: dd/raster/tokenizer.py or dd/next_scale/tokenizer.py."""
    return {"raster": raster, "next_scale": next_scale}[family_of(preset)]
