"""Samplers: per-sample randomness, the recipe, and the teacher's cached loop."""
import functools

import pytest
import torch

from dd.config import RecipeConfig
from dd.flow import flow_map
from dd.raster.sampling import complete_skip, sample_skip, sample_teacher
from dd.raster.student import DDStudent, sample_dd, student_inputs
from dd.raster.teacher import apply_recipe
from dd.sampling import TokenMarginals, run_sampler, sample_onestep
from dd.seeding import balanced_labels, inverse_cdf, per_sample_noise, token_uniforms
from tests.helpers import MICRO, CountingStudent, micro_codebook, micro_teacher

RECIPE = RecipeConfig(cfg_scale=1.5, top_k=8, top_p=0.9)


def test_noise_depends_only_on_seed_and_index():
    assert torch.equal(per_sample_noise(3, [5, 6], 4, 2)[1], per_sample_noise(3, [6], 4, 2)[0])
    assert not torch.equal(per_sample_noise(3, [5], 4, 2), per_sample_noise(4, [5], 4, 2))


def test_teacher_samples_do_not_depend_on_batch_size():
    sampler = functools.partial(sample_teacher, micro_teacher(), RECIPE)
    args = (7, MICRO.num_image_tokens, 4, MICRO.num_classes)
    small, _ = run_sampler(sampler, range(10), *args, batch_size=3, progress=False)
    large, _ = run_sampler(sampler, range(10), *args, batch_size=10, progress=False)
    assert torch.equal(small, large)


def test_cached_sampling_equals_uncached_teacher_forcing():
    """Tokens from the KV-cached loop have, at every position, the law of the full (uncached) forward."""
    teacher = micro_teacher()
    recipe = RecipeConfig(cfg_scale=1.0)
    labels = balanced_labels(range(6), MICRO.num_classes)
    noise = per_sample_noise(0, range(6), MICRO.num_image_tokens, 1)
    tokens = sample_teacher(teacher, recipe, labels, noise)
    probs = apply_recipe(teacher(labels, tokens).flatten(0, 1), recipe).reshape(6, MICRO.num_image_tokens, -1)
    assert torch.equal(inverse_cdf(probs, torch.special.ndtr(noise[..., 0])), tokens)


@pytest.mark.parametrize("given_count", [1, 5, MICRO.num_image_tokens - 1])
def test_a_teacher_given_its_first_tokens_continues_from_them(given_count):
    """Hybrid sampling's teacher: given tokens fill the cache in one pass (a prefill), and the loop then draws the
    rest with the law of the uncached forward given those tokens; given its own first tokens, it makes its own
    samples."""
    teacher = micro_teacher()
    labels = balanced_labels(range(6), MICRO.num_classes)
    noise = per_sample_noise(0, range(6), MICRO.num_image_tokens, 1)
    full = sample_teacher(teacher, RECIPE, labels, noise)
    assert torch.equal(sample_teacher(teacher, RECIPE, labels, noise, given=full[:, :given_count]), full)

    recipe = RecipeConfig(cfg_scale=1.0)
    given = torch.randint(MICRO.vocab_size, (6, given_count), generator=torch.Generator().manual_seed(1))
    stop = min(given_count + 3, MICRO.num_image_tokens)
    tokens = sample_teacher(teacher, recipe, labels, noise, num_tokens=stop, given=given)
    assert tokens.shape == (6, stop) and torch.equal(tokens[:, :given_count], given)
    probs = apply_recipe(teacher(labels, tokens).flatten(0, 1), recipe).reshape(6, stop, -1)
    assert torch.equal(inverse_cdf(probs, torch.special.ndtr(noise[:, :stop, 0]))[:, given_count:],
                       tokens[:, given_count:])


