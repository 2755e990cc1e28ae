"""The per-token flow map: its token law is the teacher's p, and the default solver is accurate."""
import subprocess
import sys
from pathlib import Path

import torch
from scipy import stats

from dd import flow
from dd.flow import flow_map


def _problem(num_rows: int, vocab: int = 256, code_dim: int = 8, seed: int = 0, top_k: int = 0):
    generator = torch.Generator().manual_seed(seed)
    codebook = torch.randn(vocab, code_dim, generator=generator)
    logits = 2 * torch.randn(num_rows, vocab, generator=generator)
    if top_k:   # a sampling recipe zeroes most of p: the map must never pick a removed token
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    eps = torch.randn(num_rows, code_dim, generator=generator)
    return eps, torch.softmax(logits, -1), codebook


def _one_distribution(num_samples: int = 40_000, vocab: int = 12):
    """Many noises under ONE distribution p over a random codebook."""
    generator = torch.Generator().manual_seed(1)
    codebook = torch.randn(vocab, 8, generator=generator)
    probs = torch.softmax(1.5 * torch.randn(vocab, generator=generator), -1)
    return torch.randn(num_samples, 8, generator=generator), probs, codebook


def test_token_law_equals_p():
    """The histogram of flow-map tokens must match p (chi-square, p-value > 1e-3)."""
    eps, probs, codebook = _one_distribution()
    (num_samples, _), vocab = eps.shape, len(probs)
    tokens = flow_map(eps, probs.expand(num_samples, vocab), codebook)
    observed = torch.bincount(tokens, minlength=vocab).numpy()
    expected = probs.double().numpy() * num_samples
    expected *= observed.sum() / expected.sum()   # chisquare wants equal totals to rounding
    p_value = stats.chisquare(observed, expected).pvalue
    assert p_value > 1e-3, f"token histogram departs from p (chi-square p-value {p_value:.2e})"
    # and an effect-size bound: total variation below 0.01 (sampling noise alone gives ~0.004 here)
    assert 0.5 * abs(observed / num_samples - expected / num_samples).sum() < 0.01


def test_nearest_code_would_fail_the_law():
    """Guard: the statistical test above has power: plain nearest-code quantisation of eps does not follow p."""
    eps, probs, codebook = _one_distribution()
    (num_samples, _), vocab = eps.shape, len(probs)
    nearest = torch.cdist(eps, codebook).argmin(-1)
    observed = torch.bincount(nearest, minlength=vocab).numpy()
    expected = probs.double().numpy()
    assert stats.chisquare(observed, expected / expected.sum() * num_samples).pvalue < 1e-3


def test_default_solver_matches_fine_solve():
    eps, probs, codebook = _problem(3000)
    agreement = (flow_map(eps, probs, codebook) == flow_map(eps, probs, codebook, num_steps=400)).double().mean()
    assert agreement >= 0.999, f"default solver agrees with a 400-step solve on only {agreement:.4%} of tokens"


def test_recipe_zeros_are_respected_and_map_is_deterministic():
    eps, probs, codebook = _problem(2000, top_k=5)
    tokens = flow_map(eps, probs, codebook)
    assert (probs.gather(1, tokens[:, None]) > 0).all()
    assert torch.equal(tokens, flow_map(eps, probs, codebook))
    # rows are independent: a row's token does not depend on which other rows share its batch
    assert torch.equal(tokens[:7], flow_map(eps[:7], probs[:7], codebook))


def test_support_restriction_is_exact_under_top_k():
    """Solving over the top-k candidates gives the same tokens as the full codebook when p has k nonzeros."""
    eps, probs, codebook = _problem(2000, top_k=16)
    assert torch.equal(flow_map(eps, probs, codebook, support_size=16), flow_map(eps, probs, codebook))


def test_compiled_solver_gives_the_eager_tokens():
    """flow.compile fuses each RK4 step (torch.compile): same tokens as eager, whatever the rows per call."""
    eps, probs, codebook = _problem(3000, top_k=16)
    eager = flow_map(eps, probs, codebook, support_size=16)
    assert torch.equal(flow_map(eps, probs, codebook, support_size=16, compile=True), eager)
    assert torch.equal(flow_map(eps[:700], probs[:700], codebook, support_size=16, compile=True), eager[:700])


def test_narrow_candidate_codes_compile_with_256_bit_vectors(monkeypatch):
    """Inductor's 512-bit CPU code for (rows, k, 8) candidate codes was 35x slower than 256-bit (dd/flow.py): the
    compiled solve asks for 256-bit vectors there only, not for the shared codebook nor for 32-float codes."""
    asked = []
    monkeypatch.setattr(flow, "_compiled_rk4_step", lambda bits: asked.append(bits) or flow._rk4_step)
    eps, probs, codebook = _problem(50, top_k=16)
    flow.flow_map(eps, probs, codebook, support_size=16, compile=True)           # 16 of 256 codes: candidates
    flow.flow_map(eps, probs, codebook, compile=True)                            # the shared codebook
    eps, probs, codebook = _problem(50, code_dim=32, top_k=16)
    flow.flow_map(eps, probs, codebook, support_size=16, compile=True)           # candidates, 32-float codes
    assert asked == [256, None, None]


def test_flow_speed_benchmark_runs_and_every_variant_picks_the_same_tokens():
    """scripts/flow_speed.py, at a tiny size: it compiles the four solves flow_map can run and exits non-zero
    when any picks other tokens (~40 s, mostly compiling)."""
    script = Path(__file__).parents[1] / "scripts" / "flow_speed.py"
    done = subprocess.run([sys.executable, str(script), "--rows", "64", "--rounds", "1"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if "same tokens" in line]
    assert len(rows) == 4 and all(line.endswith("same tokens: True") for line in rows), done.stdout


def test_flow_accuracy_benchmark_reports_agreement_at_the_published_codebooks():
    """scripts/flow_accuracy.py at a tiny size: the stand-in codebooks have the tokenizers' normalisation, and a
    solve at the reference's own step count agrees with it exactly while a 2-step solve does not."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    from flow_accuracy import standin_codebook
    generator = torch.Generator().manual_seed(0)
    unit_norm, layout = standin_codebook("llamagen-b", generator)
    assert unit_norm.shape == (16384, 8) and layout == "unit-norm"
    assert torch.allclose(unit_norm.norm(dim=-1), torch.ones(16384), atol=1e-5)
    unit_variance, layout = standin_codebook("var-d16", generator)
    assert unit_variance.shape == (4096, 32) and abs(unit_variance.var(0).mean().item() - 1) < 1e-4

    script = Path(__file__).parents[1] / "scripts" / "flow_accuracy.py"
    done = subprocess.run([sys.executable, str(script), "--presets", "var-d16", "--rows", "300", "--steps", "2",
                           "--steps", "40", "--fine-steps", "40", "--logit-std", "2"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    [row] = [line for line in done.stdout.splitlines() if line.startswith("var-d16")]
    coarse, same = [float(cell.rstrip("%")) for cell in row.split() if cell.endswith("%")]
    assert same == 100.0 and coarse < 100.0, row
    assert done.stdout.strip().endswith("fewest steps at >= 99.9% in every setting: 40"), done.stdout
