import dataclasses
import math

import pytest
import torch

from dd.models.llamagen import GPT, PRESETS, KVCache


def build_tiny(seed: int = 0) -> GPT:
    """Tiny model with every weight random (the reference init zeroes the output head, which would hide bugs)."""
    torch.manual_seed(seed)
    return GPT(PRESETS["llamagen-tiny"], head_std=0.02).eval()


def test_the_reference_init_zeroes_the_head_and_random_weight_runs_spread_it():
    torch.manual_seed(0)
    assert torch.all(GPT(PRESETS["llamagen-tiny"]).output.weight == 0)   # a fresh model predicts the uniform law
    model = GPT(PRESETS["llamagen-tiny"], head_std=0.02)
    assert abs(model.output.weight.std().item() - 0.02) < 0.002
    assert abs(model.tok_embeddings.weight.std().item() - 0.02) < 0.002


@pytest.mark.parametrize("name, millions", [("llamagen-b", 110.89), ("llamagen-l", 342.91), ("llamagen-xl", 774.70)])
def test_parameter_counts_match_paper(name, millions):
    with torch.device("meta"):
        model = GPT(PRESETS[name])
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 2) == millions


def test_state_dict_matches_published_checkpoint_layout():
    with torch.device("meta"):
        model = GPT(PRESETS["llamagen-b"])
    expected = {
        "cls_embedding.embedding_table.weight": (1001, 768),
        "tok_embeddings.weight": (16384, 768),
        "norm.weight": (768,),
        "output.weight": (16384, 768),
    }
    for i in range(12):
        expected |= {
            f"layers.{i}.attention.wqkv.weight": (2304, 768),
            f"layers.{i}.attention.wo.weight": (768, 768),
            f"layers.{i}.feed_forward.w1.weight": (2048, 768),
            f"layers.{i}.feed_forward.w3.weight": (2048, 768),
            f"layers.{i}.feed_forward.w2.weight": (768, 2048),
            f"layers.{i}.attention_norm.weight": (768,),
            f"layers.{i}.ffn_norm.weight": (768,),
        }
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(expected) == 88
    assert got == expected  # in particular: no RoPE buffer among the keys


def test_rope_layout_rows_then_columns_and_class_rows():
    published_layout = dataclasses.replace(PRESETS["llamagen-tiny"], zero_class_rope=True)
    rope = GPT(published_layout).rope  # (L, D/2, 2); head_dim 32 -> 8 row pairs then 8 column pairs
    assert rope.shape == (1 + 64, 16, 2)
    assert torch.all(rope[0] == 0)  # class token: q and k zeroed, as in the reference
    assert all(PRESETS[name].zero_class_rope for name in ("llamagen-b", "llamagen-l", "llamagen-xl"))
    # The tiny preset keeps the class token's key (identity rotation); the image rows are the same.
    tiny_rope = GPT(PRESETS["llamagen-tiny"]).rope
    assert torch.all(tiny_rope[0, :, 0] == 1) and torch.all(tiny_rope[0, :, 1] == 0)
    assert torch.equal(tiny_rope[1:], rope[1:])
    row, col = 1, 2
    r = rope[1 + row * 8 + col]  # raster order
    # Pair 0 and pair D/4 use frequency 1: angle = row for the first half, = col for the second half.
    torch.testing.assert_close(r[0], torch.tensor([math.cos(row), math.sin(row)]))
    torch.testing.assert_close(r[8], torch.tensor([math.cos(col), math.sin(col)]))
    # Pair 1 uses frequency 10000^(-4/32).
    f1 = 10000.0 ** (-4 / 32)
    torch.testing.assert_close(r[1], torch.tensor([math.cos(row * f1), math.sin(row * f1)]))


def test_rope_stays_float32_when_weights_are_cast():
    model = GPT(PRESETS["llamagen-tiny"])
    before = model.rope.clone()
    model = model.to(torch.bfloat16)
    assert model.output.weight.dtype == torch.bfloat16
    assert model.rope.dtype == torch.float32
    assert torch.equal(model.rope, before)


def test_cached_steps_reproduce_parallel_backbone_and_forward():
    model = build_tiny()
    cfg = model.config
    B = 3
    labels = torch.tensor([0, 4, cfg.num_classes])  # includes the null class
    tokens = torch.randint(cfg.vocab_size, (B, cfg.num_image_tokens))
    with torch.no_grad():
        h = torch.cat([model.embed_class(labels), model.embed_tokens(tokens[:, :-1])], dim=1)  # (B, L-1, C)
        parallel = model.backbone(h)

        cache = KVCache.allocate(cfg, B, torch.float32, "cpu")
        stepped = torch.cat([model.backbone_step(h[:, s : s + 1], torch.tensor(s), cache) for s in range(h.shape[1])], 1)
        torch.testing.assert_close(stepped, parallel, atol=1e-5, rtol=1e-5)

        logits = model(labels, tokens)
        assert logits.shape == (B, cfg.num_image_tokens, cfg.vocab_size) and logits.dtype == torch.float32
        torch.testing.assert_close(logits, model.logits(stepped), atol=1e-5, rtol=1e-5)

        # The student's input: class token plus all image tokens fills the whole sequence.
        full = torch.cat([model.embed_class(labels), model.embed_tokens(tokens)], dim=1)
        assert model.backbone(full).shape == (B, cfg.max_seq_len, cfg.dim)


def test_backbone_window_uses_absolute_2d_positions():
    model = build_tiny()
    g = model.config.grid_size
    h = torch.randn(2, 4, model.config.dim)
    with torch.no_grad():
        row0 = model.backbone(h, start=1)  # image tokens (0,0)..(0,3)
        row1 = model.backbone(h, start=1 + g)  # image tokens (1,0)..(1,3): same relative offsets
        shifted = model.backbone(h, start=0)  # class position first: different rotations
    torch.testing.assert_close(row1, row0, atol=1e-5, rtol=1e-5)  # RoPE scores depend only on 2-D offsets
    assert not torch.allclose(shifted, row0, atol=1e-3)


def test_logits_are_causal():
    model = build_tiny()
    cfg = model.config
    labels = torch.tensor([1, 2])
    tokens = torch.randint(cfg.vocab_size, (2, cfg.num_image_tokens))
    j = 20
    changed = tokens.clone()
    changed[:, j] = (changed[:, j] + 1) % cfg.vocab_size
    with torch.no_grad():
        a, b = model(labels, tokens), model(labels, changed)
    torch.testing.assert_close(a[:, : j + 1], b[:, : j + 1], atol=0, rtol=0)  # predictions of tokens <= j
    assert not torch.allclose(a[:, j + 1], b[:, j + 1])  # the next prediction does see token j
