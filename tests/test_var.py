import io
import math

import pytest
import torch

from dd.models.var import PRESETS, VAR, VARKVCache, cfg_ramp

TINY = PRESETS["var-tiny"]


def build_tiny(seed: int = 0) -> VAR:
    """Tiny model with every weight random and O(1) effects: the reference init starts each block near the
    identity (AdaLN gammas ~1e-5) and the head near zero, which would hide masking and caching bugs."""
    torch.manual_seed(seed)
    model = VAR(TINY).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "scale_mul" not in name:
                p.normal_(std=0.2)
    return model


def random_inputs(batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, TINY.num_classes + 1, (batch,), generator=g)  # null class included
    inputs = torch.randn(batch, TINY.num_tokens - TINY.first_len, TINY.code_dim, generator=g)
    return labels, inputs


@pytest.mark.parametrize(
    "name, millions", [("var-d16", 310.28), ("var-d20", 600.92), ("var-d24", 1033.40), ("var-d30", 2010.02)]
)
def test_parameter_counts_match_paper(name, millions):
    with torch.device("meta"):
        model = VAR(PRESETS[name])
    n = sum(p.numel() for p in model.parameters())  # upstream train.py counts nn.Parameters, not buffers
    assert round(n / 1e6, 2) == millions


def published_d16_shapes() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of var_d16.pth (VAR-d16: C=1024, 16 heads, 680 tokens, V=4096, Cvae=32)."""
    shapes = {
        "pos_start": (1, 1, 1024),
        "pos_1LC": (1, 680, 1024),
        "lvl_1L": (1, 680),
        "attn_bias_for_masking": (1, 1, 680, 680),
        "word_embed.weight": (1024, 32),
        "word_embed.bias": (1024,),
        "class_emb.weight": (1001, 1024),
        "lvl_embed.weight": (10, 1024),
        "head_nm.ada_lin.1.weight": (2048, 1024),
        "head_nm.ada_lin.1.bias": (2048,),
        "head.weight": (4096, 1024),
        "head.bias": (4096,),
    }
    for i in range(16):
        shapes |= {
            f"blocks.{i}.attn.scale_mul_1H11": (1, 16, 1, 1),
            f"blocks.{i}.attn.q_bias": (1024,),
            f"blocks.{i}.attn.v_bias": (1024,),
            f"blocks.{i}.attn.zero_k_bias": (1024,),
            f"blocks.{i}.attn.mat_qkv.weight": (3072, 1024),
            f"blocks.{i}.attn.proj.weight": (1024, 1024),
            f"blocks.{i}.attn.proj.bias": (1024,),
            f"blocks.{i}.ffn.fc1.weight": (4096, 1024),
            f"blocks.{i}.ffn.fc1.bias": (4096,),
            f"blocks.{i}.ffn.fc2.weight": (1024, 4096),
            f"blocks.{i}.ffn.fc2.bias": (1024,),
            f"blocks.{i}.ada_lin.1.weight": (6144, 1024),
            f"blocks.{i}.ada_lin.1.bias": (6144,),
        }
    return shapes


def test_state_dict_matches_published_checkpoint_layout():
    expected = published_d16_shapes()
    assert len(expected) == 220
    with torch.device("meta"):
        model = VAR(PRESETS["var-d16"])
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected  # the mask and level buffers are persistent, as in the checkpoint


def test_published_format_state_dict_loads_strictly():
    # Random values in the published layout, saved and reloaded the way a downloaded .pth is read. Each tensor
    # is a random row broadcast to its shape (stride 0), so the file stays a few MB instead of 1.2 GB.
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in published_d16_shapes().items():
        if key == "lvl_1L":
            state[key] = torch.zeros(shape, dtype=torch.long)
        else:
            state[key] = torch.randn(shape[-1], generator=g).expand(shape)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    with torch.device("meta"):
        model = VAR(PRESETS["var-d16"])
    result = model.load_state_dict(loaded, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model.head.weight, state["head.weight"])  # the values did arrive


def test_tiny_round_trip_restores_buffers_and_logits():
    model = build_tiny(0)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = VAR(TINY).eval()
    with torch.no_grad():
        fresh.attn_bias_for_masking.zero_()  # must be restored from the file
    fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    labels, inputs = random_inputs(2)
    torch.testing.assert_close(fresh(labels, inputs), model(labels, inputs), rtol=0, atol=0)


def test_mask_buffer_is_block_causal():
    model = VAR(TINY)
    lvl = model.lvl_1L[0]
    assert lvl.tolist() == [k for k, p in enumerate(TINY.patch_nums) for _ in range(p * p)]
    bias = model.attn_bias_for_masking[0, 0]
    assert bias.shape == (130, 130)
    visible = bias == 0
    assert torch.equal(visible, lvl[:, None] >= lvl[None, :])  # query row sees its own and coarser scales
    assert torch.all(bias[~visible] == -math.inf)


@torch.no_grad()
def test_cached_steps_reproduce_teacher_forcing():
    model = build_tiny(0)
    labels, inputs = random_inputs(3)
    full = model(labels, inputs)  # (B, L, V)
    assert full.shape == (3, TINY.num_tokens, TINY.vocab_size)
    assert full.std() > 1.0  # random weights give non-trivial logits
    cache = VARKVCache.allocate(TINY, 3, torch.float32, "cpu")
    for k, (start, stop) in enumerate(TINY.scale_slices):
        scale_input = None if k == 0 else inputs[:, start - TINY.first_len : stop - TINY.first_len]
        logits = model.step(k, labels, scale_input, cache)
        assert logits.shape == (3, stop - start, TINY.vocab_size)
        torch.testing.assert_close(logits, full[:, start:stop], rtol=0, atol=1e-4)


@torch.no_grad()
def test_changing_one_scale_input_affects_only_that_scale_and_finer():
    model = build_tiny(1)
    labels, inputs = random_inputs(2, seed=2)
    base = model(labels, inputs)
    for k in (1, 3, len(TINY.patch_nums) - 1):
        start, stop = TINY.scale_slices[k]
        changed = inputs.clone()
        changed[:, start - TINY.first_len : stop - TINY.first_len] += 1.0
        out = model(labels, changed)
        assert torch.equal(out[:, :start], base[:, :start])  # coarser scales never see scale k's input
        for j in range(stop - start):  # every token of scale k sees the whole scale
            assert not torch.allclose(out[:, start + j], base[:, start + j], atol=1e-3)
        if stop < TINY.num_tokens:
            assert not torch.allclose(out[:, stop:], base[:, stop:], atol=1e-3)


@torch.no_grad()
def test_label_changes_every_scale_and_prefix_forward_matches():
    model = build_tiny(2)
    labels, inputs = random_inputs(2, seed=3)
    base = model(labels, inputs)
    other = model((labels + 1) % (TINY.num_classes + 1), inputs)
    for start, stop in TINY.scale_slices:
        assert not torch.allclose(other[:, start:stop], base[:, start:stop], atol=1e-3)
    # Teacher forcing over the first scales only (inputs ending at a scale boundary) equals the full prefix.
    stop = TINY.scale_slices[3][1]
    prefix = model(labels, inputs[:, : stop - TINY.first_len])
    torch.testing.assert_close(prefix, base[:, :stop], rtol=0, atol=1e-4)
    with pytest.raises(ValueError):
        model(labels, inputs[:, : stop - TINY.first_len - 1])


def test_reference_init():
    torch.manual_seed(0)
    model = VAR(TINY)
    C, std = TINY.dim, (1 / TINY.dim / 3) ** 0.5
    ada = model.blocks[0].ada_lin[1].weight
    assert ada[: 2 * C].abs().max() < 1e-4 * std * 3  # gamma rows: 1e-5 * trunc_normal(std)
    assert ada[2 * C :].std().item() == pytest.approx(0.5 * std, rel=0.05)
    assert model.head.weight.std().item() == pytest.approx(0.02 * std, rel=0.05)
    assert torch.all(model.head.bias == 0)
    H = TINY.n_head
    torch.testing.assert_close(model.blocks[0].attn.scale_mul_1H11, torch.full((1, H, 1, 1), math.log(4.0)))
    assert model.blocks[0].attn.proj.weight.std().item() == pytest.approx(std / math.sqrt(2 * TINY.depth), rel=0.05)
    with torch.no_grad():
        logits = model(*random_inputs(2))
    assert logits.std() < 0.05  # near-uniform predictions at init


def test_cfg_ramp_rises_linearly_from_zero():
    assert cfg_ramp(1.5, 0, 10) == 0.0
    assert cfg_ramp(1.5, 9, 10) == 1.5
    assert cfg_ramp(1.5, 3, 10) == pytest.approx(0.5)
