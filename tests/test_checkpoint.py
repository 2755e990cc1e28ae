import pytest
import torch

from dd.checkpoint import load_state_dict, save_weights, with_weights
from dd.models.llamagen import GPT, PRESETS as GPT_PRESETS
from dd.models.var import VAR, PRESETS as VAR_PRESETS
from dd.models.var_vqvae import MultiScaleVQVAE, PRESETS as VAE_PRESETS
from dd.next_scale.student import VARStudent


def test_saving_the_same_weights_twice_gives_the_same_bytes(tmp_path):
    # DVC hashes outputs: a rerun that computes the same weights must not look like a change.
    state = {"weight": torch.arange(6.0).reshape(2, 3)}
    first, second = save_weights(tmp_path / "a" / "model.pt", state, {}), save_weights(tmp_path / "b" / "model.pt", state, {})
    assert first.read_bytes() == second.read_bytes()
    assert torch.equal(load_state_dict(second)["weight"], state["weight"])


@pytest.mark.parametrize("build", [lambda: VAR(VAR_PRESETS["var-tiny"]), lambda: GPT(GPT_PRESETS["llamagen-tiny"], head_std=0.02),
                                   lambda: VARStudent(VAR_PRESETS["var-tiny"]), lambda: MultiScaleVQVAE(VAE_PRESETS["vae-tiny"])],
                         ids=["var", "llamagen", "var-student", "vqvae"])
def test_with_weights_gives_the_loaded_model_and_draws_no_init(build):
    torch.manual_seed(0)
    reference = build()                                    # built with its init, then given the file's weights
    state = {key: value + 1 for key, value in reference.state_dict().items()}   # weights no init would draw
    reference.load_state_dict(state, strict=True)
    rng = torch.get_rng_state()
    model = with_weights(build, state)
    assert torch.equal(torch.get_rng_state(), rng)          # nothing was drawn: the init did not run
    ours, theirs = dict(model.named_parameters()), dict(reference.named_parameters())
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    # Non-persistent buffers (GPT's RoPE table, the student's mask) are not in the file and must still be real.
    ours, theirs = dict(model.named_buffers()), dict(reference.named_buffers())
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_with_weights_casts_to_the_declared_dtype_and_rejects_a_wrong_file():
    build = lambda: VAR(VAR_PRESETS["var-tiny"])
    state = {key: value.half() if value.is_floating_point() else value for key, value in build().state_dict().items()}
    assert next(with_weights(build, state).parameters()).dtype == torch.float32   # as load_state_dict's copy would
    state["head.weight"] = state["head.weight"][:-1]
    with pytest.raises(RuntimeError, match="size mismatch for head.weight"):
        with_weights(build, state)


def test_with_weights_names_a_buffer_that_no_file_holds_and_was_built_on_meta():
    class Masked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)
            self.register_buffer("mask", torch.ones(2), persistent=False)   # no explicit device: meta when built there

    with pytest.raises(RuntimeError, match="mask"):
        with_weights(Masked, Masked().state_dict())
