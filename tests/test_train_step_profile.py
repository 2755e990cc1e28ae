"""scripts/train_step_profile.py at a tiny size: it times the training loop of each model kind it knows and
profiles an eager step."""
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "scripts" / "train_step_profile.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args, "--no-compile", "--batch-size", "2", "--steps", "2",
                           "--interval", "1"], capture_output=True, text=True, timeout=300)


def test_times_and_profiles_a_teacher_step():
    result = _run("llamagen-tiny", "--profile", "1")
    assert result.returncode == 0, result.stderr
    assert "median" in result.stdout and "over 2 intervals of 1" in result.stdout
    assert "aten::mm" in result.stdout                           # the profile's operator table


def test_times_the_vqvae_and_a_next_scale_teacher():
    for args, title in ((("var-tiny", "--stage", "tokenizer", "--channels-last"), "var-tiny tokenizer: "),
                        (("var-tiny",), "var-tiny teacher: ")):
        result = _run(*args)
        assert result.returncode == 0, result.stderr
        assert title in result.stdout and "median" in result.stdout


def test_channels_last_is_for_the_vqvae_only():
    result = _run("llamagen-tiny", "--channels-last")
    assert result.returncode != 0 and "--stage tokenizer only" in result.stdout + result.stderr


def test_a_raster_teacher_has_no_tokenizer_training():
    result = _run("llamagen-tiny", "--stage", "tokenizer")
    assert result.returncode != 0 and "fits k-means" in result.stdout + result.stderr
