"""VAR's multi-scale VQVAE as the pipeline's tokenizer: its training loss (straight-through, commitment and
codebook terms) and the tokenizer interface it is loaded behind."""
import dataclasses

import numpy as np
import torch

from dd.artifacts import load_tokenizer
from dd.checkpoint import save_weights
from dd.config import resolve
from dd.data import ImageSet
from dd.layout import Layout
from dd.models.var_vqvae import PRESETS, MultiScaleVQVAE
from dd.next_scale import tokenizer as next_scale_tokenizer
from dd.next_scale.tokenizer import MultiScaleTokenizer, initialise_codebook, scale_usage, to_pixels, vqvae_loss

TINY = PRESETS["vae-tiny"]        # 32x32 grey -> 8x8 latent, scales (1, 2, 3, 4, 6, 8): 130 tokens, V = 256, E = 8


def tiny_vqvae(seed: int = 0) -> MultiScaleVQVAE:
    torch.manual_seed(seed)
    return MultiScaleVQVAE(TINY)


def images(count: int, seed: int = 0) -> np.ndarray:
    """Grey images with structure (a bright box per image) so reconstruction has something to learn."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 40, (count, 32, 32, 1), dtype=np.uint8)
    for image in out:
        top, left = rng.integers(2, 18, 2)
        image[top:top + 12, left:left + 10] = rng.integers(150, 255)
    return out


def test_training_steps_lower_the_loss_on_a_small_batch():
    model, batch = tiny_vqvae(), torch.from_numpy(images(8))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        loss = vqvae_loss(model, batch, beta=0.25)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_codes_start_as_latent_vectors_of_the_untrained_encoder():
    model, batch = tiny_vqvae(), images(8)
    initialise_codebook(model, batch, torch.Generator().manual_seed(0))
    with torch.no_grad():
        cells = model.encode(to_pixels(batch)).permute(0, 2, 3, 1).flatten(0, 2)     # (8 * 64, E)
        is_a_cell = (model.codebook[:, None] == cells[None]).all(-1).any(1)          # (V,)
        assert is_a_cell.all() and len(torch.unique(model.codebook, dim=0)) == TINY.vocab_size


def test_straight_through_and_the_two_quantiser_losses():
    model = tiny_vqvae()
    f = model.encode(to_pixels(images(4))).detach().requires_grad_(True)
    f_hat, tokens, vq_loss = model.quantize_with_loss(f, beta=0.25)

    # Forward: the tokens are tokenize's, f_hat's value is their reconstruction.
    assert all(torch.equal(a, b) for a, b in zip(tokens, model.tokenize(f)))
    torch.testing.assert_close(f_hat, model.tokens_to_fhat(tokens))

    # Backward through f_hat: the gradient reaches f unchanged (straight-through), not the codebook.
    weights = torch.randn_like(f_hat)
    (f_hat * weights).sum().backward()
    torch.testing.assert_close(f.grad, weights)
    assert model.codebook.grad is None or torch.all(model.codebook.grad == 0)

    # The quantiser's loss: commitment pulls f (weight beta), the codebook term pulls the codes, never f.
    f.grad = None
    _, _, vq_loss = model.quantize_with_loss(f, beta=0.25)
    vq_loss.backward()
    partial, expected = None, torch.zeros_like(f)
    for k, scale_tokens in enumerate(tokens):
        partial, _ = model.fhat_step(k, partial, scale_tokens)
        expected += 0.25 * 2 * (f - partial).detach() / f.numel() / len(tokens)
    torch.testing.assert_close(f.grad, expected)
    assert model.codebook.grad.abs().sum() > 0


def test_tokenizer_saves_loads_and_decodes_partial_scales(tmp_path):
    layout = Layout("var-tiny", data_root=tmp_path / "data", metrics_root=tmp_path / "metrics")
    model = tiny_vqvae()
    save_weights(layout.tokenizer_dir / "tokenizer.pt", model.state_dict(),
                 {"preset": "vae-tiny", "weights": "tokenizer.pt", "grid_size": None})
    tokenizer = load_tokenizer(layout)
    assert isinstance(tokenizer, MultiScaleTokenizer)
    assert (tokenizer.num_tokens, tokenizer.codebook_size, tuple(tokenizer.codebook.shape)) == (130, 256, (256, 8))
    # The flow map's code vectors: the codes centred and scaled by one factor to unit variance per axis (mean).
    codes, raw = tokenizer.codebook.double(), model.codebook.detach().double()
    torch.testing.assert_close(codes.mean(0), torch.zeros(8, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(codes.var(0).mean(), torch.tensor(1.0, dtype=torch.float64))
    ratio = torch.pdist(codes) / torch.pdist(raw)
    torch.testing.assert_close(ratio, torch.full_like(ratio, ratio[0].item()), rtol=1e-5, atol=0)

    batch = images(5)
    tokens = tokenizer.encode(batch)
    assert tokens.shape == (5, 130) and tokens.dtype == torch.long and not tokens.is_inference()   # targets
    with torch.no_grad():
        expected = torch.cat(model.tokenize(model.encode(to_pixels(batch))), dim=1)
        assert torch.equal(tokens, expected)
        whole = tokenizer.decode(tokens)
        assert whole.shape == (5, 32, 32, 1) and whole.dtype == np.uint8
        # The first 4 scales (1 + 4 + 9 + 16 tokens) decode from the f_hat they sum to, as a teacher stopped
        # early has it.
        split = tokenizer.split(tokens)
        assert [t.shape[1] for t in split] == [1, 4, 9, 16, 36, 64]
        f_hat = None
        for k in range(4):
            f_hat, _ = model.fhat_step(k, f_hat, split[k])
        pixels = (model.decode_fhat(f_hat) + 1) * 127.5                      # (5, 1, 32, 32) in [0, 255]
        partial = tokenizer.decode(tokens[:, :30])
        assert np.array_equal(partial, pixels.round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
        assert not np.array_equal(partial, whole)
    usage = scale_usage(tokenizer, tokens)
    assert len(usage["codebook_usage_per_scale"]) == 6 and usage["codebook_usage_per_scale"][0] <= 5 / 256


def test_the_vqvae_stage_starts_afresh_when_the_preset_architecture_changes(tmp_path, monkeypatch, capsys):
    """The run fingerprint covers the preset's architecture: a checkpoint of the old shape is not resumed into
    the new one (which would fail to load), and the new run starts at step 0."""
    layout = Layout("var-tiny", data_root=tmp_path / "data", metrics_root=tmp_path / "metrics")
    for split, seed in (("train", 0), ("validation", 1)):
        ImageSet(images(8, seed), np.zeros(8, dtype=np.int64), ("box",)).save(layout.dataset_dir / f"{split}.npz")
    short = {"train_steps": 2, "batch_size": 4, "checkpoint_every": 1, "compile": False}
    config = resolve({"overrides": {"var-tiny": {"vqvae": {"preset": "vae-tiny", "train": short}}}}, "var-tiny")

    next_scale_tokenizer.make_tokenizer(config, layout, progress=False)
    first = torch.load(layout.tokenizer_dir / "checkpoint.pt", weights_only=True)
    assert first["step"] == 2

    wider = dataclasses.replace(TINY, ch_mult=(1, 2, 2))
    monkeypatch.setitem(next_scale_tokenizer.PRESETS, "vae-tiny", wider)
    capsys.readouterr()
    next_scale_tokenizer.make_tokenizer(config, layout, progress=False)
    assert "starting this training afresh" in capsys.readouterr().out
    second = torch.load(layout.tokenizer_dir / "checkpoint.pt", weights_only=True)
    assert second["provenance"]["params"] != first["provenance"]["params"]
    assert second["step"] == 2 and any(second["model"][key].shape != value.shape
                                       for key, value in first["model"].items())
