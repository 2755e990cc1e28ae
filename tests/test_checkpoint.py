import torch

from dd.checkpoint import load_state_dict, save_weights


def test_saving_the_same_weights_twice_gives_the_same_bytes(tmp_path):
    # DVC hashes outputs: a rerun that computes the same weights must not look like a change.
    state = {"weight": torch.arange(6.0).reshape(2, 3)}
    first, second = save_weights(tmp_path / "a" / "model.pt", state, {}), save_weights(tmp_path / "b" / "model.pt", state, {})
    assert first.read_bytes() == second.read_bytes()
    assert torch.equal(load_state_dict(second)["weight"], state["weight"])
