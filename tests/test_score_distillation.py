"""DD2's pieces on their own: the teacher's velocity, the diffusion head, and the losses' gradients."""
import torch

from dd import flow
from dd.diffusion_head import DiffusionHead
from dd.score_distillation import (generator_loss, gts_loss, guidance_loss, noisy, sample_times,
                                   teacher_velocity)


def _law(rows: int, vocab: int = 12, code_dim: int = 4, seed: int = 0, top_k: int = 0):
    generator = torch.Generator().manual_seed(seed)
    codebook = torch.randn(vocab, code_dim, generator=generator)
    logits = 2 * torch.randn(rows, vocab, generator=generator)
    if top_k:
        logits = logits.masked_fill(logits < logits.topk(top_k, dim=-1).values[:, -1:], float("-inf"))
    return torch.softmax(logits, -1), codebook, generator


def test_the_teacher_velocity_is_the_flow_maps_field():
    """Same formula as the DD1 flow map's ODE (dd/flow.py), at any t, zeros of a top-k recipe included."""
    probs, codebook, generator = _law(500, top_k=5)
    x, t = torch.randn(500, 4, generator=generator), sample_times(500, generator)
    expected = flow._velocity(x, t[:, None], torch.log(probs), codebook, (codebook**2).sum(-1), probs @ codebook)
    assert torch.allclose(teacher_velocity(x, t, probs, codebook), expected, atol=1e-5, rtol=1e-5)


def test_the_teacher_velocity_points_from_the_code_to_the_noise_when_p_is_one_code():
    """p = delta(c_y): D = c_y for every x, so v_T = (x_t - c_y) / t = eps - c_y, the exact velocity."""
    _, codebook, generator = _law(1)
    tokens = torch.randint(12, (300,), generator=generator)
    eps, t = torch.randn(300, 4, generator=generator), sample_times(300, generator)
    x_t = noisy(codebook[tokens], eps, t)
    assert torch.allclose(teacher_velocity(x_t, t, torch.nn.functional.one_hot(tokens, 12).float(), codebook),
                          eps - codebook[tokens], atol=1e-4)


def test_a_new_head_predicts_zero_and_takes_any_leading_shape():
    head = DiffusionHead(code_dim=4, feature_dim=16, width=32)
    x, t, z = torch.randn(2, 5, 4), torch.rand(2, 5), torch.randn(2, 5, 16)
    assert head(x, t, z).shape == (2, 5, 4) and head(x, t, z).abs().max() == 0


def test_a_head_trained_with_gts_approaches_the_teacher_velocity_on_held_out_points():
    """Regressing v_T for a few laws (the feature says which): the relative error on fresh (x_t, t) falls from 1
    (a zero head) to a small fraction."""
    probs, codebook, generator = _law(4, vocab=6, code_dim=2)
    features = torch.eye(4)
    torch.manual_seed(0)
    head = DiffusionHead(code_dim=2, feature_dim=4, width=64)
    optimizer = torch.optim.Adam(head.parameters(), lr=2e-3)

    def batch(size):
        law = torch.randint(4, (size,), generator=generator)
        tokens = torch.multinomial(probs[law], 1, generator=generator)[:, 0]
        eps, t = torch.randn(size, 2, generator=generator), sample_times(size, generator)
        x_t = noisy(codebook[tokens], eps, t)
        return x_t, t, features[law], teacher_velocity(x_t, t, probs[law], codebook)

    def relative_error(held_out):
        x_t, t, z, v = held_out
        with torch.no_grad():
            return float(((head(x_t, t, z) - v).norm(dim=-1) ** 2).mean() / (v.norm(dim=-1) ** 2).mean())

    held_out = batch(2000)
    before = relative_error(held_out)
    for _ in range(600):
        x_t, t, z, v = batch(256)
        loss = gts_loss(head(x_t, t, z), v)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = relative_error(held_out)
    assert before == 1.0 and after < 0.15, (before, after)


def test_the_guidance_loss_is_minimised_by_the_velocity_of_the_generators_law():
    """For generator samples at one code c, the denoising target's minimiser is (x_t - c) / t = eps - c: the loss
    there is zero, and any other prediction scores worse."""
    code = torch.tensor([[1.0, -2.0]]).repeat(100, 1)
    eps, t = torch.randn(100, 2), sample_times(100, torch.Generator().manual_seed(0))
    exact = (noisy(code, eps, t) - code) / t[:, None]
    assert guidance_loss(exact, code, eps) < 1e-10 and guidance_loss(exact + 0.1, code, eps) > 0.01


def test_the_generator_gradient_moves_its_samples_towards_the_teachers_denoised_mean():
    """Generator samples all at c_0 and a guidance network exact for that law (v_psi = (x - c_0) / t): the gradient
    of the generator loss in q is c_0 - D_T(x_t), so a descent step moves q towards the teacher's codes."""
    codebook = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    probs = torch.tensor([[0.5, 0.5]]).repeat(400, 1)
    generator = torch.Generator().manual_seed(0)
    eps, t = torch.randn(400, 2, generator=generator), sample_times(400, generator)
    q = codebook[0].repeat(400, 1).requires_grad_(True)
    x_t = noisy(q, eps, t)
    v_psi = (x_t - codebook[0]) / t[:, None]
    loss = generator_loss(teacher_velocity(x_t, t, probs, codebook), v_psi, q, eps, t, tokens_per_sample=4)
    (gradient,) = torch.autograd.grad(loss, q)
    with torch.no_grad():
        denoised = x_t - t[:, None] * teacher_velocity(x_t, t, probs, codebook)
        gap = (t[:, None] * (teacher_velocity(x_t, t, probs, codebook) - (eps - q))).abs()
        normaliser = gap.view(100, 8).mean(-1).repeat_interleave(4)[:, None]      # samples of 4 tokens each
    expected = (codebook[0] - denoised) / normaliser / len(q)
    assert torch.allclose(gradient, expected, atol=1e-6)
    # Where t is small the teacher's posterior is c_0 to float precision (D_T = c_0): no direction to test there.
    moving = (denoised - codebook[0]).abs().max(-1).values > 1e-3
    assert moving.float().mean() > 0.5 and (gradient[moving, 0] < 0).all()     # descent raises q's first coordinate
