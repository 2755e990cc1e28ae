"""Loading a published teacher: built with its random init then given the file's weights, against built on the
meta device and adopting them (dd.checkpoint.with_weights, what the stages do).

Writes the preset's random weights in its published format once, then loads them in fresh processes (so each
peak RSS is that load's alone), the two ways interleaved, and prints the median seconds and peak memory of each.

    python scripts/load_speed.py var-d16 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from dd.teachers import build_model

LOAD = """
import json, resource, sys, time
import torch
from dd.checkpoint import load_state_dict, with_weights
from dd.teachers import build_model
preset, path, way = sys.argv[1:]
started = time.perf_counter()
if way == "init_then_load":
    model = build_model(preset)
    model.load_state_dict(load_state_dict(path), strict=True)
else:
    model = with_weights(lambda: build_model(preset), load_state_dict(path))
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "checksum": float(sum(p.double().sum() for p in model.parameters()))}))
"""
WAYS = ("init_then_load", "with_weights")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", help="a teacher preset, e.g. var-d16, llamagen-b")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "weights.pth"
        torch.save(build_model(args.preset).state_dict(), path)
        file_gib = path.stat().st_size / 2**30
        runs = {way: [] for way in WAYS}
        for _ in range(args.repeats):
            for way in WAYS:
                output = subprocess.run([sys.executable, "-c", LOAD, args.preset, str(path), way], check=True,
                                        capture_output=True, text=True).stdout
                runs[way].append(json.loads(output.splitlines()[-1]))
    checksums = {run["checksum"] for way in WAYS for run in runs[way]}
    if len(checksums) != 1:
        raise SystemExit(f"the two ways loaded different weights: checksums {checksums}")
    print(f"{args.preset}, {file_gib:.2f} GiB file; "
          f"median of {args.repeats}, interleaved, one process each")
    medians = {way: statistics.median(run["seconds"] for run in runs[way]) for way in WAYS}
    for way in WAYS:
        peak = max(run["peak_rss_gib"] for run in runs[way])
        print(f"  {way:<16}{medians[way]:>8.2f} s   peak RSS {peak:.2f} GiB")
    print(f"  with_weights is {medians['init_then_load'] / medians['with_weights']:.1f}x faster")


if __name__ == "__main__":
    main()
