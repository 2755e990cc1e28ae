"""VAR's multi-scale VQVAE: published checkpoint layout, and the residual quantiser checked against loops
written here from the paper's definitions (not through the model's own helpers)."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dd.models.var_vqvae import PRESETS, MultiScaleVQVAE, VQVAEConfig

PUBLISHED = PRESETS["vae-ch160v4096z32"]
TINY = PRESETS["vae-tiny"]


# ---- published checkpoint ------------------------------------------------------------------------------


def published_layout() -> dict[str, tuple[int, ...]]:
    """Every key of vae_ch160v4096z32.pth with its shape, spelled out from the reference's module tree."""
    ch, mult, V, D = 160, (1, 1, 2, 2, 4), 4096, 32
    out: dict[str, tuple[int, ...]] = {}

    def conv(name, c_in, c_out, k):
        out[f"{name}.weight"] = (c_out, c_in, k, k)
        out[f"{name}.bias"] = (c_out,)

    def norm(name, c):
        out[f"{name}.weight"] = out[f"{name}.bias"] = (c,)

    def resnet(name, c_in, c_out):
        norm(f"{name}.norm1", c_in)
        conv(f"{name}.conv1", c_in, c_out, 3)
        norm(f"{name}.norm2", c_out)
        conv(f"{name}.conv2", c_out, c_out, 3)
        if c_in != c_out:
            conv(f"{name}.nin_shortcut", c_in, c_out, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        conv(f"{name}.qkv", c, 3 * c, 1)
        conv(f"{name}.proj_out", c, c, 1)

    def mid(name, c):
        resnet(f"{name}.block_1", c, c)
        attn(f"{name}.attn_1", c)
        resnet(f"{name}.block_2", c, c)

    conv("encoder.conv_in", 3, ch, 3)
    c = ch
    for i, m in enumerate(mult):
        for j in range(2):
            resnet(f"encoder.down.{i}.block.{j}", c, ch * m)
            c = ch * m
            if i == 4:
                attn(f"encoder.down.{i}.attn.{j}", c)
        if i != 4:
            conv(f"encoder.down.{i}.downsample.conv", c, c, 3)
    mid("encoder.mid", c)
    norm("encoder.norm_out", c)
    conv("encoder.conv_out", c, D, 3)

    conv("decoder.conv_in", D, c, 3)
    mid("decoder.mid", c)
    for i in reversed(range(5)):
        for j in range(3):
            resnet(f"decoder.up.{i}.block.{j}", c, ch * mult[i])
            c = ch * mult[i]
            if i == 4:
                attn(f"decoder.up.{i}.attn.{j}", c)
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", c, c, 3)
    norm("decoder.norm_out", c)
    conv("decoder.conv_out", c, 3, 3)

    out["quantize.ema_vocab_hit_SV"] = (10, V)
    out["quantize.embedding.weight"] = (V, D)
    for k in range(4):
        conv(f"quantize.quant_resi.qresi_ls.{k}", D, D, 3)
    conv("quant_conv", D, D, 3)
    conv("post_quant_conv", D, D, 3)
    return out


def test_published_parameter_count():
    with torch.device("meta"):
        model = MultiScaleVQVAE(PUBLISHED)
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 2) == 108.95
    assert PUBLISHED.downsample == 16 and PUBLISHED.image_size == 256 and PUBLISHED.num_tokens == 680


def test_published_state_dict_layout():
    with torch.device("meta"):
        model = MultiScaleVQVAE(PUBLISHED)
    expected = published_layout()
    assert len(expected) == 324
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected


def test_random_checkpoint_in_published_format_loads_strictly(tmp_path):
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=gen, dtype=torch.bfloat16) for k, shape in published_layout().items()}
    torch.save(state, tmp_path / "vae.pth")
    loaded = torch.load(tmp_path / "vae.pth", map_location="cpu", weights_only=True)
    with torch.device("meta"):
        model = MultiScaleVQVAE(PUBLISHED)
    model.load_state_dict(loaded, strict=True, assign=True)
    assert torch.equal(model.codebook, state["quantize.embedding.weight"])
    assert torch.equal(model.quantize.quant_resi.qresi_ls[3].bias, state["quantize.quant_resi.qresi_ls.3.bias"])
    assert torch.equal(model.decoder.up[4].attn[2].qkv.weight, state["decoder.up.4.attn.2.qkv.weight"])


