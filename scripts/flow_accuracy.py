"""How many RK4 steps the flow map (dd/flow.py) needs at a published teacher's codebook and recipe.

The pairs stage maps every token of every pair through the flow map with `flow.solver_steps` RK4 steps (20 by
default, chosen on the 256-code tiny codebooks: tests/test_flow.py). The published codebooks are larger and
shaped otherwise: LlamaGen's VQ-16 has 16,384 L2-normalised codes in d = 8 (the flow map works in them as they
are, dd/raster/vq_tokenizer.py), VAR's VQVAE 4,096 codes in d = 32, centred and scaled to unit variance
(dd/next_scale/tokenizer.py). Crowded basins decide later on the path, where a coarse solver may pick a
neighbour. This solves the same noise at several step counts and reports the share of tokens identical to a
fine solve (the bar is >= 99.9%), so the step count can be cut where it holds and raised where it does not.

The real codebooks and logits need the published checkpoints, which our machines cannot download; the stand-ins
are random codes of the published size, dimension and normalisation, and Gaussian logits at a few sharpnesses
(std of the logits; larger is more peaked) under the preset's paper recipe (top-k, top-p):

    python scripts/flow_accuracy.py                              # llamagen-b and var-d16, 4,000 tokens each
    python scripts/flow_accuracy.py --presets llamagen-b --steps 20 --steps 40 --logit-std 3
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
import typer

from dd.config import RecipeConfig
from dd.flow import flow_map
from dd.presets import paper_recipe
from dd.teachers import sampling_probs

# Each family's stand-in codebook: (V, d) and how its tokenizer presents codes to the flow map.
CODEBOOKS = {
    "llamagen": (16384, 8, "unit-norm"),     # VQ-16: codebook_vectors() L2-normalises every row
    "var": (4096, 32, "unit-variance"),      # VAR VQVAE: centred, one factor to mean variance 1 per axis
}


def standin_codebook(preset: str, generator: torch.Generator) -> tuple[torch.Tensor, str]:
    size, dim, layout = CODEBOOKS["var" if preset.startswith("var") else "llamagen"]
    codes = torch.randn(size, dim, generator=generator)                                 # (V, d)
    if layout == "unit-norm":
        codes = F.normalize(codes, dim=-1)
    else:
        codes = codes - codes.mean(0)
        codes = codes / codes.var(0).mean().sqrt()
    return codes, layout


def main(presets: list[str] = typer.Option(["llamagen-b", "var-d16"], "--presets", help="published presets (recipe, codebook shape)"),
         steps: list[int] = typer.Option([10, 20, 40], "--steps", help="RK4 step counts to check"),
         fine_steps: int = typer.Option(400, help="the reference solve's steps"),
         logit_std: list[float] = typer.Option([2.0, 4.0], "--logit-std", help="std of the Gaussian logits (sharpness)"),
         rows: int = typer.Option(4000, help="tokens per setting"),
         seed: int = typer.Option(0)) -> None:
    print(f"{rows} tokens per row of the table; agreement = share identical to a {fine_steps}-step solve; "
          f"{torch.get_num_threads()} CPU threads")
    print(f"{'preset':11s} {'codes':>16s} {'recipe':>18s} {'logit std':>9s} {'entropy':>8s} "
          + " ".join(f"{s:>4d} steps" for s in steps) + "   seconds (fine)")
    worst = {s: 1.0 for s in steps}
    for preset in presets:
        generator = torch.Generator().manual_seed(seed)
        codebook, layout = standin_codebook(preset, generator)
        recipe = RecipeConfig(**{**paper_recipe(preset)["recipe"], "cfg_scale": 1.0})   # guidance is upstream of p
        for std in logit_std:
            logits = std * torch.randn(rows, len(codebook), generator=generator)            # (rows, V)
            probs = sampling_probs(logits, recipe)
            entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1).mean().item()
            eps = torch.randn(rows, codebook.shape[1], generator=generator)                 # (rows, d)
            start = time.perf_counter()
            fine = flow_map(eps, probs, codebook, num_steps=fine_steps, support_size=recipe.top_k)
            seconds = time.perf_counter() - start
            shares = []
            for s in steps:
                share = (flow_map(eps, probs, codebook, num_steps=s, support_size=recipe.top_k) == fine).double().mean().item()
                worst[s] = min(worst[s], share)
                shares.append(share)
            print(f"{preset:11s} {f'{len(codebook)}x{codebook.shape[1]} {layout}':>16s} "
                  f"{f'top-k {recipe.top_k} top-p {recipe.top_p:g}':>18s} {std:9.1f} {entropy:8.2f} "
                  + " ".join(f"{100 * share:9.2f}%" for share in shares) + f"   {seconds:.0f}")
    passing = [s for s in steps if worst[s] >= 0.999]
    print("fewest steps at >= 99.9% in every setting: " + (str(min(passing)) if passing else f"none of {steps}"))


if __name__ == "__main__":
    typer.run(main)
