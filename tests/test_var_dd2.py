"""DD2's networks for next-scale (VAR) teachers (dd/next_scale/dd2.py) on a random var-tiny teacher and VQVAE,
and dd/dd2.py's stages and sampler run on them."""
import math

import pytest
import torch
from torch import nn

from dd.checkpoint import with_weights
from dd.config import CSDConfig, RecipeConfig, TrainConfig
from dd.dd2 import csd_losses, gts_loss_fn, sample_dd2, snap, train_csd
from dd.families.dd2 import dd2_family
from dd.models.var_vqvae import PRESETS as VAE_PRESETS, MultiScaleVQVAE
from dd.next_scale import dd2 as next_scale_dd2
from dd.next_scale.dd2 import ARDiffusion, Generator, dd2_parts, noise_scale_inputs, recipe_probs, vqvae_codes
from dd.next_scale.sampling import teacher_continuation
from dd.next_scale.teacher import generate_var
from dd.next_scale.tokenizer import MultiScaleTokenizer
from dd.seeding import inverse_cdf
from dd.training import Batch, read_log, train
from tests.test_var import TINY, build_tiny

RECIPE = RecipeConfig(cfg_scale=2.0, temperature=1.0, top_k=5, top_p=1.0)
L, V, D, K = TINY.num_tokens, TINY.vocab_size, TINY.code_dim, TINY.num_scales   # 130 tokens, 256 codes, d 8, 6 scales
RECORD = {"params": "p", "code": {"dd/dd2.py": "1"}}


def tiny_teacher() -> torch.nn.Module:
    """A frozen var-tiny teacher, every weight random (tests/test_var.py build_tiny): top-k and the masks bite."""
    return build_tiny(0).requires_grad_(False)


def tiny_tokenizer() -> MultiScaleTokenizer:
    """A random vae-tiny VQVAE whose codes sit off the origin at rms 0.2 (as a trained one's): its codes and the
    flow's normalised ones then differ by a real shift and factor."""
    torch.manual_seed(0)
    vqvae = MultiScaleVQVAE(VAE_PRESETS["vae-tiny"]).eval()
    with torch.no_grad():
        vqvae.codebook.mul_(0.2).add_(0.1)
    return MultiScaleTokenizer(vqvae)


def trained_head(model: nn.Module) -> nn.Module:
    """A head that is not the zero of a new one, so the features reach its output."""
    torch.manual_seed(1)
    nn.init.normal_(model.head.output.weight, std=0.5)
    nn.init.normal_(model.head.final_adaln[1].weight, std=0.5)
    return model


def random_batch(batch: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(TINY.num_classes, (batch,), generator=g), torch.randint(V, (batch, L), generator=g),
            torch.randn(batch, L, D, generator=g))


@pytest.mark.parametrize("recipe", [RECIPE, RecipeConfig(cfg_scale=0.0, temperature=0.8, top_k=0, top_p=0.9)],
                         ids=["guided-top-k", "unguided-top-p"])
@torch.no_grad()
def test_recipe_probs_are_the_laws_the_teachers_sampler_draws_from(recipe):
    teacher, tokenizer, generator = tiny_teacher(), tiny_tokenizer(), torch.Generator().manual_seed(1)
    labels, seen = torch.tensor([0, 3, 7, 3]), []

    def choose(probs, k):                                      # probs (B*P, V) of scale k, as the sampler has them
        seen.append(probs.view(len(labels), -1, V))
        return inverse_cdf(probs, torch.rand(len(probs), generator=generator))

    tokens = torch.cat(generate_var(teacher, tokenizer.model, labels, recipe, choose), dim=1)      # (B, L)
    forced = recipe_probs(teacher, tokenizer, recipe)(labels, tokens)                              # (B, L, V)
    assert forced.dtype == torch.float32 and forced.shape == (4, L, V)
    assert torch.allclose(forced, torch.cat(seen, dim=1), atol=1e-5)
    if recipe.top_k:
        assert ((forced > 0).sum(-1) == recipe.top_k).all()
    else:
        assert ((forced > 0).sum(-1) < V).any()               # top-p bites somewhere


def test_code_vectors_take_the_path_of_their_tokens():
    """The VQVAE's next-scale inputs from code vectors are bit-identical to those from the token ids, and the
    noise's map to the VQVAE's code space sends the flow's codes to the VQVAE's own."""
    tokenizer = tiny_tokenizer()
    vqvae, (_, tokens, _) = tokenizer.model, random_batch(3)
    per_scale = tokenizer.split(tokens)
    with torch.no_grad():
        assert torch.equal(vqvae.next_scale_inputs([vqvae.codebook[t] for t in per_scale]),
                           vqvae.next_scale_inputs(per_scale))
    assert torch.allclose(vqvae_codes(tokenizer)(tokenizer.codebook), vqvae.codebook, atol=1e-6)
    assert torch.allclose(noise_scale_inputs(tokenizer)(tokenizer.codebook[tokens]),
                          tokenizer.next_scale_inputs(tokens), atol=1e-6)


