"""Files on disk: atomic writes, weights-only checkpoint loading, self-describing JSON sidecars.

Every file a stage writes goes to a temporary name in the same folder and is renamed into place, so a killed
stage never leaves a half-written file under a name a later stage would take for complete. Weights are saved
the way the published LlamaGen checkpoints are ({"model": state_dict}), so our own teachers and the published
ones load through the same code, always with torch.load(weights_only=True): no arbitrary pickle.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from dd.download import download

# Wrappers the published checkpoints put around their state_dict (LlamaGen uses "model", some files "module"
# or "state_dict"; VAR's are raw state_dicts).
STATE_DICT_WRAPPERS = ("model", "module", "state_dict")


@contextmanager
def atomic_destination(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on success os.replace it onto `path`.

    The temporary name keeps the suffix (savers pick the format from it) and starts with a dot, and sits in
    the same folder, because os.replace is only atomic within one file system.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(descriptor)
    os.chmod(temporary_name, 0o644)   # mkstemp makes 0600; outputs are ordinary files
    try:
        yield Path(temporary_name)
        os.replace(temporary_name, path)
    finally:
        Path(temporary_name).unlink(missing_ok=True)


def atomic_write(path: str | Path, write) -> Path:
    """Call write(temporary_path), then rename the file onto `path`."""
    with atomic_destination(path) as temporary:
        write(temporary)
    return Path(path)


def save_json(path: str | Path, data) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def save_torch(path: str | Path, data) -> Path:
    def write(temporary: Path) -> None:
        # Through a file object: given a path, torch.save names the archive's root folder after the (random)
        # temporary file, so equal tensors would give different bytes and DVC a new hash on every rerun.
        with open(temporary, "wb") as file:
            torch.save(data, file)
    return atomic_write(path, write)


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


def with_weights(build: Callable[[], nn.Module], state_dict: dict) -> nn.Module:
    """build()'s module holding state_dict's weights (strict key and shape matching), without first drawing the
    random init those weights replace.

    The module is built on the meta device (shapes, no memory, no draws: var-d30 in 1.6 s where its init takes
    41 s on 2 CPU cores) and adopts the file's tensors (assign=True), cast to the dtypes the model declares, so
    the weights are held once, not twice. Buffers the file does not hold (non-persistent ones, computed from the
    config) must be made on an explicit device by the model (GPT's RoPE table); one left on meta is an error.
    """
    with torch.device("meta"):
        module = build()
    declared = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    state_dict = {key: value.to(declared[key].dtype) if key in declared and value.is_floating_point()
                  and declared[key].is_floating_point() else value for key, value in state_dict.items()}
    module.load_state_dict(state_dict, strict=True, assign=True)
    unset = [name for name, tensor in [*module.named_parameters(), *module.named_buffers()] if tensor.is_meta]
    if unset:
        raise RuntimeError(f"{type(module).__name__} has tensors that are neither in the checkpoint nor made on a "
                           f"real device: {', '.join(unset)}")
    return module


def load_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the stage that writes it (see `dvc status`)")
    return json.loads(path.read_text())


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_published(url: str, sha256: str, folder: str | Path, build: Callable[[], nn.Module],
                    progress: bool = True) -> dict:
    """Download a published checkpoint into `folder` and prove it fits the model build() makes (strict keys and
    shapes).

    Returns the description a stage writes, last, into its sidecar json: until then nothing in `folder` names
    the file, so a failed or partial download is never taken for complete (the download itself keeps only a
    FILE.part for resuming, and renames after the sha256 check).
    """
    path = download(url, Path(folder) / Path(urllib.parse.urlparse(url).path).name, sha256=sha256 or None,
                    progress=progress)
    try:
        model = with_weights(build, load_state_dict(path))
    except RuntimeError as error:
        with torch.device("meta"):                                    # only its class name
            name = type(build()).__name__
        first_problems = " ".join(line.strip() for line in str(error).splitlines()[:2])
        raise ValueError(f"{path} (from {url}) does not fit the {name} preset: {first_problems} ... Is the URL the "
                         "right checkpoint for this teacher?") from None
    return {"weights": path.name, "url": url, "sha256": file_sha256(path),
            "parameters": sum(p.numel() for p in model.parameters())}
