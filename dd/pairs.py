"""The DD pair dataset: noise sequences and the tokens the teacher's flow map sends them to (method.md 3-4).

Pair i is (noise_i, tokens_i, label_i): noise_i ~ N(0, I) of shape (L, d) from the per-sample generator
(seed, i), label_i = i % num_classes, and tokens_i the deterministic image of noise_i under the sequence map:
the teacher's loop in which each token is the flow map of its own noise under the teacher's recipe
distribution given the tokens before it (`sequence_map`, raster order) or given the coarser scales
(`scale_sequence_map`, next scale). Pair i depends only on (params, i), never on the batch it was computed in,
so shards can be split across processes (torchrun) without changing a byte, and a pair set can grow (or
shrink) by changing num_pairs alone: the shards whose range is unchanged are kept.

On disk: webdataset tars of `shard_size` pairs (members KEY.noise.npy float32 (L, d), KEY.tokens.npy int16
(L,), KEY.cls), written to a temporary name and renamed when complete, plus manifest.json (counts, sha256 of
every shard, the params fingerprint) written last. A rerun keeps complete shards made under the same
fingerprint (everything that changes a pair's bytes: teacher, recipe, flow, seed, shard_size; not num_pairs
or batch_size) and redoes the rest; readers accept only shards listed in the manifest with a matching checksum.
"""
from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import webdataset as wds
from torch import Tensor

from dd.checkpoint import atomic_write, file_sha256, save_json
from dd.config import FlowConfig, PairsConfig, RecipeConfig
from dd.config import fingerprint as params_fingerprint
from dd.flow import flow_map
from dd.models.llamagen import GPT
from dd.models.var import VAR
from dd.models.var_vqvae import MultiScaleVQVAE
from dd.progress import progress_bar
from dd.sampling import balanced_labels, per_sample_noise
from dd.teachers import generate
from dd.var_teacher import generate_var

MANIFEST = "manifest.json"

# pair_map(labels (B,), noise (B, L, d)) -> tokens (B, L): a sequence map bound to its teacher, on its device
PairMap = Callable[[Tensor, Tensor], Tensor]


class CorruptPairsError(RuntimeError):
    """Pair shards that are missing, incomplete or altered; the message says which and how to regenerate."""


@torch.inference_mode()
def sequence_map(teacher: GPT, recipe: RecipeConfig, codebook: Tensor, flow: FlowConfig, labels: Tensor, noise: Tensor) -> Tensor:
    """Noise (B, L, d) -> tokens (B, L): each token the flow map of its noise under the teacher's next-token law."""
    def choose(probs: Tensor, i: int) -> Tensor:
        return flow_map(noise[:, i], probs, codebook, num_steps=flow.solver_steps, t_end=flow.t_end,
                        support_size=recipe.top_k, compile=flow.compile)
    return generate(teacher, labels, recipe, choose)


@torch.inference_mode()
def scale_sequence_map(teacher: VAR, vqvae: MultiScaleVQVAE, codebook: Tensor, recipe: RecipeConfig, flow: FlowConfig,
                       labels: Tensor, noise: Tensor) -> Tensor:
    """The next-scale version (method.md section 3): noise (B, L, E) -> tokens (B, L), scales coarse to fine.

    At each scale every token is the flow map of its own noise under the teacher's distribution for it given
    the coarser scales (VAR's tokens of one scale are independent given those). codebook (V, E): the code
    vectors the flow map works in (the tokenizer's `codebook`, dd/var_tokenizer.py); the VQVAE itself builds
    the teacher's next-scale inputs from its own codes.
    """
    slices, codebook = teacher.config.scale_slices, codebook.float()

    def choose(probs: Tensor, k: int) -> Tensor:                      # probs (B*P, V) of scale k
        start, stop = slices[k]
        return flow_map(noise[:, start:stop].flatten(0, 1), probs, codebook, num_steps=flow.solver_steps,
                        t_end=flow.t_end, support_size=recipe.top_k, compile=flow.compile)
    return torch.cat(generate_var(teacher, vqvae, labels, recipe, choose), dim=1)      # (B, L)


def shard_name(shard: int) -> str:
    return f"pairs-{shard:05d}.tar"


