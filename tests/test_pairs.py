"""Pair shards: reproducible bytes, resumption after a kill, and corrupt shards refused."""
import functools
import io
import json

import numpy as np
import pytest
import torch
import webdataset as wds

from dd.config import FlowConfig, PairsConfig, RecipeConfig
from dd.pairs import CorruptPairsError, read_pairs, shard_name, write_pairs
from dd.raster.sampling import sequence_map
from tests.helpers import MICRO, micro_codebook, micro_teacher

RECIPE, FLOW = RecipeConfig(cfg_scale=1.5, top_k=8), FlowConfig(solver_steps=8)


def _record(params="params-a", code="code-a"):
    return {"params": params, "code": {"dd/flow.py": code}}        # as dd.provenance.record makes it


def _write_with(folder, teacher, codebook, recipe, flow, config, map_record):
    pair_map = functools.partial(sequence_map, teacher, recipe, codebook, flow)
    return write_pairs(pair_map, MICRO.num_image_tokens, codebook.shape[1], MICRO.num_classes, config, folder,
                       map_record, progress=False)


def _write(folder, batch_size=8, map_record=None, num_pairs=20):
    config = PairsConfig(num_pairs=num_pairs, shard_size=8, batch_size=batch_size, seed=3)
    return _write_with(folder, micro_teacher(), micro_codebook(), RECIPE, FLOW, config, map_record or _record())


def _shard_bytes(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.glob("pairs-*.tar"))}


def test_same_params_give_identical_shards_whatever_the_batch_size(tmp_path):
    manifest = _write(tmp_path / "a", batch_size=8)
    _write(tmp_path / "b", batch_size=5)
    assert [s["count"] for s in manifest["shards"]] == [8, 8, 4]
    assert _shard_bytes(tmp_path / "a") == _shard_bytes(tmp_path / "b")
    pairs = read_pairs(tmp_path / "a")
    assert pairs.tokens.shape == (20, MICRO.num_image_tokens) and pairs.code_dim == 4 and pairs.seed == 3
    assert pairs.labels.tolist() == [i % MICRO.num_classes for i in range(20)]
    # the readers' noise is what the shards store (read here straight from the tars)
    stored = {int(s["__key__"]): np.load(io.BytesIO(s["noise.npy"]))
              for s in wds.WebDataset([str(p) for p in sorted((tmp_path / "a").glob("pairs-*.tar"))], shardshuffle=False,
                                      empty_check=False)}
    assert torch.equal(pairs.noise(torch.arange(20)), torch.from_numpy(np.stack([stored[i] for i in range(20)])))


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
    assert len(read_pairs(tmp_path).tokens) == 20


@pytest.mark.parametrize("other, reason", [(_record(params="params-b"), "was made with other params"),
                                           (_record(code="code-b"), "was made by other code (dd/flow.py changed)")])
def test_other_params_or_code_regenerate(tmp_path, capsys, other, reason):
    _write(tmp_path)
    kept = (tmp_path / shard_name(0)).stat().st_mtime_ns
    _write(tmp_path, map_record=other)
    assert (tmp_path / shard_name(0)).stat().st_mtime_ns != kept
    assert f"removing 3 shards: the set {reason}" in capsys.readouterr().out


@pytest.mark.parametrize("damage, why", [
    (lambda path: path.write_bytes(path.read_bytes()[:1000]), "does not match its checksum"),       # truncated
    (lambda path: path.write_bytes(path.read_bytes()[:-1] + b"x"), "does not match its checksum"),  # altered
    (lambda path: path.with_suffix(".json").unlink(), "has no checksum"),     # killed before its checksum file
    (lambda path: path.with_suffix(".json").write_text("{"), "has no checksum"),  # the checksum file damaged
])
def test_a_damaged_shard_of_a_complete_set_is_redone_and_accepted(tmp_path, capsys, damage, why):
    _write(tmp_path)
    reference = _shard_bytes(tmp_path)
    kept = (tmp_path / shard_name(0)).stat().st_mtime_ns
    damage(tmp_path / shard_name(1))
    _write(tmp_path)
    assert f"{shard_name(1)} {why}" in capsys.readouterr().out
    assert _shard_bytes(tmp_path) == reference                                # redone byte for byte
    assert (tmp_path / shard_name(0)).stat().st_mtime_ns == kept              # the intact ones kept
    assert len(read_pairs(tmp_path).tokens) == 20


@pytest.mark.parametrize("change", [{"seed": 4}, {"shard_size": 4}])
def test_another_seed_or_shard_size_regenerates_under_the_same_map_record(tmp_path, change):
    _write(tmp_path)                        # seed 3, shards of 8, 8, 4 pairs
    reference = _shard_bytes(tmp_path)
    # With shards of 4, new shard 2 (pairs 8-11) holds as many pairs as old shard 2 (16-19): only the
    # params fingerprint tells them apart.
    config = PairsConfig(**{"num_pairs": 20, "shard_size": 8, "batch_size": 8, "seed": 3, **change})
    _write_with(tmp_path, micro_teacher(), micro_codebook(), RECIPE, FLOW, config, _record())
    _write_with(tmp_path / "fresh", micro_teacher(), micro_codebook(), RECIPE, FLOW, config, _record())
    assert _shard_bytes(tmp_path) == _shard_bytes(tmp_path / "fresh") != reference