@pytest.mark.parametrize("teacher_steps", [3, 8])
def test_hybrid_sampling_puts_the_teachers_tokens_between_the_two_student_steps(teacher_steps):
    """pre-trained-n-m (method.md section 6) with m = 8: the first step's first n = 8 - teacher_steps tokens, the
    teacher's own continuation of them up to m, then the student's second step at t = m on those (plain 2 steps:
    the first step's first m tokens)."""
    teacher, codebook = micro_teacher(), micro_codebook()
    student = CountingStudent(DDStudent.from_teacher(teacher, codebook))
    labels = balanced_labels(range(4), MICRO.num_classes)
    noise = per_sample_noise(2, range(4), MICRO.num_image_tokens, codebook.shape[1])
    continuation = lambda labels, noise, stop, given: sample_teacher(teacher, RECIPE, labels, noise, stop, given)
    tokens = sample_dd(student, codebook, 2, 8, labels, noise, teacher=continuation, teacher_steps=teacher_steps)

    kept = 8 - teacher_steps
    one = sample_dd(student.student, codebook, 1, 8, labels, noise)
    plain = student.student.predict(labels, student_inputs(one, noise, codebook, 8), 8)    # 2 steps, no teacher
    assert torch.equal(sample_dd(student.student, codebook, 2, 8, labels, noise),
                       torch.cat([one[:, :8], plain[:, 8:]], dim=1))
    made = sample_teacher(teacher, RECIPE, labels, noise, 8, one[:, :kept] if kept else None)
    second = student.student.predict(labels, student_inputs(torch.cat([made, one[:, 8:]], dim=1), noise, codebook, 8), 8)
    assert torch.equal(tokens, torch.cat([made, second[:, 8:]], dim=1))
    assert student.timesteps == ([0, 8] if kept else [8])
    with pytest.raises(ValueError, match="hybrid sampling needs"):
        sample_dd(student, codebook, 2, 8, labels, noise, teacher=continuation, teacher_steps=9)


def test_recipe_top_k_top_p_and_cfg():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.count_nonzero(apply_recipe(logits, RecipeConfig(cfg_scale=1.0, top_k=2))) == 2
    # top_p 0.75: 0.5 + 0.3 reach it, so the two least likely tokens go
    assert apply_recipe(logits, RecipeConfig(cfg_scale=1.0, top_p=0.75))[0, 2:].sum() == 0
    conditional, unconditional = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    guided = apply_recipe(torch.cat([conditional, unconditional]), RecipeConfig(cfg_scale=3.0))
    assert torch.allclose(guided, torch.tensor([[4.0, 0.0]]).softmax(-1))


@pytest.mark.parametrize("cfg_scale", [0.0, 0.5, 1.0])
def test_a_raster_teacher_is_unguided_at_or_below_cfg_1_as_llamagen(cfg_scale):
    """LlamaGen's sampler guides only for cfg_scale > 1: at or below it, the conditional rows alone (B rows, not
    2B) and the conditional law, with no interpolation towards the unconditional model."""
    conditional = torch.tensor([[2.0, 0.0, -1.0]])
    assert torch.allclose(apply_recipe(conditional, RecipeConfig(cfg_scale=cfg_scale)), conditional.softmax(-1))
    teacher, labels = micro_teacher(), torch.arange(4) % MICRO.num_classes
    noise = per_sample_noise(0, range(4), MICRO.num_image_tokens, 4)
    assert torch.equal(sample_teacher(teacher, RecipeConfig(cfg_scale=cfg_scale), labels, noise),
                       sample_teacher(teacher, RecipeConfig(cfg_scale=1.0), labels, noise))


def test_top_k_keeps_exactly_k_codes_at_a_tie_and_the_flow_map_solves_over_that_support():
    """Four codes tie at the k-th largest logit: exactly k = 3 stay (the published rule `logits < k-th` would keep
    six), so the flow map's solve over its top-k candidates equals its solve over the whole codebook."""
    logits = torch.tensor([[3.0, 1.0, 1.0, 1.0, 1.0, 0.0, -1.0, -2.0]]).repeat(500, 1)
    probs = apply_recipe(logits, RecipeConfig(cfg_scale=1.0, top_k=3))
    assert (torch.count_nonzero(probs, dim=-1) == 3).all()
    codebook = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(500, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(flow_map(eps, probs, codebook, support_size=3), flow_map(eps, probs, codebook))


def test_inverse_cdf_draws_the_distribution():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3])
    uniforms = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(inverse_cdf(probs.expand(20000, 4), uniforms), minlength=4) / 20000
    assert counts[1] == 0 and torch.allclose(counts, probs, atol=0.015)


