"""The published teachers: where their weights and tokenizers live, and the paper's recipe each one carries.

A teacher named in params.yaml `teachers:` is a model preset (dd/models). The embedded default
(`llamagen-tiny`) is trained by the pipeline; the presets below are the published checkpoints, fetched by the
teacher and tokenizer stages (dd/download.py: resumable, verified, atomic). Each carries the recipe DD used for
it (method.md sections 4-8, teachers.md) as its defaults, so `dvc exp run -S teachers='[llamagen-b]'` runs the
paper's setting; `overrides.<teacher>` in params.yaml changes any of it (dd/config.py `resolve`).

What the paper leaves unpublished is marked: the pair count (thought to be about 1.2M) and the loss.
This module is plain data, imported by dd/config.py, so it must not import torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

LLAMAGEN_HUB = "https://huggingface.co/FoundationVision/LlamaGen/resolve/main/"
VAR_HUB = "https://huggingface.co/FoundationVision/var/resolve/main/"


@dataclass(frozen=True)
class Published:
    family: str                    # "llamagen" (raster order) or "var" (next scale)
    weights_url: str
    tokenizer_preset: str          # a preset of dd/models/llamagen_vq.py or dd/models/var_vqvae.py
    tokenizer_url: str
    paper_recipe: dict = field(default_factory=dict)   # params sections, as params.yaml spells them


def _recipe(cfg_scale: float, top_k: int, top_p: float, intermediate: int, sample: dict) -> dict:
    """The settings DD used, as params sections (evaluate.reference stays the user's to name)."""
    return {
        "teacher": {"source": "download"},
        "tokenizer": {"source": "download"},
        "recipe": {"cfg_scale": cfg_scale, "temperature": 1.0, "top_k": top_k, "top_p": top_p},
        "student": {"timesteps": [0, intermediate]},    # all-noise plus one intermediate (tokens / scales)
        "pairs": {"num_pairs": 1_200_000},              # not published; of this order (method.md section 4)
        # beside the 1-step `dd` row, the paper's 2-step one (hybrid settings: the user's, per teacher)
        "sample": {"num_samples": 50_000, "labels": "uniform", "dd_variants": [[2, 0]], **sample},
        "evaluate": {"extractor": "inception"},
    }


# LlamaGen: constant CFG 2.0 and top-k 8000 of 16384 (DD's setting); intermediate timestep 80 tokens; the
# skip baseline stops 106 tokens early (the paper's LlamaGen-skip-106).
# VAR: CFG 2.0 ramped over scales, top-k 900, top-p 0.95; intermediate 5 scales for d16, 4 for the larger.
_LLAMAGEN = _recipe(2.0, 8000, 1.0, 80, {"skip_tokens": 106})
PUBLISHED: dict[str, Published] = {
    "llamagen-b": Published("llamagen", LLAMAGEN_HUB + "c2i_B_256.pt", "vq-16", LLAMAGEN_HUB + "vq_ds16_c2i.pt", _LLAMAGEN),
    "llamagen-l": Published("llamagen", LLAMAGEN_HUB + "c2i_L_256.pt", "vq-16", LLAMAGEN_HUB + "vq_ds16_c2i.pt", _LLAMAGEN),
    **{f"var-d{depth}": Published("var", VAR_HUB + f"var_d{depth}.pth", "vae-ch160v4096z32",
                                  VAR_HUB + "vae_ch160v4096z32.pth", _recipe(2.0, 900, 0.95, 5 if depth == 16 else 4, {}))
       for depth in (16, 20, 24, 30)},
}
# llamagen-xl is a model preset only: its published checkpoint (c2i_XL_384.pt) is a 384 px model.


def paper_recipe(teacher: str) -> dict:
    """The params a published preset sets by default; {} for a teacher the pipeline trains itself."""
    return PUBLISHED[teacher].paper_recipe if teacher in PUBLISHED else {}


def published(teacher: str) -> Published:
    if teacher not in PUBLISHED:
        raise ValueError(f"'{teacher}' has no published checkpoint; published teachers: {', '.join(PUBLISHED)}. "
                         "Set teacher.source: train for the embedded default, or give teacher.url and tokenizer.url")
    return PUBLISHED[teacher]
