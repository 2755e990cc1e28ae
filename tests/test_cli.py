"""The dd command line: help everywhere, dry runs, and clear errors that write nothing."""
import json
import shutil

import pytest
import yaml
from typer.testing import CliRunner

from dd.cli import app

runner = CliRunner()
STAGES = ["data", "classifier", "tokenizer", "teacher", "pairs", "student", "sample", "sample-dd", "latency", "evaluate"]


@pytest.mark.parametrize("stage", STAGES)
def test_help(stage):
    result = runner.invoke(app, [stage, "--help"])
    assert result.exit_code == 0 and "Examples" in result.output


def test_dry_run_prints_resolved_config():
    result = runner.invoke(app, ["pairs", "llamagen-tiny", "--dry-run"])
    assert result.exit_code == 0
    assert json.loads(result.output)["pairs"]["num_pairs"] > 0


def test_unknown_params_key_is_an_error_that_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"pairs": {"num_pair": 10}}))
    result = runner.invoke(app, ["data"])
    assert result.exit_code != 0 and "unknown params key 'pairs.num_pair'" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_teacher_not_in_params_is_an_error():
    result = runner.invoke(app, ["teacher", "llamagen-b"])
    assert result.exit_code != 0 and "not in params.yaml teachers" in result.output


def test_missing_data_is_an_error_that_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"source": str(tmp_path / "no-such-folder")}}))
    result = runner.invoke(app, ["data"])
    assert result.exit_code != 0
    assert "no-such-folder" in str(result.exception)
    assert not (tmp_path / "data" / "dataset").exists()


def test_every_stage_run_appends_its_time_and_cpu_to_stage_times(tmp_path, monkeypatch):
    shutil.copy("params.yaml", tmp_path)
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert runner.invoke(app, ["resolve", "llamagen-tiny"]).exit_code == 0
    rows = [json.loads(line) for line in (tmp_path / "data" / "stage_times.jsonl").read_text().splitlines()]
    assert [(row["stage"], row["teacher"]) for row in rows] == [("resolve", "llamagen-tiny")] * 2
    assert all(row["seconds"] >= 0 and row["threads"] >= 1 for row in rows)
    assert {row["cpu"] for row in rows} <= {"DEFAULT", "VSX", "Z VECTOR", "NO AVX", "AVX2", "AVX512", "AVX512_BF16",
                                            "AMX", "SVE128", "SVE256", "SVE512", "NEON"}
