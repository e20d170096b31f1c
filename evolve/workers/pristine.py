"""The pristine harness: held in the worker's memory from its first run, laid out for each.

An experiment runs in a fresh directory, but a child can still find the template directory
itself and rewrite prepare.py there. The worker keeps the harness files it first saw (checked
against the controller's hash) in memory and lays out every experiment from that copy, so no
run is scored by an edited harness — and the engine never writes to the user's template.
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


def pinned_harness(template_dir: str | Path, expected: str = "") -> dict[str, bytes]:
    """The harness files as this worker first saw them (relative path -> content).

    The first call reads the template and pins it in memory (it must match `expected`, the
    controller's hash, when given); later calls return the pinned copy, whatever happened to
    the directory since. Experiments are laid out from this copy, so a child that rewrote
    the template on disk changes no later run, and the user's template is never written to.
    Raises HarnessChanged when the pinned harness is not the controller's.
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
        elif expected and files_hash(pinned) != expected:
            raise HarnessChanged(f"the controller's harness changed (hash {expected[:16]}); "
                                 "this worker holds another: restart the workers")
        return pinned


def write_harness(files: dict[str, bytes], directory: Path) -> set[str]:
    """Lay the pinned harness out in `directory`; the top-level names it occupies."""
    top = set()
    for name, content in files.items():
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        top.add(Path(name).parts[0])
    return top


def harness_changes(files: dict[str, bytes], directory: Path) -> list[str]:
    """Harness files under `directory` that no longer hold the pinned content (changed or
    gone): after a run, in its experiment folder or the template itself."""
    changed = []
    for name, content in sorted(files.items()):
        path = directory / name
        try:
            same = not path.is_symlink() and path.read_bytes() == content
        except OSError:
            same = False
        if not same:
            changed.append(name)
    return changed
