"""VAR's sampling loop: the KV-cached next-scale loop agrees with an uncached teacher-forcing pass, and the
recipe ramps guidance over scales as VAR's sampler does; DD pairs run the same loop with the flow map."""
import dataclasses

import torch

from dd.config import FlowConfig, RecipeConfig
from dd.flow import flow_map
from dd.models.var import VAR, PRESETS as VAR_PRESETS, cfg_ramp
from dd.models.var_vqvae import MultiScaleVQVAE, PRESETS as VAE_PRESETS
from dd.next_scale.sampling import scale_sequence_map
from dd.next_scale.sampling import SKIP_SCALES, sample_var_scales, sample_var_teacher
from dd.next_scale.teacher import generate_var, guided_probs
from dd.seeding import balanced_labels, inverse_cdf, per_sample_noise, token_uniforms
from tests.test_var import build_tiny

RECIPE = RecipeConfig(cfg_scale=2.0, temperature=1.0, top_k=16, top_p=0.95)


def tiny_pair(seed: int = 0) -> tuple[VAR, MultiScaleVQVAE]:
    torch.manual_seed(seed)
    model = VAR(VAR_PRESETS["var-tiny"]).eval()
    torch.nn.init.normal_(model.head.weight, std=0.5)          # spread the logits so top-k/top-p bite
    return model, MultiScaleVQVAE(VAE_PRESETS["vae-tiny"]).eval()


@torch.inference_mode()
def test_cached_sampling_matches_uncached_teacher_forcing():
    model, vqvae = tiny_pair()
    config, B = model.config, 6
    labels = balanced_labels(range(B), config.num_classes)
    noise = per_sample_noise(3, range(B), config.num_tokens, config.code_dim)
    tokens = sample_var_teacher(model, vqvae, RECIPE, labels, noise)
    assert [t.shape for t in tokens] == [(B, p * p) for p in config.patch_nums]

    # Recompute every scale's distribution without a cache from the sampled tokens and redraw them.
    rows = torch.cat([labels, torch.full_like(labels, config.num_classes)])
    inputs = vqvae.next_scale_inputs(tokens)                                   # (B, L - first, E)
    logits = model(rows, torch.cat([inputs, inputs]))                        # (2B, L, V)
    uniforms = token_uniforms(noise)
    for k, (start, stop) in enumerate(config.scale_slices):
        probs = guided_probs(logits[:, start:stop], RECIPE, k, config.num_scales)
        redrawn = inverse_cdf(probs, uniforms[:, start:stop].flatten()).view(B, -1)
        assert torch.equal(redrawn, tokens[k]), f"scale {k}"


def test_guidance_ramps_from_unguided_to_full_scale():
    V, P = 12, 4
    conditional, unconditional = torch.randn(2, P, V), torch.randn(2, P, V)
    plain = dataclasses.replace(RECIPE, top_k=0, top_p=1.0)
    logits = torch.cat([conditional, unconditional])
    first = guided_probs(logits, plain, 0, 10)
    torch.testing.assert_close(first, conditional.flatten(0, 1).softmax(-1))  # scale 0: no guidance
    last = guided_probs(logits, plain, 9, 10)
    expected = (unconditional + (1 + cfg_ramp(2.0, 9, 10)) * (conditional - unconditional)).flatten(0, 1).softmax(-1)
    torch.testing.assert_close(last, expected)
    assert cfg_ramp(2.0, 9, 10) == 2.0


def test_cfg_zero_is_unguided_and_cfg_one_still_guides():
    # VAR's cfg, not LlamaGen's scale: cfg 1 ramps the last scale to weight 2, cfg 0 reads the conditional rows.
    V, P = 12, 4
    conditional, unconditional = torch.randn(2, P, V), torch.randn(2, P, V)
    plain = dataclasses.replace(RECIPE, top_k=0, top_p=1.0)
    unguided = guided_probs(conditional, dataclasses.replace(plain, cfg_scale=0.0), 9, 10)
    torch.testing.assert_close(unguided, conditional.flatten(0, 1).softmax(-1))
    last = guided_probs(torch.cat([conditional, unconditional]), dataclasses.replace(plain, cfg_scale=1.0), 9, 10)
    torch.testing.assert_close(last, (2 * conditional - unconditional).flatten(0, 1).softmax(-1))


def test_choose_sees_each_scale_once_in_order():
    model, vqvae = tiny_pair()
    seen = []

    def choose(probs, k):
        seen.append((k, probs.shape[0]))
        return probs.argmax(-1)

    generate_var(model, vqvae, torch.tensor([1, 2]), RECIPE, choose)
    assert seen == [(k, 2 * p * p) for k, p in enumerate(model.config.patch_nums)]