def test_usage_buffer_of_another_scale_count_still_loads_strictly():
    # The reference's load_state_dict accepts a usage buffer saved with another number of scales.
    model = MultiScaleVQVAE(TINY)
    state = model.state_dict()
    state["quantize.ema_vocab_hit_SV"] = torch.arange(3 * TINY.vocab_size, dtype=torch.float32).view(3, -1)
    model.load_state_dict(state, strict=True)
    assert torch.equal(model.quantize.ema_vocab_hit_SV, state["quantize.ema_vocab_hit_SV"])
    with pytest.raises(RuntimeError, match="size mismatch"):
        model.load_state_dict(state | {"quantize.embedding.weight": torch.zeros(5, TINY.code_dim)})


def test_phi_choice_per_scale():
    # Nearest of the ticks linspace(1/12, 11/12, 4) to si/(K-1); for 10 scales si=2 and si=7 are exact ties
    # decided by float64 rounding in the reference (numpy), giving conv 1 and conv 3.
    assert PUBLISHED.phi_index == (0, 0, 1, 1, 1, 2, 2, 3, 3, 3)
    assert TINY.phi_index == (0, 0, 1, 2, 3, 3)


# ---- residual quantisation on the tiny preset ----------------------------------------------------------


def tiny_model(seed: int = 0, config: VQVAEConfig = TINY) -> MultiScaleVQVAE:
    torch.manual_seed(seed)
    model = MultiScaleVQVAE(config).eval().requires_grad_(False)
    torch.nn.init.normal_(model.codebook, std=0.5)
    for phi in model.quantize.quant_resi.qresi_ls:
        torch.nn.init.normal_(phi.weight, std=0.1)
        torch.nn.init.normal_(phi.bias, std=0.1)
    return model


def ref_phi(model: MultiScaleVQVAE, k: int, h: torch.Tensor) -> torch.Tensor:
    conv = model.quantize.quant_resi.qresi_ls[k]
    return 0.5 * h + 0.5 * F.conv2d(h, conv.weight, conv.bias, padding=1)


def ref_contribution(model: MultiScaleVQVAE, si: int, idx: torch.Tensor) -> torch.Tensor:
    """phi(bicubic-upsampled code map of scale si), computed by hand; idx (B, pn*pn) raster order."""
    cfg = model.config
    pn, side = cfg.patch_nums[si], cfg.latent_size
    codes = model.codebook[idx].view(idx.shape[0], pn, pn, -1).permute(0, 3, 1, 2)  # (B, D, pn, pn)
    up = F.interpolate(codes, size=(side, side), mode="bicubic")  # identity at the finest scale
    return ref_phi(model, cfg.phi_index[si], up)


def ref_tokenize(model: MultiScaleVQVAE, f: torch.Tensor) -> list[torch.Tensor]:
    """Greedy residual quantisation: nearest code (brute-force L2) to the area-downsampled residual."""
    rest, tokens = f.clone(), []
    for si, pn in enumerate(model.config.patch_nums):
        z = F.interpolate(rest, size=(pn, pn), mode="area").permute(0, 2, 3, 1).reshape(f.shape[0], pn * pn, 1, -1)
        idx = (z - model.codebook).square().sum(-1).argmin(-1)  # (B, pn*pn)
        tokens.append(idx)
        rest = rest - ref_contribution(model, si, idx)
    return tokens


def random_latent(seed: int = 1, batch: int = 2) -> torch.Tensor:
    side = TINY.latent_size
    return torch.randn(batch, TINY.code_dim, side, side, generator=torch.Generator().manual_seed(seed))


def test_tiny_geometry():
    model = tiny_model()
    assert TINY.downsample == 4 and TINY.image_size == 32 and TINY.latent_size == 8
    f = model.encode(torch.rand(2, 1, 32, 32) * 2 - 1)
    assert f.shape == (2, TINY.code_dim, 8, 8)
    tokens = model.tokenize(f)
    assert [t.shape for t in tokens] == [(2, pn * pn) for pn in TINY.patch_nums]
    assert all(t.dtype == torch.int64 for t in tokens)


def test_tokenize_is_greedy_residual_quantisation():
    model, f = tiny_model(), random_latent()
    before = f.clone()
    tokens = model.tokenize(f)
    expected = ref_tokenize(model, f)
    assert torch.equal(f, before)
    for got, want in zip(tokens, expected):
        assert torch.equal(got, want)
    assert len(torch.cat(tokens, 1).unique()) > 20  # non-degenerate: many different codes chosen


def test_tokens_to_fhat_sums_phi_of_upsampled_code_maps():
    model, f = tiny_model(), random_latent()
    tokens = model.tokenize(f)
    expected = sum(ref_contribution(model, si, t) for si, t in enumerate(tokens))
    torch.testing.assert_close(model.tokens_to_fhat(tokens), expected, rtol=0, atol=1e-5)


