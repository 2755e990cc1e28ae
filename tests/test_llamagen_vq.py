"""LlamaGen's VQ-16 tokenizer: published checkpoint layout (on the meta device), strict round trip of our
checkpoint format, and the cosine nearest-code search checked against a brute force written here."""
import torch
import torch.nn.functional as F
from einops import rearrange

from dd.checkpoint import load_state_dict
from dd.models.llamagen_vq import PRESETS, VQModel

PUBLISHED = PRESETS["vq-16"]
TINY = PRESETS["vq-tiny"]


def tiny_model(seed: int = 0) -> VQModel:
    torch.manual_seed(seed)
    return VQModel(TINY).eval().requires_grad_(False)


# ---- published checkpoint ------------------------------------------------------------------------------


def published_layout() -> dict[str, tuple[int, ...]]:
    """Every key of vq_ds16_c2i.pt's "model" dict with its shape, spelled out from the reference's module tree
    (tokenizer/tokenizer_image/vq_model.py)."""
    ch, mult, Z, V, d = 128, (1, 1, 2, 2, 4), 256, 16384, 8
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
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", c, c, 1)

    def mid(name, c):
        resnet(f"{name}.0", c, c)
        attn(f"{name}.1", c)
        resnet(f"{name}.2", c, c)

    conv("encoder.conv_in", 3, ch, 3)
    c = ch
    for i, m in enumerate(mult):
        for j in range(2):
            resnet(f"encoder.conv_blocks.{i}.res.{j}", c, ch * m)
            c = ch * m
            if i == 4:
                attn(f"encoder.conv_blocks.{i}.attn.{j}", c)
        if i != 4:
            conv(f"encoder.conv_blocks.{i}.downsample.conv", c, c, 3)
    mid("encoder.mid", c)
    norm("encoder.norm_out", c)
    conv("encoder.conv_out", c, Z, 3)

    conv("decoder.conv_in", Z, c, 3)
    mid("decoder.mid", c)
    for k, i in enumerate(reversed(range(5))):  # conv_blocks.0 is the coarsest level
        for j in range(3):
            resnet(f"decoder.conv_blocks.{k}.res.{j}", c, ch * mult[i])
            c = ch * mult[i]
            if i == 4:
                attn(f"decoder.conv_blocks.{k}.attn.{j}", c)
        if i != 0:
            conv(f"decoder.conv_blocks.{k}.upsample.conv", c, c, 3)
    norm("decoder.norm_out", c)
    conv("decoder.conv_out", c, 3, 3)

    out["quantize.embedding.weight"] = (V, d)
    out["quantize.codebook_used"] = (65536,)
    conv("quant_conv", Z, d, 1)
    conv("post_quant_conv", d, Z, 1)
    return out


def test_published_parameter_count():
    with torch.device("meta"):
        model = VQModel(PUBLISHED)
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 2) == 71.88
    assert PUBLISHED.downsample == 16


def test_published_state_dict_layout():
    with torch.device("meta"):
        model = VQModel(PUBLISHED)
    state = model.state_dict()
    assert len(state) == 344
    assert tuple(state["quantize.embedding.weight"].shape) == (16384, 8)
    assert tuple(state["quant_conv.weight"].shape) == (8, 256, 1, 1)
    assert tuple(state["post_quant_conv.weight"].shape) == (256, 8, 1, 1)
    assert tuple(state["encoder.conv_in.weight"].shape) == (128, 3, 3, 3)
    assert tuple(state["encoder.conv_out.weight"].shape) == (256, 512, 3, 3)
    assert tuple(state["decoder.conv_in.weight"].shape) == (512, 256, 3, 3)
    assert tuple(state["decoder.conv_out.weight"].shape) == (3, 128, 3, 3)
    assert state["quantize.codebook_used"].dtype == torch.float32
    expected = published_layout()
    assert len(expected) == 344
    assert {k: tuple(v.shape) for k, v in state.items()} == expected


def test_random_checkpoint_round_trips_strictly(tmp_path):
    source = tiny_model(seed=1)
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=gen) for k, v in source.state_dict().items()}
    torch.save({"model": state}, tmp_path / "vq.pt")  # the published file's wrapping
    target = tiny_model(seed=2)
    target.load_state_dict(load_state_dict(tmp_path / "vq.pt"), strict=True)
    loaded = target.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


# ---- quantiser and round trip --------------------------------------------------------------------------


def test_quantize_picks_nearest_normalised_code():
    model = tiny_model()
    gen = torch.Generator().manual_seed(3)
    V, d = TINY.codebook_size, TINY.codebook_embed_dim
    # Rows of very different lengths: plain L2 on the raw rows would pick other codes than the cosine search.
    raw = torch.randn(V, d, generator=gen) * torch.logspace(-2, 2, V)[:, None]
    model.quantize.embedding.weight.copy_(raw)
    z = torch.randn(2, d, 3, 5, generator=gen) * 7.0  # latents far from unit norm

    quantised, tokens = model.quantize(z)

    assert tokens.shape == (2, 3, 5) and tokens.dtype == torch.int64
    codes = model.codebook_vectors()
    assert torch.allclose(codes.norm(dim=1), torch.ones(V), atol=1e-6)
    # Brute force, one latent vector at a time.
    vectors = rearrange(z, "b d h w -> (b h w) d")
    expected = torch.stack([((v / v.norm() - raw / raw.norm(dim=1, keepdim=True)) ** 2).sum(1).argmin()
                            for v in vectors])
    assert torch.equal(rearrange(tokens, "b h w -> (b h w)"), expected)
    raw_nearest = torch.cdist(vectors, raw).argmin(1)
    assert not torch.equal(raw_nearest, expected)  # the case tells the two searches apart
    assert torch.equal(quantised, rearrange(codes[expected], "(b h w) d -> b d h w", b=2, h=3))


def test_attention_matches_reference_formula():
    # The reference's bmm form: w = softmax(q^T k / sqrt(C)) over keys, out[c, j] = sum_i v[c, i] w[j, i].
    block = tiny_model().encoder.mid[1]
    torch.manual_seed(4)
    x = torch.randn(2, block.q.in_channels, 3, 4)
    h = block.norm(x)
    q, k, v = (rearrange(conv(h), "b c h w -> b c (h w)") for conv in (block.q, block.k, block.v))
    w = torch.softmax(torch.bmm(q.transpose(1, 2), k) * q.shape[1] ** -0.5, dim=2)  # (B, query, key)
    expected = x + block.proj_out(rearrange(torch.bmm(v, w.transpose(1, 2)), "b c (h w) -> b c h w", h=3))
    assert torch.allclose(block(x), expected, atol=1e-5)


def test_encode_decode_shapes_and_token_path_matches_latent_path():
    model = tiny_model()
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        tokens = model.encode(x)
        images = model.decode_tokens(tokens)
        direct = model.decode(model.quantize(model.encode_latents(x))[0])
    assert TINY.downsample == 16
    assert tokens.shape == (2, 2, 3) and tokens.dtype == torch.int64
    assert int(tokens.min()) >= 0 and int(tokens.max()) < TINY.codebook_size
    assert images.shape == (2, 3, 16 * 2, 16 * 3)
    assert torch.isfinite(images).all()
    assert torch.equal(images, direct)
