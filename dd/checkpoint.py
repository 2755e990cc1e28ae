"""Files on disk: atomic writes, weights-only checkpoint loading, self-describing JSON sidecars.

Every file a stage writes goes to a temporary name in the same folder and is renamed into place, so a killed
stage never leaves a half-written file under a name a later stage would take for complete. Weights are saved
the way the published LlamaGen checkpoints are ({"model": state_dict}), so our own teachers and the published
ones load through the same code, always with torch.load(weights_only=True): no arbitrary pickle.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

# Wrappers the published checkpoints put around their state_dict (LlamaGen uses "model", some files "module"
# or "state_dict"; VAR's are raw state_dicts).
STATE_DICT_WRAPPERS = ("model", "module", "state_dict")


def atomic_write(path: str | Path, write) -> Path:
    """Call write(temporary_path), then rename the file to `path` (same folder, so the rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def save_json(path: str | Path, data) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def save_torch(path: str | Path, data) -> Path:
    return atomic_write(path, lambda tmp: torch.save(data, tmp))


def save_weights(path: str | Path, state_dict: dict, meta: dict) -> Path:
    """Weights as {"model": state_dict} plus a sibling .json describing them (config, step, metrics)."""
    path = Path(path)
    save_torch(path, {"model": {k: v.detach().cpu() for k, v in state_dict.items()}})
    save_json(path.with_suffix(".json"), meta)
    return path


def load_state_dict(path: str | Path) -> dict:
    """A state_dict from our files or a published checkpoint, unwrapped; never unpickles arbitrary objects."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the stage that writes it (see `dvc status`)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise ValueError(f"{path} is not a readable weights file ({error}); delete it and rerun its stage") from error
    for key in STATE_DICT_WRAPPERS:
        if isinstance(data, dict) and key in data and isinstance(data[key], dict):
            return data[key]
    return data


def load_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the stage that writes it (see `dvc status`)")
    return json.loads(path.read_text())