def test_exactly_representable_latent_is_reconstructed():
    """f = per-image constant c + a checkerboard-signed pattern g that is constant on 2x2 blocks.

    With identity phi and scales (1, 2, 4, 8): scale 0 sees mean(f) = c and picks it; the residual g has zero
    area averages at 2x2 and 4x4, so those scales pick the zero code; the finest scale sees g, whose vectors
    are in the codebook. So f_hat = f only if each scale quantises what the previous ones left over.
    """
    config = dataclasses.replace(TINY, patch_nums=(1, 2, 4, 8))
    model = tiny_model(config=config)
    D = config.code_dim
    for phi in model.quantize.quant_resi.qresi_ls:  # phi(h) = 0.5 h + 0.5 conv(h) = h
        phi.weight.zero_()
        phi.weight[:, :, 1, 1] = torch.eye(D)
        phi.bias.zero_()
    gen = torch.Generator().manual_seed(2)
    c = 3.0 + torch.randn(2, D, generator=gen)  # (B, D)
    u = torch.randn(2, D, 4, 4, generator=gen).repeat_interleave(2, 2).repeat_interleave(2, 3)  # (B, D, 8, 8)
    sign = 1 - 2 * ((torch.arange(8)[:, None] + torch.arange(8)) % 2)  # (8, 8) checkerboard
    g = u * sign
    f = c[:, :, None, None] + g
    pattern = g.permute(0, 2, 3, 1).reshape(-1, D).unique(dim=0)  # 2 images x 16 blocks x 2 signs
    assert len(pattern) == 64
    codebook = torch.cat([torch.zeros(1, D), c, pattern])
    model.codebook[: len(codebook)] = codebook
    model.codebook[len(codebook):] = 10 + torch.randn(config.vocab_size - len(codebook), D, generator=gen)

    tokens = model.tokenize(f)
    assert tokens[0].flatten().tolist() == [1, 2]  # c of each image
    assert torch.all(tokens[1] == 0) and torch.all(tokens[2] == 0)
    coarse = model.tokens_to_fhat([tokens[0], tokens[1], tokens[2], torch.zeros_like(tokens[3])])
    assert (coarse - f).square().mean() > 0.5  # the coarse scales alone leave g
    torch.testing.assert_close(model.tokens_to_fhat(tokens), f, rtol=0, atol=1e-5)


def test_next_scale_inputs_are_area_downsampled_partial_fhat():
    model, f = tiny_model(), random_latent()
    tokens = model.tokenize(f)
    partial, expected = 0, []
    for si in range(TINY.num_scales - 1):
        partial = partial + ref_contribution(model, si, tokens[si])
        pn = TINY.patch_nums[si + 1]
        expected.append(F.interpolate(partial, size=(pn, pn), mode="area").flatten(2).transpose(1, 2))
    got = model.next_scale_inputs(tokens)
    assert got.shape == (2, TINY.num_tokens - 1, TINY.code_dim)
    torch.testing.assert_close(got, torch.cat(expected, 1), rtol=0, atol=1e-5)
    # The last scale's tokens are never read.
    torch.testing.assert_close(model.next_scale_inputs(tokens[:-1] + [tokens[-1].flip(1)]), got, rtol=0, atol=0)


def test_fhat_step_reproduces_teacher_forcing_and_fhat():
    model, f = tiny_model(), random_latent()
    tokens = model.tokenize(f)
    f_hat, inputs = None, []
    for si, t in enumerate(tokens):
        f_hat, nxt = model.fhat_step(si, f_hat, t)
        assert f_hat.shape == f.shape
        if si < TINY.num_scales - 1:
            assert nxt.shape == (2, TINY.patch_nums[si + 1] ** 2, TINY.code_dim)
            inputs.append(nxt)
        else:
            assert nxt is None
    torch.testing.assert_close(f_hat, model.tokens_to_fhat(tokens), rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.cat(inputs, 1), model.next_scale_inputs(tokens), rtol=0, atol=1e-6)


def test_decode_fhat_shape_and_clamped_range():
    model, f = tiny_model(), random_latent()
    model.decoder.conv_out.weight.mul_(50)  # push the raw output well outside [-1, 1]
    f_hat = model.tokens_to_fhat(model.tokenize(f))
    raw = model.decoder(model.post_quant_conv(f_hat))
    images = model.decode_fhat(f_hat)
    assert images.shape == (2, 1, 32, 32)
    assert raw.abs().max() > 1
    assert images.min() >= -1 and images.max() <= 1
    assert torch.equal(images, raw.clamp(-1, 1))
