"""DD2's stages (dd/dd2.py) and the raster family's networks (dd/raster/dd2.py), on micro models and a toy law."""
import copy
import dataclasses

import pytest
import torch
from torch import nn

from dd.config import CSDConfig, ConfigError, RecipeConfig, config_from_dict
from dd.dd2 import StudentGenerator, csd_losses, gts_loss_fn, sample_dd2, snap, train_csd, with_student_generator
from dd.families import DD2Parts
from dd.diffusion_head import DiffusionHead
from dd.raster.dd2 import ARDiffusion, Generator, dd2_parts, recipe_probs
from dd.raster.sampling import teacher_continuation
from dd.raster.student import DDStudent, empty_student
from dd.raster.teacher import generate
from dd.seeding import inverse_cdf
from dd.training import Batch, read_log
from tests.helpers import MICRO, micro_codebook, micro_teacher

RECIPE = RecipeConfig(cfg_scale=1.5, temperature=1.0, top_k=5, top_p=1.0)


def test_recipe_probs_are_the_laws_the_teachers_sampler_draws_from():
    teacher, generator = micro_teacher(), torch.Generator().manual_seed(1)
    labels, seen = torch.tensor([0, 1, 2, 1]), []

    def choose(probs, position):
        seen.append(probs)
        return inverse_cdf(probs, torch.rand(len(probs), generator=generator))

    tokens = generate(teacher, labels, RECIPE, choose)                                     # (B, L)
    forced = recipe_probs(teacher, RECIPE)(labels, tokens)                                 # (B, L, V)
    assert torch.allclose(forced, torch.stack(seen, dim=1), atol=1e-5)
    assert ((forced > 0).sum(-1) == RECIPE.top_k).all()


def test_the_ar_diffusion_model_starts_as_the_teacher_and_leaves_it_untouched():
    teacher, codebook = micro_teacher(), micro_codebook()
    model = ARDiffusion.from_teacher(teacher, code_dim=4, head_width=16, head_depth=2)
    labels, tokens = torch.tensor([0, 2]), torch.randint(MICRO.vocab_size, (2, MICRO.num_image_tokens))
    features = model.features(labels, tokens)                                              # (B, L, C)
    assert torch.allclose(teacher.logits(features), teacher(labels, tokens), atol=1e-5)
    assert model.head(codebook[tokens], torch.rand(2, MICRO.num_image_tokens), features).abs().max() == 0

    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    loss = gts_loss_fn(dd2_parts(teacher, None, RECIPE), codebook, labels, tokens)(
        model, Batch(torch.tensor([0, 1]), torch.Generator().manual_seed(0)))
    loss.backward()
    assert loss > 0 and model.gpt.layers[0].attention.wqkv.weight.grad is not None
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())


def test_the_generator_reads_only_earlier_noise_and_its_own_and_never_the_batch():
    teacher, codebook = micro_teacher(), micro_codebook()
    model = ARDiffusion.from_teacher(teacher, code_dim=4, head_width=16, head_depth=2)
    nn.init.normal_(model.head.output.weight, std=0.5)            # a trained head: not the zero of a new one
    nn.init.normal_(model.head.final_adaln[1].weight, std=0.5)
    G = Generator.from_diffusion(model, codebook)
    assert torch.equal(G.head.output.weight, model.head.output.weight)
    assert G.head.output.weight.data_ptr() != model.head.output.weight.data_ptr()

    labels, noise = torch.tensor([0, 1, 2]), torch.randn(3, MICRO.num_image_tokens, 4)
    q = G(labels, noise)
    one_at_a_time = torch.cat([G(labels[i:i + 1], noise[i:i + 1]) for i in range(3)])
    assert torch.allclose(q, one_at_a_time, atol=1e-5)
    changed = noise.clone()
    changed[:, 5] += 1.0                                          # token 5's noise: tokens 0..4 cannot see it
    q2 = G(labels, changed)
    assert torch.allclose(q[:, :5], q2[:, :5], atol=1e-6) and not torch.allclose(q[:, 5:], q2[:, 5:])
    assert torch.equal(sample_dd2(G, codebook, labels, noise), snap(q, codebook))
    parts = dd2_parts(teacher, None, RECIPE)
    assert torch.equal(parts.generate(G, labels, noise), q) and parts.kept_tokens(5) == MICRO.num_image_tokens - 5
    with pytest.raises(ValueError, match="dd2.teacher_steps holds 16"):      # all of them: the teacher's own row
        parts.kept_tokens(MICRO.num_image_tokens)


