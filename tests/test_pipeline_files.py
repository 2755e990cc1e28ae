"""dvc.yaml, params.yaml and the code agree: stage outputs, stage modules and params sections."""
import dataclasses
from pathlib import Path

import yaml

from dd.config import STAGE_PARAMS, Config, resolve, stage_params
from dd.layout import Layout

DVC = yaml.safe_load(Path("dvc.yaml").read_text())["stages"]


def _paths(entries):
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def test_declared_outputs_match_the_layout():
    layout = Layout("${item}")
    expected = {
        "data": [layout.dataset_dir], "classifier": [layout.classifier_dir], "tokenizer": [layout.tokenizer_dir],
        "teacher": [layout.teacher_dir], "pairs": [layout.pairs_dir], "student": [layout.student_dir],
        "sample": [layout.samples_dir], "sample_dd": [layout.dd_samples_dir],
    }
    for stage, paths in expected.items():
        body = DVC[stage].get("do", DVC[stage])
        assert _paths(body["outs"]) == [str(p) for p in paths], stage


def test_every_stage_has_a_pipeline_module_and_known_params():
    sections = set(Config.__dataclass_fields__) | {"overrides"}      # overrides: per-teacher params (resolve)
    for stage, body in DVC.items():
        body = body.get("do", body)
        assert Path(f"pipeline/{stage}.py").exists(), stage
        for param in body.get("params", []):
            assert param.split(".")[0] in sections, (stage, param)
    for stage in STAGE_PARAMS:
        stage_params(Config(), stage)                                # every dotted key names a field (else KeyError)


def test_each_teacher_stage_depends_on_its_resolved_params_only():
    """Only `resolve` reads params.yaml (with the teacher's own overrides entry); every other per-teacher stage
    depends on its own data/<teacher>/params/<stage>.json, so it reruns only when its resolved values change."""
    per_teacher = {stage for stage, body in DVC.items() if "foreach" in body}
    assert per_teacher == set(STAGE_PARAMS) | {"resolve"}
    assert DVC["resolve"]["do"]["outs"] == [str(Layout("${item}").params_dir)]
    assert "overrides.${item}" in DVC["resolve"]["do"]["params"]
    for stage in STAGE_PARAMS:
        body = DVC[stage]["do"]
        assert "params" not in body, stage
        assert str(Layout("${item}").params_dir / f"{stage}.json") in body["deps"], stage
    params = yaml.safe_load(Path("params.yaml").read_text())
    assert set(params["teachers"]) <= set(params["overrides"])
    assert {"llamagen-tiny", "var-tiny"} <= set(params["overrides"])   # dvc exp run -S teachers='[llamagen-tiny,var-tiny]'


def test_student_steps_reruns_only_sampling_latency_and_evaluation():
    """`dvc exp run -S student.steps=2` (and `-S student.teacher_steps=8` on top) must not retrain anything: only
    these stages' resolved params change."""
    base = Config()
    two_steps = dataclasses.replace(base, student=dataclasses.replace(base.student, steps=2))
    hybrid = dataclasses.replace(two_steps, student=dataclasses.replace(two_steps.student, teacher_steps=8))
    for before, after in ((base, two_steps), (two_steps, hybrid)):
        changed = {stage for stage in STAGE_PARAMS if stage_params(before, stage) != stage_params(after, stage)}
        assert changed == {"sample_dd", "latency", "evaluate"}


def test_an_override_changes_the_resolved_params_of_the_stages_that_read_it_only():
    data = yaml.safe_load(Path("params.yaml").read_text())
    before = {stage: stage_params(resolve(data, "var-tiny"), stage) for stage in STAGE_PARAMS}
    data["overrides"]["var-tiny"]["student"]["train"]["train_steps"] = 9
    after = {stage: stage_params(resolve(data, "var-tiny"), stage) for stage in STAGE_PARAMS}
    assert {stage for stage in STAGE_PARAMS if before[stage] != after[stage]} == {"student"}
    assert after["student"]["student.train"]["train_steps"] == 9
    assert stage_params(resolve(data, "llamagen-tiny"), "student")["student.train"]["train_steps"] != 9