def test_the_ar_diffusion_model_starts_as_the_teacher_and_leaves_it_untouched():
    teacher, tokenizer = tiny_teacher(), tiny_tokenizer()
    codebook, parts = tokenizer.codebook, dd2_parts(teacher, tokenizer, RECIPE)
    rng = torch.get_rng_state()
    model = parts.diffusion_model(teacher, D, 16, 2, 0)
    assert torch.equal(torch.get_rng_state(), rng)                                 # the head drew from its seed
    again = ARDiffusion.from_teacher(teacher, D, 16, 2, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    labels, tokens, _ = random_batch(2)
    features = parts.features(model, labels, tokens)                               # (B, L, C)
    assert features.shape == (2, L, TINY.dim)
    assert torch.allclose(teacher.head(features), teacher(labels, tokenizer.next_scale_inputs(tokens)), atol=1e-5)
    assert model.head(codebook[tokens], torch.rand(2, L), features).abs().max() == 0

    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trained_head(model)
    batch = Batch(torch.tensor([0, 1]), torch.Generator().manual_seed(0))
    loss = gts_loss_fn(parts, codebook, labels, tokens)(model, batch)
    loss.backward()
    assert loss > 0 and model.var.blocks[0].attn.mat_qkv.weight.grad.abs().sum() > 0
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())


def test_the_generator_reads_only_coarser_scales_noise_and_its_own_and_never_the_batch():
    teacher, tokenizer = tiny_teacher(), tiny_tokenizer()
    parts, codebook = dd2_parts(teacher, tokenizer, RECIPE), tokenizer.codebook
    G = parts.generator(trained_head(parts.diffusion_model(teacher, D, 16, 2, 0)), codebook)
    inputs = noise_scale_inputs(tokenizer)
    labels, _, noise = random_batch(3)
    q = parts.generate(G, labels, noise)                                           # (B, L, d)
    assert q.shape == (3, L, D)
    one_at_a_time = torch.cat([parts.generate(G, labels[i:i + 1], noise[i:i + 1]) for i in range(3)])
    assert torch.allclose(q, one_at_a_time, atol=1e-5)
    assert torch.equal(sample_dd2(lambda *a: parts.generate(G, *a), codebook, labels, noise), snap(q, codebook))

    k = 3
    start, stop = TINY.scale_slices[k]
    features = G.features(labels, inputs(noise))                                   # (B, L, C)
    later = noise.clone()
    later[:, start:] += torch.randn(3, L - start, D)                               # every scale >= k
    assert torch.allclose(G.features(labels, inputs(later))[:, :stop], features[:, :stop], atol=1e-6)
    assert torch.allclose(parts.generate(G, labels, later)[:, :start], q[:, :start], atol=1e-6)

    one = noise.clone()
    one[:, start + 2] += 1.0                                                       # one token of scale k
    q_one = parts.generate(G, labels, one)
    others = [i for i in range(start, stop) if i != start + 2]
    assert torch.allclose(q_one[:, :start], q[:, :start], atol=1e-6)
    assert torch.allclose(q_one[:, others], q[:, others], atol=1e-6)               # its siblings never see it
    assert not torch.allclose(q_one[:, start + 2], q[:, start + 2])
    assert not torch.allclose(q_one[:, stop:], q[:, stop:])                        # the finer scales do


def test_the_generator_fed_the_codes_of_tokens_sees_what_the_model_sees():
    """G's inputs take the path of the teacher's: with noise equal to the flow codes of some tokens, G's features
    are the AR-diffusion model's for those tokens."""
    teacher, tokenizer = tiny_teacher(), tiny_tokenizer()
    parts = dd2_parts(teacher, tokenizer, RECIPE)
    model = trained_head(parts.diffusion_model(teacher, D, 16, 2, 0))
    G = parts.generator(model, tokenizer.codebook)
    labels, tokens, _ = random_batch(2)
    codes = tokenizer.codebook[tokens]                                             # (B, L, d)
    features = parts.features(model, labels, tokens)
    assert torch.allclose(G.features(labels, noise_scale_inputs(tokenizer)(codes)), features, atol=1e-5)
    expected = codes - model.head(codes, torch.ones(2, L), features)
    assert torch.allclose(parts.generate(G, labels, codes), expected, atol=1e-5)


