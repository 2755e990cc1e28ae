"""The DD pair dataset: noise sequences and the tokens the teacher's flow map sends them to (method.md 3-4).

Pair i is (noise_i, tokens_i, label_i): noise_i ~ N(0, I) of shape (L, d) from the per-sample generator
(seed, i), label_i = i % num_classes, and tokens_i the deterministic image of noise_i under a sequence map
(the family's pair_map, dd/families/sampling.py: the teacher's loop with each token the flow map of its own noise). This module writes and
reads the pairs and knows nothing of teachers or the flow map, so the student, which reads pairs, does not run
(and so does not depend on) their code. Pair i depends only on (params, i), never on the batch it was computed
in, so shards can be split across processes (torchrun) without changing a byte, and a pair set can grow (or
shrink) by changing num_pairs alone: the shards whose range is unchanged are kept.

On disk: webdataset tars of `shard_size` pairs (members KEY.noise.npy float32 (L, d), KEY.tokens.npy int16
(L,), KEY.cls), each written to a temporary name and renamed when complete, then its checksum file
(pairs-NNNNN.json: count and sha256); provenance.json, the record of the params and code that make the shards
(dd/provenance.py); and manifest.json (counts and sha256 of every shard) written last. Readers take the tokens
and regenerate the noise from (seed, i) (`Pairs`). A rerun keeps a shard
only if the record is unchanged (everything that changes a pair's bytes: teacher, codebook, recipe, flow, seed,
shard_size and the code; not num_pairs or batch_size) and the shard still matches its checksum; it redoes every
other shard and says why. Readers accept only shards listed in the manifest with a matching checksum.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import webdataset as wds
from torch import Tensor

from dd.checkpoint import atomic_write, file_sha256, save_json
from dd.config import PairsConfig
from dd.config import fingerprint as params_fingerprint
from dd.progress import progress_bar
from dd.provenance import changes
from dd.seeding import balanced_labels, per_sample_noise

MANIFEST = "manifest.json"
PROVENANCE = "provenance.json"

# pair_map(labels (B,), noise (B, L, d)) -> tokens (B, L): a sequence map bound to its teacher, on its device
PairMap = Callable[[Tensor, Tensor], Tensor]


class CorruptPairsError(RuntimeError):
    """Pair shards that are missing, incomplete or altered; the message says which and how to regenerate."""


def shard_name(shard: int) -> str:
    return f"pairs-{shard:05d}.tar"


def checksum_name(shard: int) -> str:
    return f"pairs-{shard:05d}.json"


def write_pairs(pair_map: PairMap, num_tokens: int, code_dim: int, num_classes: int, config: PairsConfig,
                out_dir: Path, map_record: dict, progress: bool = True, device: torch.device | str = "cpu") -> dict:
    """Generate every missing or damaged shard of this process (shards are dealt round-robin over torchrun ranks).

    map_record (dd.provenance.record) says what pair_map computes (teacher, codebook, recipe, flow) and with which
    code; the shards' own params that change their bytes (seed, shard_size) are folded in here, so no caller can
    forget them. pair_map runs on `device`; noise (num_tokens, code_dim) per pair is drawn on the CPU."""
    out_dir = Path(out_dir)
    provenance = {**map_record, "params": params_fingerprint(map_record["params"], config.seed, config.shard_size)}
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    num_shards = -(-config.num_pairs // config.shard_size)
    _claim(out_dir, provenance, num_shards, rank)
    mine = [s for s in range(num_shards)
            if s % world_size == rank and not _is_kept(out_dir, s, len(_shard_range(s, config)))]

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
            save_json(out_dir / checksum_name(shard),
                      {"count": len(samples), "sha256": file_sha256(out_dir / shard_name(shard))})

    # Once every rank's shards exist, rank 0 checksums them into the manifest that readers trust.
    if dist.is_initialized():
        dist.barrier()
    if rank == 0:
        _write_manifest(out_dir, config, num_shards, provenance)
    if dist.is_initialized():
        dist.barrier()
    return json.loads((out_dir / MANIFEST).read_text())


@dataclass(frozen=True)
class Pairs:
    """A pair set as its readers hold it: the tokens and classes, and the noise as a function of the pair index.

    Pair i's noise is per_sample_noise(seed, i), which write_pairs drew and stored beside its tokens, so readers
    regenerate it for the rows they use instead of holding it: at the paper's scale (1.2M pairs) VAR-d16's noise
    (680 x 32 float32 a pair) is 104 GB, its tokens 1.6 GB. read_pairs checks the stored noise of the first pair
    of every shard against the regenerated one, so a set drawn any other way is refused rather than misread."""
    tokens: Tensor                  # (N, L) int64
    labels: Tensor                  # (N,)
    seed: int
    code_dim: int

    def noise(self, indices: Tensor) -> Tensor:
        """The noise of pairs `indices` (B,) -> (B, L, d) float32, on the CPU."""
        return per_sample_noise(self.seed, indices.tolist(), self.tokens.shape[1], self.code_dim)


def read_pairs(pairs_dir: Path) -> Pairs:
    """All pairs, checked against the manifest (counts, checksums, and the noise's seed)."""
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
    tokens, labels, code_dim = [], [], 0
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        index = int(sample["__key__"])
        if index % manifest["shard_size"] == 0:                          # each shard's first pair
            stored = torch.from_numpy(np.load(io.BytesIO(sample["noise.npy"])))
            code_dim = stored.shape[1]
            if not torch.equal(stored, per_sample_noise(manifest["seed"], [index], *stored.shape)[0]):
                raise CorruptPairsError(f"pair {index} in {pairs_dir} holds noise other than its seed's "
                                        f"({manifest['seed']}); rerun `dd pairs` to regenerate the set")
        tokens.append(np.load(io.BytesIO(sample["tokens.npy"])))
        labels.append(int(sample["cls"]))
    if len(labels) != manifest["num_pairs"]:
        raise CorruptPairsError(f"{pairs_dir} holds {len(labels)} pairs, its manifest says {manifest['num_pairs']}; "
                                "rerun `dd pairs`")
    return Pairs(torch.from_numpy(np.stack(tokens).astype(np.int64)), torch.tensor(labels, dtype=torch.long),
                 manifest["seed"], code_dim)


# ---------------------------------------------------------------------------------------------------------

def _shard_range(shard: int, config: PairsConfig) -> range:
    return range(shard * config.shard_size, min((shard + 1) * config.shard_size, config.num_pairs))


def _claim(out_dir: Path, provenance: dict, num_shards: int, rank: int) -> None:
    """Keep shards only if they were made under the same record (params and code), and only those of the first
    num_shards; anything else in the folder from an older layout goes too.

    The manifest goes as well (it is rewritten once every shard exists): until then the set counts as incomplete.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    record_path = out_dir / PROVENANCE
    if rank == 0:
        previous = _read_record(record_path)
        reason = None if previous is None and not any(out_dir.iterdir()) else changes(previous, provenance)
        shards = sorted(out_dir.glob("pairs-*.tar"))
        stale = shards if reason else [p for p in shards if p.name >= shard_name(num_shards)]
        if stale:
            print(f"{out_dir}: removing {len(stale)} shards: " + (f"the set {reason}" if reason else "past num_pairs"))
        keep = {record_path} | {out_dir / name for s in range(num_shards) if not reason
                                for name in (shard_name(s), checksum_name(s))}
        for path in out_dir.iterdir():
            if path not in keep and path.is_file():
                path.unlink()
        if previous != provenance:
            save_json(record_path, provenance)
    if dist.is_initialized():
        dist.barrier()


def _is_kept(out_dir: Path, shard: int, count: int) -> bool:
    """Whether a shard from an earlier run can stay: it holds `count` pairs (a last shard written for a smaller
    num_pairs holds fewer) and matches the checksum written with it. Anything else is removed, saying why."""
    path, checksum_path = out_dir / shard_name(shard), out_dir / checksum_name(shard)
    if not path.exists():
        checksum_path.unlink(missing_ok=True)
        return False
    checksum = _read_record(checksum_path)
    if checksum is not None and checksum["count"] == count and file_sha256(path) == checksum["sha256"]:
        return True
    why = ("has no checksum (its run was stopped before writing it)" if checksum is None else
           f"holds {checksum['count']} pairs, not {count}" if checksum["count"] != count else
           "does not match its checksum (damaged or altered)")
    print(f"{path} {why}; regenerating it")
    path.unlink()
    checksum_path.unlink(missing_ok=True)
    return False


def _read_record(path: Path) -> dict | None:
    """A small JSON file this module wrote (atomically), or None where there is none or it was damaged since."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_tar(path: Path, samples: list[dict]) -> None:
    # Fixed mtime and ordering make the tar bytes a function of the samples alone.
    with wds.TarWriter(str(path), mtime=0.0) as writer:
        for sample in samples:
            writer.write(sample)


def _write_manifest(out_dir: Path, config: PairsConfig, num_shards: int, provenance: dict) -> None:
    """The list readers trust, from the shards' checksum files (each verified or written by this run)."""
    shards = []
    for shard in range(num_shards):
        path = out_dir / checksum_name(shard)
        if not path.exists():
            raise CorruptPairsError(f"{out_dir / shard_name(shard)} was not written; rerun `dd pairs`")
        shards.append({"name": shard_name(shard), **json.loads(path.read_text())})
    manifest = {"num_pairs": config.num_pairs, "shard_size": config.shard_size, "seed": config.seed,
                "params_fingerprint": provenance["params"], "shards": shards}
    save_json(out_dir / MANIFEST, manifest)