def test_multi_step_keeps_the_generators_first_tokens_and_the_teacher_makes_the_rest():
    teacher, codebook = micro_teacher(), micro_codebook()
    model = ARDiffusion.from_teacher(teacher, code_dim=4, head_width=16, head_depth=2)
    nn.init.normal_(model.head.output.weight, std=0.5)
    G = Generator.from_diffusion(model, codebook)
    labels, noise = torch.tensor([0, 1, 2]), torch.randn(3, MICRO.num_image_tokens, 4)
    continuation = teacher_continuation(teacher, None, RECIPE)
    one_step = sample_dd2(G, codebook, labels, noise)
    tokens = sample_dd2(G, codebook, labels, noise, continuation, kept=6, last_timestep=MICRO.num_image_tokens)
    assert torch.equal(tokens[:, :6], one_step[:, :6])
    assert torch.equal(tokens, continuation(labels, noise, MICRO.num_image_tokens, one_step[:, :6]))


def test_snap_picks_the_nearest_code():
    codebook, q = torch.randn(16, 4), torch.randn(50, 4)
    assert torch.equal(snap(q, codebook), torch.cdist(q, codebook).argmin(-1))


# ---------------------------------------------------------------------------------------------------------
# The method on a toy: one token, a fixed teacher law over 4 well-separated codes in 2-D
# ---------------------------------------------------------------------------------------------------------

TOY_CODES = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]])
TOY_LAW = torch.tensor([0.4, 0.3, 0.2, 0.1])


class ToyDiffusion(nn.Module):
    """psi with nothing before the token: a constant feature, and a diffusion head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.head = DiffusionHead(code_dim=2, feature_dim=1, width=64, depth=2)

    def features(self, labels, tokens):
        return torch.ones(*tokens.shape, 1)


class ToyGenerator(nn.Module):
    """G as the real one: one Euler step from t = 1 of a copy of psi's head."""

    def __init__(self, diffusion: ToyDiffusion):
        super().__init__()
        self.head = DiffusionHead(code_dim=2, feature_dim=1, width=64, depth=2)
        self.head.load_state_dict(diffusion.head.state_dict())

    def forward(self, labels, noise):
        return noise - self.head(noise, torch.ones(noise.shape[:2]), torch.ones(*noise.shape[:2], 1))


def toy_probs(labels, tokens):
    return TOY_LAW.expand(*tokens.shape, 4)


TOY = DD2Parts(diffusion_model=None, generator=None, empty_generator=None, recipe_probs=toy_probs,
               features=lambda model, labels, tokens: model.features(labels, tokens),
               generate=lambda generator, labels, noise: generator(labels, noise), kept_tokens=None, num_timesteps=1)


def toy_distance(G) -> float:
    """Total variation between the law of G's snapped tokens (8,000 draws) and the teacher's."""
    noise = torch.randn(8000, 1, 2, generator=torch.Generator().manual_seed(123))
    counts = torch.bincount(sample_dd2(G, TOY_CODES, torch.zeros(8000, dtype=torch.long), noise).flatten(), minlength=4)
    return 0.5 * float((counts / counts.sum() - TOY_LAW).abs().sum())


