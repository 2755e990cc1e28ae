"""Pair shards: reproducible bytes, resumption after a kill, and corrupt shards refused."""
import pytest
import torch

from dd.config import FlowConfig, PairsConfig, RecipeConfig
from dd.pairs import CorruptPairsError, read_pairs, shard_name, write_pairs
from tests.helpers import MICRO, micro_codebook, micro_teacher

RECIPE, FLOW = RecipeConfig(cfg_scale=1.5, top_k=8), FlowConfig(solver_steps=8)


def _write(folder, batch_size=8, fingerprint="params-a", **overrides):
    config = PairsConfig(num_pairs=20, shard_size=8, batch_size=batch_size, seed=3)
    return write_pairs(micro_teacher(), micro_codebook(), RECIPE, FLOW, config, folder, fingerprint, progress=False)


def _shard_bytes(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.glob("pairs-*.tar"))}


def test_same_params_give_identical_shards_whatever_the_batch_size(tmp_path):
    manifest = _write(tmp_path / "a", batch_size=8)
    _write(tmp_path / "b", batch_size=5)
    assert [s["count"] for s in manifest["shards"]] == [8, 8, 4]
    assert _shard_bytes(tmp_path / "a") == _shard_bytes(tmp_path / "b")
    noise, tokens, labels = read_pairs(tmp_path / "a")
    assert noise.shape == (20, MICRO.num_image_tokens, 4) and tokens.shape == (20, MICRO.num_image_tokens)
    assert labels.tolist() == [i % MICRO.num_classes for i in range(20)]


def test_killed_run_resumes_keeping_complete_shards(tmp_path):
    _write(tmp_path)
    reference = _shard_bytes(tmp_path)
    # Simulate a kill during shard 1: it and the manifest are missing, a temporary file is left behind.
    (tmp_path / shard_name(1)).unlink()
    (tmp_path / "manifest.json").unlink()
    (tmp_path / ".pairs-00001.abc.tar").write_bytes(b"partial")
    with pytest.raises(CorruptPairsError, match="manifest.json is missing"):
        read_pairs(tmp_path)
    kept = (tmp_path / shard_name(0)).stat().st_mtime_ns
    _write(tmp_path)
    assert (tmp_path / shard_name(0)).stat().st_mtime_ns == kept          # not redone
    assert {k: v for k, v in _shard_bytes(tmp_path).items()} == reference
    assert len(read_pairs(tmp_path)[1]) == 20


def test_other_params_regenerate(tmp_path):
    _write(tmp_path, fingerprint="params-a")
    kept = (tmp_path / shard_name(0)).stat().st_mtime_ns
    _write(tmp_path, fingerprint="params-b")
    assert (tmp_path / shard_name(0)).stat().st_mtime_ns != kept


def test_corrupt_shard_is_refused_and_left_alone(tmp_path):
    _write(tmp_path)
    path = tmp_path / shard_name(2)
    data = bytearray(path.read_bytes())
    data[700] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptPairsError, match=f"{shard_name(2)} is missing or does not match its checksum"):
        read_pairs(tmp_path)
    assert path.read_bytes() == bytes(data)                                 # nothing overwritten


def test_pairs_follow_the_teachers_law(tmp_path):
    """Token 0 of each pair is the flow map of eps_0 under p(. | class): its histogram matches p."""
    teacher = micro_teacher()
    config = PairsConfig(num_pairs=600, shard_size=600, batch_size=600, seed=0)
    recipe = RecipeConfig(cfg_scale=1.0)
    write_pairs(teacher, micro_codebook(), recipe, FlowConfig(), config, tmp_path, "law", progress=False)
    _, tokens, labels = read_pairs(tmp_path)
    from dd.teachers import apply_recipe
    probs = apply_recipe(teacher(torch.tensor([0]), torch.zeros(1, 1, dtype=torch.long))[0], recipe)[0]
    observed = torch.bincount(tokens[labels == 0, 0], minlength=MICRO.vocab_size).float() / (labels == 0).sum()
    assert 0.5 * (observed - probs).abs().sum() < 0.12   # 200 draws over 16 codes: sampling noise ~0.06
