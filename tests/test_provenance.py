"""dd/provenance.py: the code each stage runs, dvc.yaml's deps agreeing with it, and the records resumes check."""
import copy
from pathlib import Path

import pytest
import yaml

from dd.provenance import changes, code_files, code_hashes, dvc_deps_problems, record, stage_code_files

STAGES = yaml.safe_load(Path("dvc.yaml").read_text())["stages"]


def test_every_stage_in_dvc_yaml_lists_exactly_the_code_it_runs():
    assert dvc_deps_problems(STAGES) == []


@pytest.mark.parametrize("stage, module", [("pairs", "dd/flow.py"), ("student", "dd/raster/student.py"),
                                           ("sample_dd", "dd/next_scale/teacher.py"), ("latency", "pipeline/sample_dd.py")])
def test_the_check_names_a_module_removed_from_a_stage(stage, module):
    stages = copy.deepcopy(STAGES)
    stages[stage]["do"]["deps"].remove(module)
    assert dvc_deps_problems(stages) == [f"stage {stage} runs {module} but dvc.yaml does not list it"]
    stages[stage]["do"]["deps"].append("dd/gone.py")
    assert f"stage {stage} lists dd/gone.py, which it does not run" in dvc_deps_problems(stages)


def test_upstream_stages_do_not_run_downstream_code():
    """What a stage imports decides what reruns it: a change to the student, the evaluation or the latency
    benchmark must not retrain the tokenizer or the teacher, nor regenerate the pairs."""
    for stage in ("data", "tokenizer", "teacher", "pairs"):
        assert not {"dd/raster/student.py", "dd/next_scale/student.py", "dd/dd1.py", "dd/evaluation.py",
                    "dd/latency.py"} & set(stage_code_files(stage)), stage
    for stage in ("tokenizer", "teacher"):
        assert not {"dd/flow.py", "dd/pairs.py", "dd/raster/sampling.py", "dd/next_scale/sampling.py"} & set(
            stage_code_files(stage)), stage
    assert {"dd/flow.py", "dd/raster/sampling.py", "dd/next_scale/sampling.py"} <= set(stage_code_files("pairs"))
    assert not [name for name in stage_code_files("data") if name.startswith("dd/models/")]


def _package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_imports_are_followed_transitively_in_every_form(tmp_path):
    _package(tmp_path, {
        "dd/__init__.py": "", "dd/models/__init__.py": "", "pipeline/__init__.py": "",
        "pipeline/stage.py": "import dd.a\nfrom dd import b\nfrom dd.models.c import thing\n"
                             "def f():\n    from dd.d import late\n",
        "dd/a.py": "import torch\nfrom dd.e import x\n", "dd/b.py": "", "dd/models/c.py": "", "dd/d.py": "",
        "dd/e.py": "", "dd/unused.py": "",
    })
    assert code_files(tmp_path / "pipeline" / "stage.py", tmp_path) == [
        "dd/__init__.py", "dd/a.py", "dd/b.py", "dd/d.py", "dd/e.py", "dd/models/__init__.py", "dd/models/c.py",
        "pipeline/__init__.py", "pipeline/stage.py"]


def test_the_code_hashes_change_with_a_file_the_stage_runs_only(tmp_path):
    _package(tmp_path, {"dd/__init__.py": "", "pipeline/__init__.py": "", "pipeline/stage.py": "import dd.a\n",
                        "dd/a.py": "A = 1\n", "dd/other.py": ""})
    entry, before = tmp_path / "pipeline" / "stage.py", code_hashes(tmp_path / "pipeline" / "stage.py", tmp_path)
    (tmp_path / "dd" / "other.py").write_text("B = 2\n")
    assert code_hashes(entry, tmp_path) == before
    (tmp_path / "dd" / "a.py").write_text("A = 2\n")
    after = code_hashes(entry, tmp_path)
    assert after.keys() == before.keys() and {k for k in after if after[k] != before[k]} == {"dd/a.py"}


def test_changes_says_what_differs():
    current = record(Path("pipeline/pairs.py"), {"top_k": 8})
    assert changes(current, current) is None
    assert changes(None, current).startswith("has no record")
    assert changes({**current, "params": "x"}, current) == "was made with other params"
    edited = {**current, "code": {**current["code"], "dd/flow.py": "0"}}
    assert changes(edited, current) == "was made by other code (dd/flow.py changed)"
    assert current == record(Path("pipeline/pairs.py"), {"top_k": 8}) != record(Path("pipeline/pairs.py"), {"top_k": 9})