def toy_stage_one(steps: int = 300) -> ToyDiffusion:
    model, rng = ToyDiffusion(), torch.Generator().manual_seed(0)
    tokens = inverse_cdf(TOY_LAW.expand(4096, 4), torch.rand(4096, generator=rng))[:, None]   # teacher samples (N, 1)
    loss_fn = gts_loss_fn(TOY, TOY_CODES, torch.zeros(4096, dtype=torch.long), tokens)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = loss_fn(model, Batch(torch.randint(4096, (256,), generator=rng), rng))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


TOY_CSD = CSDConfig(train_steps=300, guidance_updates=2, batch_size=256, generator_learning_rate=3e-3,
                    guidance_learning_rate=3e-3, warmup_steps=10, ema_decay=0.99, checkpoint_every=50, log_every=50,
                    precision="fp32")
RECORD = {"params": "p", "code": {"dd/dd2.py": "1"}}


@pytest.fixture(scope="module")
def toy_psi():
    return toy_stage_one()


def test_csd_moves_a_one_step_generator_to_the_teachers_law(tmp_path, toy_psi, capsys):
    """One Euler step of the stage-1 model from pure noise gives about the law's mean, (0.4, 0.4), which snaps to
    code 0 or 1 only (total variation 0.30 on this run); CSD brings the snapped law to the teacher's (0.045)."""
    guidance, G = ToyDiffusion(), ToyGenerator(toy_psi)
    guidance.load_state_dict(toy_psi.state_dict())
    at_start = toy_distance(G)
    losses = csd_losses(TOY, TOY_CODES, num_classes=1, num_tokens=1, batch_size=TOY_CSD.batch_size)
    ema = train_csd(G, guidance, *losses, TOY_CSD, tmp_path, tmp_path / "log.json", RECORD, progress=False)
    trained = toy_distance(ema)
    print(f"total variation to the teacher's law: at initialisation {at_start:.3f}, after CSD {trained:.3f}")
    assert at_start > 0.25 and trained < 0.08
    assert [row["step"] for row in read_log(tmp_path / "log.json")] == [50, 100, 150, 200, 250, 300]


def test_guidance_warmup_moves_only_the_guidance_network(tmp_path, toy_psi):
    """With guidance-only steps and no generator step, psi learns the generator's samples; G and its EMA stay."""
    guidance, G = ToyDiffusion(), ToyGenerator(toy_psi)
    guidance.load_state_dict(toy_psi.state_dict())
    start = copy.deepcopy(G.state_dict())
    config = dataclasses.replace(TOY_CSD, train_steps=0, guidance_warmup_steps=20, log_every=10)
    ema = train_csd(G, guidance, *csd_losses(TOY, TOY_CODES, 1, 1, config.batch_size), config, tmp_path,
                    tmp_path / "log.json", RECORD, progress=False)
    assert all(torch.equal(start[k], v) for k, v in G.state_dict().items())
    assert all(torch.equal(start[k], v) for k, v in ema.state_dict().items())
    assert not all(torch.equal(a, b) for a, b in zip(toy_psi.state_dict().values(), guidance.state_dict().values()))
    log = read_log(tmp_path / "log.json")
    assert [(row["step"], row["train/generator_loss"], row["train/generator_updates"]) for row in log] == \
        [(10, None, 0), (20, None, 0)]


class Killed(Exception):
    pass


