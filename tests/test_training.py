"""The training loop: a killed run resumes to exactly the result of an uninterrupted one, and only then."""
import dataclasses

import pytest
import torch
from torch import nn

from dd.config import TrainConfig
from dd.training import learning_rate, read_log, train, uses_bf16

CONFIG = TrainConfig(train_steps=12, batch_size=4, learning_rate=0.05, warmup_steps=2, checkpoint_every=5,
                     log_every=2, ema_decay=0.9)
DATA = torch.randn(32, 3, generator=torch.Generator().manual_seed(0))   # the same in every process
RECORD = {"params": "f", "code": {"dd/training.py": "1"}}       # what dd.provenance.record gives a stage


class Killed(Exception):
    pass


def _loss(kill_at=None):
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        if kill_at is not None and calls["n"] > kill_at:
            raise Killed()
        # per-step randomness from the generator, drawn for the whole batch; this rank's rows of it
        noise = batch.local(torch.randn(batch.size, 1, generator=batch.generator))
        x = DATA[batch.local(batch.indices)]
        return ((model(x) - x.sum(1, keepdim=True) - noise) ** 2).mean()
    return loss_fn


def _model():
    torch.manual_seed(0)
    return nn.Linear(3, 1)


def test_killed_training_resumes_to_the_same_weights(tmp_path):
    reference = train(_model(), _loss(), len(DATA), CONFIG, tmp_path / "a", tmp_path / "a.json", RECORD, progress=False)

    with pytest.raises(Killed):   # dies during step 8, after the checkpoint at step 5
        train(_model(), _loss(kill_at=7), len(DATA), CONFIG, tmp_path / "b", tmp_path / "b.json", RECORD, progress=False)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 5
    resumed = train(_model(), _loss(), len(DATA), CONFIG, tmp_path / "b", tmp_path / "b.json", RECORD, progress=False)

    for a, b in zip(reference.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    steps = [row["step"] for row in read_log(tmp_path / "b.json")]
    assert steps == [2, 4, 6, 8, 10, 12]                                    # no duplicated or lost log rows


@pytest.mark.parametrize("change, message", [
    ({"params": "g"}, "was made with other params; starting this training afresh"),
    ({"code": {"dd/training.py": "2"}}, "was made by other code (dd/training.py changed); starting this training afresh"),
    ({"code": {"dd/training.py": "1", "dd/new.py": "3"}}, "was made by other code (dd/new.py changed)"),
])
def test_checkpoint_from_other_params_or_code_is_not_resumed(tmp_path, capsys, change, message):
    """Killed at step 8 (checkpoint at 5) under one record, rerun under another: training restarts at step 0 and
    ends where an uninterrupted run under the new record ends."""
    with pytest.raises(Killed):
        train(_model(), _loss(kill_at=7), len(DATA), CONFIG, tmp_path, tmp_path / "log.json", RECORD, progress=False)
    other = {**RECORD, **change}
    loss, calls = _loss(), []
    resumed = train(_model(), lambda *a: calls.append(1) or loss(*a), len(DATA), CONFIG, tmp_path,
                    tmp_path / "log.json", other, progress=False)
    assert message in capsys.readouterr().out and len(calls) == CONFIG.train_steps
    fresh = train(_model(), _loss(), len(DATA), CONFIG, tmp_path / "b", tmp_path / "b.json", other, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(resumed.parameters(), fresh.parameters()))
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["provenance"] == other


def test_a_checkpoint_without_a_record_or_damaged_is_not_resumed(tmp_path, capsys):
    train(_model(), _loss(), len(DATA), CONFIG, tmp_path, tmp_path / "log.json", RECORD, progress=False)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    torch.save({**{k: v for k, v in state.items() if k != "provenance"}, "fingerprint": "f"}, tmp_path / "checkpoint.pt")
    train(_model(), _loss(), len(DATA), CONFIG, tmp_path, tmp_path / "log.json", RECORD, progress=False)
    assert "has no record of the code and params" in capsys.readouterr().out
    data = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(data[:len(data) // 2])           # truncated on disk after the run
    train(_model(), _loss(), len(DATA), CONFIG, tmp_path, tmp_path / "log.json", RECORD, progress=False)
    assert "cannot be read" in capsys.readouterr().out
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == CONFIG.train_steps


def test_checkpoint_of_another_model_is_not_resumed(tmp_path, capsys):
    """Same params, but the code changed the model (a new layer): training starts afresh instead of failing."""
    train(_model(), _loss(), len(DATA), CONFIG, tmp_path, tmp_path / "log.json", RECORD, progress=False)
    grown = nn.Sequential(_model(), nn.Linear(1, 1))
    train(grown, _loss(), len(DATA), CONFIG, tmp_path, tmp_path / "log.json", RECORD, progress=False)
    assert "another model's weights" in capsys.readouterr().out
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == CONFIG.train_steps


def test_learning_rate_schedule():
    assert learning_rate(0, CONFIG) == pytest.approx(0.025)
    assert learning_rate(2, CONFIG) == pytest.approx(0.05)
    assert learning_rate(12, CONFIG) == pytest.approx(0.005)


def test_training_seed_changes_the_batches(tmp_path):
    first = train(_model(), _loss(), len(DATA), CONFIG, tmp_path / "a", tmp_path / "a.json", RECORD, progress=False)
    other = dict(CONFIG.__dict__, seed=1)
    second = train(_model(), _loss(), len(DATA), type(CONFIG)(**other), tmp_path / "b", tmp_path / "b.json", RECORD,
                   progress=False)
    assert not torch.equal(first.weight, second.weight)


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(False, False, False), (True, False, True), (False, True, True)])
def test_auto_precision_uses_bf16_only_where_the_cpu_has_it(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert uses_bf16("auto", torch.device("cpu")) is expected
    assert uses_bf16("auto", torch.device("cuda")) is True
    assert uses_bf16("bf16", torch.device("cpu")) is True and uses_bf16("fp32", torch.device("cuda")) is False


@pytest.mark.parametrize("precision, logged", [("fp32", False), ("bf16", True)])
def test_log_records_the_precision_that_ran(tmp_path, precision, logged):
    config = dataclasses.replace(CONFIG, precision=precision)
    train(_model(), _loss(), len(DATA), config, tmp_path, tmp_path / "log.json", RECORD, progress=False)
    rows = read_log(tmp_path / "log.json")
    assert rows and all(row["train/bf16"] is logged for row in rows)