def write_pairs(pair_map: PairMap, num_tokens: int, code_dim: int, num_classes: int, config: PairsConfig,
                out_dir: Path, map_fingerprint: str, progress: bool = True, device: torch.device | str = "cpu") -> dict:
    """Generate every missing shard of this process (shards are dealt round-robin over torchrun ranks).

    map_fingerprint identifies what pair_map computes (teacher, codebook, recipe, flow); the shards' own params
    that change their bytes (seed, shard_size) are folded in here, so no caller can forget them. pair_map runs
    on `device`; noise (num_tokens, code_dim) per pair is drawn on the CPU and moved there."""
    out_dir = Path(out_dir)
    fingerprint = params_fingerprint(map_fingerprint, config.seed, config.shard_size)
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    num_shards = -(-config.num_pairs // config.shard_size)
    _claim(out_dir, fingerprint, num_shards, rank)
    mine = [s for s in range(num_shards)
            if s % world_size == rank and not _is_complete(out_dir / shard_name(s), len(_shard_range(s, config)))]

    with progress_bar(f"pairs (rank {rank})", sum(_shard_range(s, config).stop - _shard_range(s, config).start for s in mine),
                      enabled=progress) as advance:
        for shard in mine:
            indices = _shard_range(shard, config)
            samples = []
            for start in range(indices.start, indices.stop, config.batch_size):
                batch = range(start, min(start + config.batch_size, indices.stop))
                labels = balanced_labels(batch, num_classes)
                noise = per_sample_noise(config.seed, batch, num_tokens, code_dim)
                tokens = pair_map(labels.to(device), noise.to(device)).cpu()
                samples += [{"__key__": f"{i:09d}", "noise.npy": noise[b].numpy(),
                             "tokens.npy": tokens[b].numpy().astype(np.int16), "cls": int(labels[b])}
                            for b, i in enumerate(batch)]
                advance(len(batch))
            atomic_write(out_dir / shard_name(shard), lambda tmp: _write_tar(tmp, samples))

    # Once every rank's shards exist, rank 0 checksums them into the manifest that readers trust.
    if dist.is_initialized():
        dist.barrier()
    if rank == 0:
        _write_manifest(out_dir, config, num_shards, fingerprint)
    if dist.is_initialized():
        dist.barrier()
    return json.loads((out_dir / MANIFEST).read_text())


def read_pairs(pairs_dir: Path) -> tuple[Tensor, Tensor, Tensor]:
    """All pairs, checked against the manifest: noise (N, L, d) float32, tokens (N, L) int64, labels (N,)."""
    pairs_dir = Path(pairs_dir)
    manifest_path = pairs_dir / MANIFEST
    if not manifest_path.exists():
        raise CorruptPairsError(f"{manifest_path} is missing: the pair set is incomplete; rerun `dd pairs` "
                                "(complete shards are kept)")
    manifest = json.loads(manifest_path.read_text())
    urls = []
    for shard in manifest["shards"]:
        path = pairs_dir / shard["name"]
        if not path.exists() or file_sha256(path) != shard["sha256"]:
            raise CorruptPairsError(f"{path} is missing or does not match its checksum in {manifest_path}; delete it "
                                    "and rerun `dd pairs` to regenerate that shard")
        urls.append(str(path))
    noise, tokens, labels = [], [], []
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        noise.append(np.load(io.BytesIO(sample["noise.npy"])))
        tokens.append(np.load(io.BytesIO(sample["tokens.npy"])))
        labels.append(int(sample["cls"]))
    if len(labels) != manifest["num_pairs"]:
        raise CorruptPairsError(f"{pairs_dir} holds {len(labels)} pairs, its manifest says {manifest['num_pairs']}; "
                                "rerun `dd pairs`")
    return (torch.from_numpy(np.stack(noise)), torch.from_numpy(np.stack(tokens).astype(np.int64)),
            torch.tensor(labels, dtype=torch.long))


# ---------------------------------------------------------------------------------------------------------

def _shard_range(shard: int, config: PairsConfig) -> range:
    return range(shard * config.shard_size, min((shard + 1) * config.shard_size, config.num_pairs))


def _claim(out_dir: Path, fingerprint: str, num_shards: int, rank: int) -> None:
    """Keep shards only if they were made under the same fingerprint, and only those of the first num_shards.

    The manifest goes too (it is rewritten once every shard exists): until then the set counts as incomplete.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / "params_fingerprint.txt"
    if rank == 0:
        previous = state_path.read_text().strip() if state_path.exists() else None
        shards = sorted(out_dir.glob("pairs-*.tar"))
        stale = shards if previous != fingerprint else [p for p in shards if p.name >= shard_name(num_shards)]
        if stale:
            reason = "were made with other params" if previous != fingerprint else "lie past num_pairs"
            print(f"{out_dir}: {len(stale)} shards {reason}; removing them")
        for path in stale + sorted(out_dir.glob(MANIFEST)):
            path.unlink()
        if previous != fingerprint:
            atomic_write(state_path, lambda tmp: tmp.write_text(fingerprint + "\n"))
    if dist.is_initialized():
        dist.barrier()


def _is_complete(path: Path, count: int) -> bool:
    """The shard exists and holds `count` pairs (a last shard written for a smaller num_pairs holds fewer)."""
    if not path.exists():
        return False
    with tarfile.open(path) as tar:
        return sum(name.endswith(".cls") for name in tar.getnames()) == count


def _write_tar(path: Path, samples: list[dict]) -> None:
    # Fixed mtime and ordering make the tar bytes a function of the samples alone.
    with wds.TarWriter(str(path), mtime=0.0) as writer:
        for sample in samples:
            writer.write(sample)


def _write_manifest(out_dir: Path, config: PairsConfig, num_shards: int, fingerprint: str) -> None:
    shards = []
    for shard in range(num_shards):
        path = out_dir / shard_name(shard)
        if not path.exists():
            raise CorruptPairsError(f"{path} was not written; rerun `dd pairs`")
        count = len(_shard_range(shard, config))
        shards.append({"name": path.name, "count": count, "sha256": file_sha256(path)})
    manifest = {"num_pairs": config.num_pairs, "shard_size": config.shard_size, "seed": config.seed,
                "fingerprint": fingerprint, "shards": shards}
    save_json(out_dir / MANIFEST, manifest)