def test_the_generator_is_a_copy_and_loads_into_an_empty_one():
    teacher, tokenizer = tiny_teacher(), tiny_tokenizer()
    parts, codebook = dd2_parts(teacher, tokenizer, RECIPE), tokenizer.codebook
    model = trained_head(parts.diffusion_model(teacher, D, 16, 2, 0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    G = parts.generator(model, codebook)
    assert G.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(G.state_dict()[k], v) for k, v in before.items())
    model_ptrs = {v.data_ptr() for v in model.state_dict().values()}
    assert not model_ptrs & {v.data_ptr() for v in G.state_dict().values()}

    labels, _, noise = random_batch(2)
    parts.generate(G, labels, noise).square().mean().backward()
    with torch.no_grad():
        for p in G.parameters():
            p.add_(0.1)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())   # the model never moves

    # As pipeline/sample_dd.py `load_generator` loads the dd2 stage's generator.
    empty = with_weights(lambda: parts.empty_generator(teacher, D, 16, 2), G.state_dict())
    assert torch.equal(parts.generate(empty, labels, noise), parts.generate(G, labels, noise))
    assert isinstance(empty, Generator)


def test_gts_then_csd_train_the_var_networks(tmp_path):
    teacher, tokenizer = tiny_teacher(), tiny_tokenizer()
    parts, codebook = dd2_parts(teacher, tokenizer, RECIPE), tokenizer.codebook
    labels, tokens, _ = random_batch(8)
    model = parts.diffusion_model(teacher, D, 16, 2, 0)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    gts = TrainConfig(train_steps=3, batch_size=4, learning_rate=1e-3, warmup_steps=1, checkpoint_every=3, log_every=1)
    train(model, gts_loss_fn(parts, codebook, labels, tokens), len(tokens), gts, tmp_path / "gts",
          tmp_path / "gts.json", RECORD, progress=False)
    assert all(math.isfinite(row["train/loss"]) and row["train/loss"] > 0 for row in read_log(tmp_path / "gts.json"))
    for name in ("head.output.weight", "var.blocks.0.attn.mat_qkv.weight"):        # the backbone trains as well
        assert not torch.equal(model.state_dict()[name], start[name]), name

    guidance, G = model.requires_grad_(True), parts.generator(model, codebook)
    guidance_start = {k: v.clone() for k, v in guidance.state_dict().items()}
    generator_start = {k: v.clone() for k, v in G.state_dict().items()}
    csd = CSDConfig(train_steps=2, guidance_updates=1, batch_size=2, warmup_steps=1, checkpoint_every=2, log_every=1)
    ema = train_csd(G, guidance, *csd_losses(parts, codebook, TINY.num_classes, L, csd.batch_size), csd,
                    tmp_path / "csd", tmp_path / "csd.json", RECORD, progress=False)
    rows = read_log(tmp_path / "csd.json")
    assert [row["step"] for row in rows] == [1, 2]
    assert all(math.isfinite(row[key]) for row in rows for key in ("train/generator_loss", "train/guidance_loss"))
    for network, at_start in ((G, generator_start), (guidance, guidance_start)):
        assert any(not torch.equal(v, at_start[k]) for k, v in network.state_dict().items())
    assert isinstance(ema, Generator)


def test_multi_step_keeps_the_generators_first_scales_and_the_teacher_makes_the_rest():
    teacher, tokenizer = tiny_teacher(), tiny_tokenizer()
    parts, codebook = dd2_parts(teacher, tokenizer, RECIPE), tokenizer.codebook
    G = parts.generator(trained_head(parts.diffusion_model(teacher, D, 16, 2, 0)), codebook)
    labels, _, noise = random_batch(3)
    generate = lambda labels, noise: parts.generate(G, labels, noise)              # noqa: E731
    continuation = teacher_continuation(teacher, tokenizer, RECIPE)
    one_step = sample_dd2(generate, codebook, labels, noise)
    kept = parts.kept_tokens(2)                                                    # the teacher remakes 2 scales
    assert parts.num_timesteps == K and kept == TINY.scale_slices[K - 2][0] == 30
    tokens = sample_dd2(generate, codebook, labels, noise, continuation, kept=kept, last_timestep=parts.num_timesteps)
    assert tokens.shape == (3, L) and 0 <= tokens.min() and tokens.max() < V
    assert torch.equal(tokens[:, :kept], one_step[:, :kept]) and not torch.equal(tokens, one_step)
    assert torch.equal(tokens, continuation(labels, noise, K, one_step[:, :kept]))
    assert [parts.kept_tokens(k) for k in range(1, K)] == [start for start, _ in TINY.scale_slices[1:]][::-1]
    for bad in (0, K):
        with pytest.raises(ValueError, match="remake 1 to 5 of its 6 scales"):
            parts.kept_tokens(bad)


def test_next_scale_presets_get_this_family():
    assert dd2_family("var-tiny") is next_scale_dd2 and dd2_family("var-d16") is next_scale_dd2
    assert dd2_family("llamagen-tiny") is not next_scale_dd2
