"""The dd command line: help everywhere, dry runs, and clear errors that write nothing."""
import json

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
