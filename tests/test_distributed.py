"""torchrun: pair shards dealt over 2 ranks are byte-identical to a one-process run."""
import os
import subprocess
import sys
from pathlib import Path

from tests.test_pairs import _shard_bytes, _write

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import sys
import torch.distributed as dist
from tests.test_pairs import _write
dist.init_process_group("gloo")
_write(__import__("pathlib").Path(sys.argv[1]))
dist.destroy_process_group()
"""


def test_pairs_under_torchrun_match_one_process(tmp_path):
    _write(tmp_path / "single")
    script = tmp_path / "pairs_ddp.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", str(script),
                             str(tmp_path / "ddp")], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _shard_bytes(tmp_path / "ddp") == _shard_bytes(tmp_path / "single")
    assert (tmp_path / "ddp" / "manifest.json").read_text() == (tmp_path / "single" / "manifest.json").read_text()
