import pytest
import torch
import torch.nn.functional as F

from dd.models.attention import attention, visibility_bias


def _qkv(seed: int, queries: int = 7, keys: int = 7):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, n, 16, generator=generator, dtype=torch.float64, requires_grad=True)
            for n in (queries, keys, keys)]


@pytest.mark.parametrize("kind", ["plain", "causal", "bias", "scale"])
def test_cpu_attention_matches_torch_sdpa_values_and_gradients(kind):
    q, k, v = _qkv(0)
    visible = torch.rand(7, 7, generator=torch.Generator().manual_seed(1)) > 0.3
    visible |= torch.eye(7, dtype=torch.bool)      # every query sees at least itself
    bias = visibility_bias(visible, torch.float64)
    kwargs = {"plain": {}, "causal": {"causal": True}, "bias": {"bias": bias}, "scale": {"scale": 1.0}}[kind]
    # SDPA's boolean attn_mask has visibility_bias's convention: True where the query sees the key.
    reference_kwargs = {"causal": {"is_causal": True}, "bias": {"attn_mask": visible}}.get(kind, kwargs)

    ours = attention(q, k, v, **kwargs)
    reference = F.scaled_dot_product_attention(q, k, v, **reference_kwargs)
    torch.testing.assert_close(ours, reference)
    grads = torch.autograd.grad(ours.square().sum(), (q, k, v))
    reference_grads = torch.autograd.grad(reference.square().sum(), (q, k, v))
    for grad, reference_grad in zip(grads, reference_grads):
        torch.testing.assert_close(grad, reference_grad)


def test_causal_query_ignores_later_keys():
    q, k, v = _qkv(2)
    out = attention(q, k, v, causal=True)
    changed = v.detach().clone()
    changed[:, :, 4:] += 10.0
    torch.testing.assert_close(attention(q, k, changed, causal=True)[:, :, :4], out[:, :, :4])
    assert not torch.allclose(attention(q, k, changed, causal=True)[:, :, 4:], out[:, :, 4:])


def test_fewer_queries_than_keys_with_a_cache():
    q, k, v = _qkv(3, queries=2, keys=9)
    torch.testing.assert_close(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
