"""What made an artifact: the code a stage runs and the params it read, as one record.

A stage's code is its module pipeline/<stage>.py and every project module (dd.*, pipeline.*) that it imports,
transitively, read from the source with `ast` (nothing is imported to find out; imports inside functions
count too). This is the one source of truth for two things that must agree:

- dvc.yaml: each stage's code deps are exactly `stage_code_files(stage)`, so DVC reruns a stage whenever code it
  runs changes (tests/test_provenance.py fails, naming the file, when dvc.yaml misses one or lists a stale one;
  `dd code-deps STAGE` prints the list);
- resumable state: a checkpoint, a pair shard set or anything else a stage resumes carries `record(...)`, the
  params fingerprint and the hash of every code file, and a rerun keeps it only if both are unchanged
  (`changes` says what differs), so a resumed artifact is always one the current code and params would make.

The command line (dd/cli.py) only dispatches to the stage's module, so it is not part of any stage's code.
"""
from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from dd.config import fingerprint

PACKAGES = ("dd", "pipeline")
# The directory that holds the running dd/ and pipeline/ packages: the code that actually runs is hashed.
ROOT = Path(__file__).resolve().parents[1]


def stage_entry(stage: str, root: Path = ROOT) -> Path:
    path = root / "pipeline" / f"{stage}.py"
    if not path.exists():
        raise ValueError(f"no stage '{stage}': {path} does not exist")
    return path


def imported_names(path: Path) -> set[str]:
    """Dotted names a module may import from the project: `import a.b`, `from a import b` (a.b may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.split(".")[0] in PACKAGES}


def module_files(name: str, root: Path = ROOT) -> list[Path]:
    """The files that importing `name` runs: its packages' __init__.py files and the module itself."""
    parts, files = name.split("."), []
    for depth in range(1, len(parts) + 1):
        package = root.joinpath(*parts[:depth])
        if (package / "__init__.py").exists():
            files.append(package / "__init__.py")
        elif depth == len(parts) and package.with_suffix(".py").exists():
            files.append(package.with_suffix(".py"))
    return files


def code_files(entry: Path, root: Path = ROOT) -> list[str]:
    """`entry` (with its packages' __init__.py files) and every project file it imports, transitively: sorted
    paths relative to root."""
    entry, root = Path(entry).resolve(), root.resolve()
    inside = entry.is_relative_to(root) and entry.parent != root
    seen, todo = set(), [entry, *(module_files(".".join(entry.relative_to(root).with_suffix("").parts), root)
                                  if inside else [])]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += [file.resolve() for name in imported_names(path) for file in module_files(name, root)]
    return sorted(path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path) for path in seen)


def stage_code_files(stage: str, root: Path = ROOT) -> list[str]:
    return code_files(stage_entry(stage, root), root)


def code_hashes(entry: Path, root: Path = ROOT) -> dict[str, str]:
    """{file: sha256 of its bytes} of everything `entry` runs."""
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest()[:16] for name in code_files(entry, root)}


def dvc_deps_problems(stages: dict, root: Path = ROOT) -> list[str]:
    """Where dvc.yaml's `stages` (parsed) and the code each stage runs disagree: a missing or a stale code dep."""
    problems = []
    for stage, body in stages.items():
        deps = {dep for dep in body.get("do", body).get("deps", []) if dep.endswith(".py")}
        runs = set(stage_code_files(stage, root))
        problems += [f"stage {stage} runs {name} but dvc.yaml does not list it" for name in sorted(runs - deps)]
        problems += [f"stage {stage} lists {name}, which it does not run" for name in sorted(deps - runs)]
    return problems


def record(entry: Path, *params) -> dict:
    """What makes an artifact: the params (config sections, file checksums, ...) and the code of `entry` (a stage's
    module, `stage_entry(stage)`, or a script's own file)."""
    return {"params": fingerprint(*params), "code": code_hashes(entry)}


def changes(previous: dict | None, current: dict) -> str | None:
    """Why state recorded as `previous` is not what `current` would make (None: it is)."""
    if not isinstance(previous, dict) or set(previous) != set(current):
        return "has no record of the code and params that made it (an older version wrote it)"
    if previous["params"] != current["params"]:
        return "was made with other params"
    if previous["code"] != current["code"]:
        old, new = previous["code"], current["code"]
        changed = sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))
        return f"was made by other code ({', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''} changed)"
    return None
