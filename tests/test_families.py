"""Both AR families implement the same interface (dd/families/__init__.py), part by part, and stages never branch
on the family themselves."""
import inspect
import re
from pathlib import Path

import pytest

from dd.families import FAMILIES, SamplingFamily, StudentFamily, TeacherFamily, TokenizerFamily, family_of
from dd.families.sampling import sampling_family
from dd.families.student import student_family
from dd.families.teacher import teacher_family
from dd.families.tokenizer import tokenizer_family
from dd.next_scale import sampling as next_scale_sampling
from dd.raster import sampling as raster_sampling

PARTS = {TokenizerFamily: tokenizer_family, TeacherFamily: teacher_family, SamplingFamily: sampling_family,
         StudentFamily: student_family}
PRESETS = {"raster": "llamagen-tiny", "next_scale": "var-tiny"}


def _interface(protocol) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member).replace(parameters=list(inspect.signature(member).parameters.values())[1:])
            for name, member in vars(protocol).items() if inspect.isfunction(member) and not name.startswith("_")}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("protocol", list(PARTS), ids=lambda protocol: protocol.__name__)
def test_each_family_implements_every_part_of_the_interface(family, protocol):
    module = PARTS[protocol](PRESETS[family])
    assert module.__name__ == f"dd.{family}.{module.__name__.split('.')[-1]}"
    for name, signature in _interface(protocol).items():
        implemented = inspect.signature(getattr(module, name))
        assert list(implemented.parameters) == list(signature.parameters), (family, name)
    for attribute in getattr(protocol, "__annotations__", {}):
        assert isinstance(getattr(module, attribute), str), (family, attribute)


def test_presets_name_their_family_and_an_unknown_preset_is_an_error():
    assert [family_of(preset) for preset in ("llamagen-tiny", "llamagen-b", "var-tiny", "var-d16")] == \
        ["raster", "raster", "next_scale", "next_scale"]
    with pytest.raises(ValueError, match="unknown teacher preset 'gpt-9'; available: .*var-d16"):
        family_of("gpt-9")
    assert raster_sampling.HEADLINE_SKIP == "skip" and next_scale_sampling.HEADLINE_SKIP == "skip-1"


def test_no_stage_branches_on_the_family():
    for path in Path("pipeline").glob("*.py"):
        text = path.read_text()
        assert not re.search(r'isinstance\(.*VAR\)|"llamagen":|"var":|\bfamily\(|"raster":|"next_scale":', text), path
