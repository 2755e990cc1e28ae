"""Stage `teacher`: the frozen AR teacher, trained here on the tokenized train split (teacher.source: train)
or fetched as published (teacher.source: download; dd/presets.py has the URLs).

Training is teacher forcing with cross-entropy over every image token; only the model's inputs differ by
family (dd/families/teacher.py): a raster (LlamaGen) teacher reads the tokens themselves, a next-scale (VAR)
teacher the VQVAE's area-downsampled running reconstructions of the coarser scales (block-causal attention
over the scales)."""
import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from dd.artifacts import load_tokenizer, tokenizer_weights
from dd.checkpoint import atomic_write, fetch_published, file_sha256, save_json, save_weights
from dd.config import Config
from dd.families import TeacherForcing
from dd.families.teacher import teacher_family
from dd.layout import Layout, load_images
from dd.presets import published
from dd.provenance import record, stage_entry
from dd.teachers import build_model
from dd.training import train



def run(config: Config, layout: Layout, progress: bool = True) -> dict:
    return (download if config.teacher.source == "download" else train_here)(config, layout, progress)


def download(config: Config, layout: Layout, progress: bool = True) -> dict:
    """The published weights, as published (no conversion); model.json, written last, names them."""
    url = config.teacher.url or published(layout.teacher).weights_url
    (layout.teacher_dir / "model.json").unlink(missing_ok=True)      # until the new weights are verified
    meta = fetch_published(url, config.teacher.sha256, layout.teacher_dir, lambda: build_model(layout.teacher),
                           progress)
    metrics = {"source": "download", **meta}
    # The stage's declared training log (a DVC plot): nothing was trained here, so it holds no rows.
    atomic_write(layout.metrics_dir / "teacher_log.json", lambda tmp: tmp.write_text("[]\n"))
    save_json(layout.metrics_dir / "teacher.json", metrics)
    save_json(layout.teacher_dir / "model.json", {"preset": layout.teacher, **metrics})
    return metrics


def forcing_loss(forward: TeacherForcing, tokens: Tensor, labels: Tensor, null_class: int, class_dropout: float):
    """The teacher's training loss over all N examples, tokens (N, L) and labels (N,), as dd.training's LossFn:
    cross-entropy of teacher forcing over every token, each label replaced by the null class with probability
    class_dropout (for classifier-free guidance)."""
    def loss_fn(model, batch):
        dropped = batch.local(torch.rand(batch.size, generator=batch.generator) < class_dropout).to(labels.device)
        indices = batch.local(batch.indices)
        batch_labels = torch.where(dropped, null_class, labels[indices])
        logits = forward(model, batch_labels, tokens[indices])                          # (B, L, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), tokens[indices].flatten())
    return loss_fn


def train_here(config: Config, layout: Layout, progress: bool = True) -> dict:
    tokenizer = load_tokenizer(layout)
    train_set, validation = load_images(layout, "train"), load_images(layout, "validation")
    tokens, labels = tokenizer.encode(train_set.images), torch.from_numpy(train_set.labels)
    torch.manual_seed(config.teacher.train.seed)           # the initial weights (train.seed also draws the batches)
    model = build_model(layout.teacher)
    num_tokens, forward = teacher_family(layout.teacher).teacher_forcing(model, tokenizer)
    if (model.config.vocab_size, num_tokens) != (tokenizer.codebook_size, tokenizer.num_tokens):
        raise ValueError(f"preset {layout.teacher} expects {model.config.vocab_size} codes x {num_tokens} tokens; "
                         f"the tokenizer makes {tokenizer.codebook_size} x {tokenizer.num_tokens}: match the "
                         "tokenizer's params (tokenizer.*, vqvae.preset) to the preset")
    loss_fn = forcing_loss(forward, tokens, labels, model.config.num_classes, config.teacher.class_dropout)
    # A checkpoint is resumed only under the same params, model shape (a preset edited), tokens and code.
    provenance = record(stage_entry("teacher"), config.tokenizer, config.teacher, config.data, layout.teacher,
                        model.config, file_sha256(tokenizer_weights(layout)), file_sha256(layout.dataset_dir / "train.npz"))
    ema = train(model, loss_fn, len(tokens), config.teacher.train, layout.teacher_dir,
                layout.metrics_dir / "teacher_log.json", provenance, f"teacher {layout.teacher}", progress)
    # A subset: all 10,000 test images took 52 s of a 40-minute run; blocks of 2,000 gave 1.266-1.294 nats
    # against 1.281 for all (llamagen-tiny), close enough to compare teachers. On validation: teachers are chosen.
    held_out = slice(0, config.teacher.nll_images or None)
    nll_tokens = tokenizer.encode(validation.images[held_out])
    metrics = {"validation_nll_per_token": heldout_nll(forward, ema, nll_tokens,
                                                       torch.from_numpy(validation.labels[held_out])),
               "validation_nll_images": len(nll_tokens)}
    save_weights(layout.teacher_dir / "model.pt", ema.state_dict(),
                 {"preset": layout.teacher, "config": dataclasses.asdict(model.config),
                  "train_steps": config.teacher.train.train_steps, **metrics})
    save_json(layout.metrics_dir / "teacher.json", metrics)
    return metrics


@torch.inference_mode()
def heldout_nll(forward: TeacherForcing, model, tokens, labels, batch_size: int = 500) -> float:
    """Mean negative log-likelihood per token (nats) of held-out tokens under the (conditional) teacher."""
    total = sum(F.cross_entropy(forward(model, labels[i:i + batch_size], tokens[i:i + batch_size]).flatten(0, 1),
                                tokens[i:i + batch_size].flatten(), reduction="sum").item()
                for i in range(0, len(tokens), batch_size))
    return total / tokens.numel()
