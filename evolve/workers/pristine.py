"""The pristine harness: held in the worker's memory from its first run, restored before each.

An experiment runs in a fresh copy of the template, but a child can still find the template
directory itself and rewrite prepare.py there. The worker keeps the harness files it first
saw (checked against the controller's hash) in memory, and puts back any file that changed
before copying the template for the next run, so no run is scored by an edited harness.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

# Template files that are not harness: the seed scripts and the research brief.
NOT_HARNESS = frozenset({"train.py", "train_cpu.py", "program.md"})
_SKIPPED_PARTS = frozenset({"__pycache__", ".git", ".pytest_cache", ".ruff_cache"})

_snapshots: dict[str, dict[str, bytes]] = {}
_lock = threading.Lock()


class HarnessChanged(RuntimeError):
    """The template on this node is not the controller's."""


def harness_files(template_dir: str | Path) -> dict[str, bytes]:
    """Relative path -> content of every harness file of a template."""
    root = Path(template_dir)
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] in NOT_HARNESS or _SKIPPED_PARTS & set(rel.parts) or rel.suffix == ".pyc":
            continue
        if path.is_file() and not path.is_symlink():
            files[rel.as_posix()] = path.read_bytes()
    return files


def files_hash(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name] + b"\0")
    return digest.hexdigest()


def template_hash(template_dir: str | Path) -> str:
    """sha256 over the harness files of a template (names and contents), caches skipped."""
    return files_hash(harness_files(template_dir))


def restore_harness(template_dir: str | Path, expected: str = "") -> list[str]:
    """Put the template's harness back as first seen; the files it had to restore.

    The first call pins what is on disk (it must match `expected` when given); raises
    HarnessChanged when the pinned harness is not the controller's.
    """
    key = str(Path(template_dir).resolve())
    with _lock:
        pinned = _snapshots.get(key)
        if pinned is None:
            pinned = harness_files(template_dir)
            if expected and files_hash(pinned) != expected:
                raise HarnessChanged(
                    f"the template {template_dir} on this node differs from the controller's "
                    f"(harness hash {files_hash(pinned)[:16]}, expected {expected[:16]}): "
                    "ship the same template to every node (docs/cluster.md)")
            _snapshots[key] = pinned
            return []
        if expected and files_hash(pinned) != expected:
            raise HarnessChanged(f"the controller's harness changed (hash {expected[:16]}); "
                                 "this worker holds another: restart the workers")
        current = harness_files(template_dir)
        if current == pinned:
            return []
        root = Path(template_dir)
        restored = []
        for name in sorted(set(current) - set(pinned)):
            (root / name).unlink(missing_ok=True)
            restored.append(name)
        for name, content in pinned.items():
            if current.get(name) != content:
                target = root / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.unlink(missing_ok=True)  # a symlink or read-only file planted in its place
                target.write_bytes(content)
                restored.append(name)
        return restored
