"""Hashes of a run's artifacts, to show that a change of code changes none of them (a refactor's evidence).

Prints one JSON object: for each teacher of the run, the sha256 (first 16 hex digits) of every pair shard's bytes,
of the tensors of the tokenizer, teacher and student weights (names and values, not the file: torch.save's
bytes may differ for the same tensors), of the arrays of every sample file, and eval.json's FIDs. Resumable
state (checkpoint.pt, provenance.json, the shards' checksum files) is left out: it records the code that made it.

    python scripts/artifact_hashes.py /tmp/run_before > before.json
    python scripts/artifact_hashes.py /tmp/run_after > after.json && diff before.json after.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from dd.checkpoint import load_state_dict


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def teacher_hashes(run: Path, teacher: str) -> dict:
    data, hashes = run / "data" / teacher, {}
    for shard in sorted((data / "pairs").glob("pairs-*.tar")):
        hashes[f"pairs/{shard.name}"] = digest(shard.read_bytes())
    for stage, name in (("tokenizer", "tokenizer.pt"), ("teacher", "model.pt"), ("student", "model.pt")):
        if (data / stage / name).exists():
            state = load_state_dict(data / stage / name)
            hashes[f"{stage}/{name}"] = digest(b"".join(key.encode() + value.numpy().tobytes()
                                                        for key, value in sorted(state.items())))
    for folder in ("samples", "samples_dd"):
        for path in sorted((data / folder).glob("*.npz")):
            with np.load(path) as arrays:
                hashes[f"{folder}/{path.name}"] = digest(b"".join(arrays[key].tobytes() for key in sorted(arrays.files)))
    evaluation = run / "metrics" / teacher / "eval.json"
    if evaluation.exists():
        table = json.loads(evaluation.read_text())
        hashes["eval.json fid"] = {method: row["fid"] for method, row in table.items() if "fid" in row}
    return hashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run's root: the folder holding data/ and metrics/")
    args = parser.parse_args()
    teachers = sorted(path.name for path in (args.run / "data").iterdir() if (path / "params").is_dir())
    if not teachers:
        raise SystemExit(f"{args.run / 'data'} holds no teacher's stage outputs: give a run's root folder")
    print(json.dumps({teacher: teacher_hashes(args.run, teacher) for teacher in teachers}, indent=1))


if __name__ == "__main__":
    main()