@torch.inference_mode()
def test_scale_sequence_map_maps_each_token_by_its_own_noise_and_ignores_the_batch():
    """DD pairs for a next-scale teacher: token i of scale k is the flow map of eps_i under the teacher's
    distribution given the coarser scales, and a pair does not depend on the batch it is computed in."""
    model, vqvae = tiny_pair()
    config, B, flow = model.config, 5, FlowConfig(solver_steps=8)
    labels = balanced_labels(range(B), config.num_classes)
    noise = per_sample_noise(4, range(B), config.num_tokens, config.code_dim)
    tokens = scale_sequence_map(model, vqvae, vqvae.codebook, RECIPE, flow, labels, noise)                       # (B, L)
    assert tokens.shape == (B, config.num_tokens)
    split = torch.cat([scale_sequence_map(model, vqvae, vqvae.codebook, RECIPE, flow, labels[:2], noise[:2]),
                       scale_sequence_map(model, vqvae, vqvae.codebook, RECIPE, flow, labels[2:], noise[2:])])
    assert torch.equal(tokens, split)

    per_scale = [tokens[:, start:stop] for start, stop in config.scale_slices]
    rows = torch.cat([labels, torch.full_like(labels, config.num_classes)])
    inputs = vqvae.next_scale_inputs(per_scale)
    logits = model(rows, torch.cat([inputs, inputs]))                                            # (2B, L, V)
    for k, (start, stop) in enumerate(config.scale_slices):
        probs = guided_probs(logits[:, start:stop], RECIPE, k, config.num_scales)
        expected = flow_map(noise[:, start:stop].flatten(0, 1), probs, vqvae.codebook.float(), 8, flow.t_end,
                            support_size=RECIPE.top_k)
        assert torch.equal(expected.view(B, -1), per_scale[k]), f"scale {k}"
    assert len(set(tokens.flatten().tolist())) > 10                                             # not collapsed


@torch.inference_mode()
def test_a_teacher_stopped_early_makes_the_full_teachers_first_scales():
    # The sample stage builds the skip-k baselines by cutting the teacher's samples short (pipeline/sample.py).
    model, vqvae = tiny_pair()
    config, B = model.config, 4
    labels = balanced_labels(range(B), config.num_classes)
    noise = per_sample_noise(5, range(B), config.num_tokens, config.code_dim)
    full = sample_var_scales(model, vqvae, RECIPE, config.num_scales, labels, noise)
    for k in SKIP_SCALES:
        stopped = sample_var_scales(model, vqvae, RECIPE, config.num_scales - k, labels, noise)
        assert torch.equal(stopped, full[:, :config.scale_slices[config.num_scales - k - 1][1]]), f"skip-{k}"


@torch.inference_mode()
def test_a_teacher_given_its_first_scales_continues_from_them():
    """Hybrid sampling's teacher: the given scales' inputs come from the VQVAE, one pass over them (VAR.prefill)
    writes the cache, and the later scales have the law of the uncached forward given them; given its own first
    scales, it makes its own samples."""
    _, vqvae = tiny_pair()
    model = build_tiny(0)           # every weight random: VAR's own init leaves each block near the identity
    config, B = model.config, 4
    labels = balanced_labels(range(B), config.num_classes)
    noise = per_sample_noise(5, range(B), config.num_tokens, config.code_dim)
    full = sample_var_scales(model, vqvae, RECIPE, config.num_scales, labels, noise)
    for given_scales in (1, 3):
        stop = config.scale_slices[given_scales - 1][1]
        assert torch.equal(sample_var_scales(model, vqvae, RECIPE, config.num_scales, labels, noise, full[:, :stop]),
                           full)

    given = torch.randint(config.vocab_size, (B, config.scale_slices[2][1]), generator=torch.Generator().manual_seed(0))
    tokens = sample_var_teacher(model, vqvae, RECIPE, labels, noise, given=given)
    assert torch.equal(torch.cat(tokens[:3], dim=1), given)
    rows = torch.cat([labels, torch.full_like(labels, config.num_classes)])
    inputs = vqvae.next_scale_inputs(tokens)
    logits = model(rows, torch.cat([inputs, inputs]))                        # (2B, L, V)
    uniforms = token_uniforms(noise)
    for k in range(3, config.num_scales):
        start, stop = config.scale_slices[k]
        probs = guided_probs(logits[:, start:stop], RECIPE, k, config.num_scales)
        assert torch.equal(inverse_cdf(probs, uniforms[:, start:stop].flatten()).view(B, -1), tokens[k]), f"scale {k}"