@pytest.mark.parametrize("aligning", [0, 3])
def test_killed_csd_resumes_to_the_same_weights_and_other_params_start_afresh(tmp_path, toy_psi, capsys, aligning):
    """Killed during its generator updates (after guidance-only steps, where asked), a rerun resumes to the same
    networks as an uninterrupted run."""
    config = dataclasses.replace(TOY_CSD, train_steps=6, checkpoint_every=2, log_every=1, guidance_warmup_steps=aligning)

    def run(folder, kill_at=None, record=RECORD):
        guidance, G = ToyDiffusion(), ToyGenerator(toy_psi)
        guidance.load_state_dict(toy_psi.state_dict())
        generator_loss_fn, guidance_loss_fn = csd_losses(TOY, TOY_CODES, 1, 1, config.batch_size)
        calls = []

        def dying(generator, guidance, rng):
            calls.append(1)
            if len(calls) == kill_at:
                raise Killed()
            return generator_loss_fn(generator, guidance, rng)
        ema = train_csd(G, guidance, dying, guidance_loss_fn, config, tmp_path / folder,
                        tmp_path / f"{folder}.json", record, progress=False)
        return ema, G, guidance

    reference = run("a")
    with pytest.raises(Killed):
        run("b", kill_at=4)                      # during step 4, after the checkpoint at step 2
    resumed = run("b")
    assert "resuming from" in capsys.readouterr().out
    for a, b in zip(reference, resumed):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    log = read_log(tmp_path / "b.json")
    assert [row["step"] for row in log] == list(range(1, 7 + aligning))
    assert [row["train/generator_updates"] for row in log] == [max(0, s - aligning) for s in range(1, 7 + aligning)]

    afresh = run("b", record={"params": "other", "code": RECORD["code"]})
    assert "made with other params; starting this training afresh" in capsys.readouterr().out
    assert all(torch.equal(x, y) for x, y in zip(reference[0].state_dict().values(), afresh[0].state_dict().values()))


def test_params_choose_the_methods_and_check_dd2():
    assert config_from_dict({}).methods == ("dd1",)
    assert config_from_dict({"methods": ["dd1", "dd2"]}).methods == ("dd1", "dd2")
    for bad, key in [({"methods": ["dd3"]}, "methods"), ({"methods": []}, "methods"),
                     ({"methods": ["dd2", "dd2"]}, "methods"),
                     ({"dd2": {"csd": {"guidance_updates": 0}}}, "dd2.csd.guidance_updates"),
                     ({"dd2": {"teacher_steps": [0]}}, "dd2.teacher_steps"),
                     ({"dd2": {"generator_init": "dd3"}}, "dd2.generator_init"),
                     ({"methods": ["dd2"], "dd2": {"generator_init": "dd1"}}, "dd2.generator_init")]:
        with pytest.raises(ConfigError, match=f"invalid value for {key}"):
            config_from_dict(bad)
    with pytest.raises(ConfigError, match="unknown params key 'dd2.csd.steps'"):
        config_from_dict({"dd2": {"csd": {"steps": 3}}})


def test_a_dd1_student_as_the_generator_keeps_its_tokens_learns_through_the_softmax_and_reloads():
    """dd2.generator_init: dd1. The sharpened expected code snaps to the student's argmax wherever the student
    is sure; the CSD loss reaches the student's weights; the trained generator reloads into an empty one."""
    teacher, codebook = micro_teacher(), micro_codebook()
    student = DDStudent.from_teacher(teacher, codebook)
    nn.init.normal_(student.gpt.output.weight, std=2.0)                   # a sure student: large logit gaps
    parts = with_student_generator(dd2_parts(teacher, None, RECIPE), lambda: student, empty_student, codebook)
    G = parts.generator(None, codebook)
    labels, noise = torch.tensor([0, 1, 2]), torch.randn(3, MICRO.num_image_tokens, 4, generator=torch.Generator().manual_seed(0))
    logits = student(labels, noise, 0)
    sure = logits.softmax(-1).max(-1).values > 0.99                        # top probability, before the temperature
    assert sure.float().mean() > 0.3
    assert torch.equal(snap(parts.generate(G, labels, noise), codebook)[sure], logits.argmax(-1)[sure])

    model = ARDiffusion.from_teacher(teacher, code_dim=4, head_width=16, head_depth=2)
    generator_loss, _ = csd_losses(parts, codebook, MICRO.num_classes, MICRO.num_image_tokens, 4)
    generator_loss(G, model, torch.Generator().manual_seed(0)).backward()
    assert G.student.input_projection.weight.grad.abs().sum() > 0

    loaded = parts.empty_generator(teacher, 4, 16, 2)
    loaded.load_state_dict(G.state_dict())
    assert isinstance(loaded, StudentGenerator) and torch.equal(loaded(labels, noise), G(labels, noise))
