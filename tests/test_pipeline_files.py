"""dvc.yaml, params.yaml and the code agree: stage outputs, stage modules and params sections."""
from pathlib import Path

import yaml

from dd.artifacts import Layout
from dd.config import Config

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


def test_student_steps_reruns_only_sampling_latency_and_evaluation():
    """`dvc exp run -S student.steps=2` must not retrain anything: only these stages read student.steps."""
    readers = {stage for stage, body in DVC.items()
               if any(p in ("student", "student.steps") for p in body.get("do", body).get("params", []))}
    assert readers == {"sample_dd", "latency", "evaluate"}


def test_a_teachers_stages_track_its_own_overrides_only():
    """Tuning overrides.var-tiny must not rerun llamagen-tiny's stages, and every listed teacher needs an entry."""
    for stage, body in DVC.items():
        if "foreach" in body:
            params = body["do"]["params"]
            assert "overrides.${item}" in params and "overrides" not in params, stage
    params = yaml.safe_load(Path("params.yaml").read_text())
    assert set(params["teachers"]) <= set(params["overrides"])
    assert {"llamagen-tiny", "var-tiny"} <= set(params["overrides"])   # dvc exp run -S teachers='[llamagen-tiny,var-tiny]'