def test_a_grown_or_shrunk_set_keeps_the_shards_whose_range_is_unchanged(tmp_path):
    _write(tmp_path, num_pairs=20)                                           # shards of 8, 8, 4 pairs
    kept = (tmp_path / shard_name(1)).stat().st_mtime_ns
    manifest = _write(tmp_path, num_pairs=30)                                # 8, 8, 8, 6: shard 2 is redone
    assert (tmp_path / shard_name(1)).stat().st_mtime_ns == kept
    assert [s["count"] for s in manifest["shards"]] == [8, 8, 8, 6]
    _write(tmp_path / "fresh", num_pairs=30)
    assert _shard_bytes(tmp_path) == _shard_bytes(tmp_path / "fresh")
    manifest = _write(tmp_path, num_pairs=12)                                # 8, 4: shards 2 and 3 are removed
    assert [s["count"] for s in manifest["shards"]] == [8, 4]
    assert sorted(_shard_bytes(tmp_path)) == [shard_name(0), shard_name(1)]
    assert torch.equal(read_pairs(tmp_path).tokens, read_pairs(tmp_path / "fresh").tokens[:12])


def test_corrupt_shard_is_refused_and_left_alone(tmp_path):
    _write(tmp_path)
    path = tmp_path / shard_name(2)
    data = bytearray(path.read_bytes())
    data[700] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptPairsError, match=f"{shard_name(2)} is missing or does not match its checksum"):
        read_pairs(tmp_path)
    assert path.read_bytes() == bytes(data)                                 # nothing overwritten


def test_a_set_whose_noise_is_not_its_seeds_is_refused(tmp_path):
    """Readers regenerate the noise from the manifest's seed, so one that disagrees with the shards is an error."""
    _write(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "seed": manifest["seed"] + 1}))
    with pytest.raises(CorruptPairsError, match="pair 0 in .* holds noise other than its seed's"):
        read_pairs(tmp_path)


def test_pairs_follow_the_teachers_law(tmp_path):
    """Token 0 of each pair is the flow map of eps_0 under p(. | class): its histogram matches p."""
    teacher = micro_teacher()
    config = PairsConfig(num_pairs=600, shard_size=600, batch_size=600, seed=0)
    recipe = RecipeConfig(cfg_scale=1.0)
    _write_with(tmp_path, teacher, micro_codebook(), recipe, FlowConfig(), config, _record())
    pairs = read_pairs(tmp_path)
    tokens, labels = pairs.tokens, pairs.labels
    from dd.raster.teacher import apply_recipe
    probs = apply_recipe(teacher(torch.tensor([0]), torch.zeros(1, 1, dtype=torch.long))[0], recipe)[0]
    observed = torch.bincount(tokens[labels == 0, 0], minlength=MICRO.vocab_size).float() / (labels == 0).sum()
    assert 0.5 * (observed - probs).abs().sum() < 0.12   # 200 draws over 16 codes: sampling noise ~0.06


def test_var_pairs_stage_gives_the_same_shards_whatever_the_batch_size(tmp_path):
    """The pairs stage for a next-scale teacher: scale_sequence_map pairs, byte-identical across batch sizes."""
    import pipeline.pairs
    from dd.artifacts import load_tokenizer
    from dd.layout import Layout
    from dd.checkpoint import save_weights
    from dd.config import config_from_dict
    from dd.models.var_vqvae import PRESETS as VQVAE_PRESETS, MultiScaleVQVAE
    from dd.next_scale.sampling import scale_sequence_map
    from dd.seeding import per_sample_noise
    from tests.test_var import build_tiny

    teacher = build_tiny(0).requires_grad_(False)
    torch.manual_seed(1)
    vqvae = MultiScaleVQVAE(VQVAE_PRESETS["vae-tiny"]).eval()
    params = {"teachers": ["var-tiny"], "recipe": {"cfg_scale": 1.5, "top_k": 16}, "flow": {"solver_steps": 8}}
    shards = []
    for batch_size in (7, 3):
        layout = Layout("var-tiny", data_root=tmp_path / f"b{batch_size}", metrics_root=tmp_path / f"m{batch_size}")
        save_weights(layout.teacher_dir / "model.pt", teacher.state_dict(), {"preset": "var-tiny"})
        save_weights(layout.tokenizer_dir / "tokenizer.pt", vqvae.state_dict(),
                     {"preset": "vae-tiny", "weights": "tokenizer.pt", "grid_size": None})
        pairs = {"num_pairs": 11, "shard_size": 4, "batch_size": batch_size, "seed": 5}
        pipeline.pairs.run(config_from_dict({**params, "pairs": pairs}), layout, progress=False)
        shards.append(_shard_bytes(layout.pairs_dir))
    assert list(shards[0]) == [shard_name(s) for s in range(3)] and shards[0] == shards[1]

    pairs = read_pairs(layout.pairs_dir)
    tokens, labels = pairs.tokens, pairs.labels
    assert pairs.code_dim == 8 and tokens.shape == (11, 130)
    config = config_from_dict(params)
    codebook = load_tokenizer(layout).codebook
    expected = scale_sequence_map(teacher, vqvae, codebook, config.recipe, config.flow, labels[9:],
                                  per_sample_noise(5, [9, 10], 130, 8))
    assert torch.equal(tokens[9:], expected)


def test_a_damaged_record_regenerates_every_shard_identically(tmp_path, capsys):
    _write(tmp_path)
    reference = _shard_bytes(tmp_path)
    (tmp_path / "provenance.json").write_text('{"params": ')
    _write(tmp_path)
    assert "removing 3 shards: the set has no record of the code and params" in capsys.readouterr().out
    assert _shard_bytes(tmp_path) == reference
