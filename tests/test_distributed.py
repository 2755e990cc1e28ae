"""torchrun: pair shards dealt over 2 ranks are byte-identical to a one-process run, and training on 2 ranks
makes the updates one rank makes with the same global batch."""
import os
import subprocess
import sys
from pathlib import Path

import torch

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


TRAIN = """
import sys
import torch
import torch.distributed as dist
from tests.test_training import CONFIG, DATA, RECORD, _loss, _model
from dd.training import train
from pathlib import Path
if len(sys.argv) > 2:
    dist.init_process_group("gloo")
folder = Path(sys.argv[1])
ema = train(_model(), _loss(), len(DATA), CONFIG, folder, folder / "log.json", RECORD, progress=False)
if not dist.is_initialized() or dist.get_rank() == 0:
    torch.save(ema.state_dict(), folder / "ema.pt")
"""


def test_training_on_two_ranks_makes_the_updates_of_one(tmp_path):
    """2 gloo ranks, each on its half of the global batch and of its draws (dd.training.Batch), against one
    process on the whole of it: the same weights after CONFIG's 12 steps, to float rounding (DDP averages the
    two halves' mean gradients, one process takes the mean of all, in another order)."""
    script = tmp_path / "train_ddp.py"
    script.write_text(TRAIN)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one")], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", str(script),
                          str(tmp_path / "two"), "ddp"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0 and two.returncode == 0, (one.stderr + two.stderr)[-3000:]
    weights = [torch.load(tmp_path / name / "ema.pt", weights_only=True) for name in ("one", "two")]
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-5) for k in weights[0])
    assert any(not torch.equal(weights[0][k], torch.zeros_like(weights[0][k])) for k in weights[0])