def test_onestep_and_skip_use_the_marginals():
    teacher = micro_teacher()
    labels = balanced_labels(range(300), MICRO.num_classes)
    noise = per_sample_noise(0, range(300), MICRO.num_image_tokens, 1)
    teacher_tokens = sample_teacher(teacher, RECIPE, labels, noise)
    marginals = TokenMarginals.from_samples(teacher_tokens, labels, MICRO.num_classes, MICRO.vocab_size)
    onestep_noise = per_sample_noise(1, range(300), MICRO.num_image_tokens, 1)
    onestep = sample_onestep(marginals, labels, onestep_noise)
    # The same draws as an inverse CDF on the dense (K, L, V) frequency table.
    table = torch.zeros(MICRO.num_classes, MICRO.num_image_tokens, MICRO.vocab_size, dtype=torch.float64)
    table.index_put_((labels[:, None], torch.arange(MICRO.num_image_tokens), teacher_tokens), torch.tensor(1.0, dtype=torch.float64), accumulate=True)
    assert torch.equal(onestep, inverse_cdf(table[labels], token_uniforms(onestep_noise).double()))
    skip = sample_skip(teacher, RECIPE, marginals, 6, labels, noise)
    assert torch.equal(skip[:, :10], teacher_tokens[:, :10])               # the teacher's prefix, same noise
    # The sample stage derives skip from the teacher's samples instead of running the teacher again.
    assert torch.equal(complete_skip(marginals, 6, teacher_tokens, labels, noise), skip)


@pytest.mark.parametrize("count", [1, 5])
def test_balanced_labels(count):
    assert balanced_labels(range(count * 3), 3).bincount().tolist() == [count] * 3


def test_uniform_labels_are_per_sample_uniform_and_apart_from_the_noise():
    from dd.seeding import class_labels, uniform_labels
    labels = uniform_labels(2, range(20_000), 10)
    assert torch.equal(labels[5000:5100], uniform_labels(2, range(5000, 5100), 10))      # batch-independent
    counts = torch.bincount(labels, minlength=10).float()
    assert (counts - 2000).abs().max() < 5 * 2000**0.5                                   # ~uniform (5 sigma)
    assert not torch.equal(labels[:50], balanced_labels(range(50), 10))
    assert torch.equal(class_labels("balanced", 2, range(50), 10), balanced_labels(range(50), 10))
    # The label stream is not the noise stream: noise of sample i does not predict its label.
    noise = per_sample_noise(2, range(20_000), 1, 1)[:, 0, 0]
    assert abs(torch.corrcoef(torch.stack([noise, labels.float()]))[0, 1]) < 0.05


def test_onestep_laws_match_the_samples_per_class_and_a_class_without_samples_uses_all():
    tokens = torch.tensor([[3, 1], [3, 2], [0, 2], [5, 5]])          # classes 0, 0, 1, 1; class 2 has none
    marginals = TokenMarginals.from_samples(tokens, torch.tensor([0, 0, 1, 1]), num_classes=3, vocab_size=8)
    uniforms = torch.rand(40_000, 2, generator=torch.Generator().manual_seed(0))
    for label, expected in [(0, {(0, 3): 1.0, (1, 1): 0.5, (1, 2): 0.5}),
                            (2, {(0, 3): 0.5, (0, 0): 0.25, (0, 5): 0.25, (1, 2): 0.5})]:
        drawn = marginals.draw(torch.full((40_000,), label), uniforms)
        for (position, token), share in expected.items():
            assert abs((drawn[:, position] == token).double().mean() - share) < 0.01
