"""The data, tokenizer and harness every run is scored with, identified by hash.

Every node prepares its data once (the harness's locked `prepare.py prepare`, run from the
pristine template with the network allowed) and names it by a fingerprint: the hash of the
cache's manifest for synthetic and text data (the manifest holds the sha256 of every file),
the manifest's `content_hash` (data + tokenizer) for climbmix. A worker compares that
fingerprint with the controller's before its first run, and before every run checks that no
file of the cache changed since it was verified (size, mtime, ctime and inode: ctime cannot be
set back by an unprivileged process). A changed cache (a child rewrote it) is rebuilt from
scratch before the next run, so what one experiment writes never changes another's score.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from evolve.workers.pristine import pinned_harness, template_hash, write_harness
from evolve.workers.sandbox import scrubbed_env

IGNORED_SUFFIXES = (".lock", ".tmp")
PREPARE_TIMEOUT_S = 6 * 3600.0  # a first climbmix download and tokenization is long

# Run inside the template directory: prepare the data (locked, idempotent) and say where it
# lives. It spies on the harness's cache builder instead of re-deriving its cache keys.
_LOCATE = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, ".")
profile, data, cache_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3]).expanduser()
try:
    import prepare, profiles, sources
except ImportError:
    print(json.dumps({"kind": "none"})); sys.exit(0)
seen = []
build = sources._build_locked
def spy(directory, builder):
    seen.append(str(directory))
    return build(directory, builder)
sources._build_locked = spy
prepare.load_corpus(data, profiles.PROFILES[profile], cache_dir)
if data == "climbmix":
    import climbmix
    manifest = climbmix.read_manifest(cache_dir)
    print(json.dumps({"kind": "climbmix", "dir": str(climbmix.data_root(cache_dir)),
                      "hash": manifest["content_hash"]}))
else:
    directory = Path(seen[-1])
    digest = __import__("hashlib").sha256((directory / "manifest.json").read_bytes()).hexdigest()
    print(json.dumps({"kind": "manifest", "dir": str(directory), "hash": digest}))
"""


class DataMismatch(RuntimeError):
    """This node's data or harness differs from the controller's: no run may be scored here."""


class DataPrepareError(DataMismatch):
    """The harness could not prepare the data at all (a bad path, no text, no download)."""


@dataclass(frozen=True)
class DataState:
    """A verified cache: its fingerprint and the stat of every file at verification."""

    fingerprint: str
    directory: str
    stats: tuple[tuple[str, int, int, int, int], ...]


_verified: dict[tuple[str, str, str, str], DataState] = {}
_lock = threading.Lock()


def default_cache_dir() -> str:
    """The harness's default (docs/contracts.md section 1)."""
    return os.environ.get("EVOLVE_CACHE_DIR") or str(Path.home() / ".cache" / "evolve")


def data_fingerprint(template_dir: str | Path, profile: str, data: str,
                     cache_dir: str | None = None, *, expected: str = "") -> str:
    """Prepare the data once on this node and return its fingerprint ("" for a template
    without a data cache). Raises DataMismatch when it differs from `expected` even after a
    rebuild from scratch."""
    return ensure_data(template_dir, profile, data, cache_dir, expected=expected).fingerprint


def ensure_data(template_dir: str | Path, profile: str, data: str, cache_dir: str | None = None,
                *, expected: str = "") -> DataState:
    """The verified data of this node, checked for changes since it was last verified."""
    cache = str(Path(cache_dir or default_cache_dir()).expanduser())
    key = (str(template_dir), profile, data, cache)
    with _lock:
        old = _verified.get(key)
        if old is not None:
            if _unchanged(old) and (not expected or old.fingerprint == expected):
                return old
            if not _unchanged(old):
                _discard(old, data)  # something wrote to it since it was verified: rebuild
        state = _prepare(template_dir, profile, data, cache)
        reference = expected or (old.fingerprint if old is not None else "")
        if state.directory and reference and state.fingerprint != reference:
            _discard(state, data)  # tampered with before this process saw it, or stale
            state = _prepare(template_dir, profile, data, cache)
        if reference and state.fingerprint != reference:
            raise DataMismatch(
                f"data {data!r} on this node has hash {state.fingerprint[:16]} but the controller's "
                f"is {reference[:16]} (cache {state.directory}); the nodes prepared different data "
                "or tokenizer: delete that cache on this node, or point EVOLVE_CACHE_DIR at one "
                "shared copy")
        _verified[key] = state
        return state


def _prepare(template_dir: str | Path, profile: str, data: str, cache: str) -> DataState:
    """Run the pristine harness's locked prepare and locate the cache it built."""
    env = scrubbed_env(os.environ, threads=1, seed=0)
    env["EVOLVE_CACHE_DIR"] = cache
    # From the pinned harness, never the live directory: a child may have rewritten it.
    with tempfile.TemporaryDirectory(prefix="evolve-prepare-") as scratch:
        write_harness(pinned_harness(template_dir), Path(scratch))
        done = subprocess.run([sys.executable, "-c", _LOCATE, profile, data, cache],
                              cwd=scratch, env=env, capture_output=True, text=True,
                              timeout=PREPARE_TIMEOUT_S, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise DataPrepareError(
            f"preparing data {data!r} for {profile} on this node failed: {last[:300]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    if found["kind"] == "none":
        return DataState("", "", ())
    return DataState(found["hash"], found["dir"], _stats(Path(found["dir"])))


def _stats(directory: Path) -> tuple[tuple[str, int, int, int, int], ...]:
    rows = []
    for path in sorted(directory.rglob("*")):
        if path.name.endswith(IGNORED_SUFFIXES) or path.name.startswith("."):
            continue
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if path.is_dir():
            continue
        rows.append((str(path.relative_to(directory)), st.st_size, st.st_mtime_ns,
                     st.st_ctime_ns, st.st_ino))
    return tuple(rows)


def _unchanged(state: DataState) -> bool:
    return not state.directory or _stats(Path(state.directory)) == state.stats


def _changed_files(state: DataState) -> list[str]:
    """Files of a verified cache written, replaced, added or removed since verification."""
    if not state.directory:
        return []
    now = {row[0]: row for row in _stats(Path(state.directory))}
    then = {row[0]: row for row in state.stats}
    return sorted(name for name in now.keys() | then.keys() if now.get(name) != then.get(name))


def data_changes(start: DataState, template_dir: str | Path, profile: str, data: str,
                 cache_dir: str | None = None) -> list[str]:
    """After a run: the files of the cache that changed since `start` (the state verified
    before it), by anyone while it ran. A changed cache is rebuilt at once (unless a run beside
    it did so already), so the next run is scored on the controller's data again; a rebuild
    that fails leaves the next run's check to refuse it."""
    changed = _changed_files(start)
    if changed:
        try:
            ensure_data(template_dir, profile, data, cache_dir, expected=start.fingerprint)
        except DataMismatch:
            pass
    return changed


def _discard(state: DataState, data: str) -> None:
    """Delete a cache that may have been written to; climbmix keeps its downloaded shards
    (the content hash still covers them) and drops everything derived from them."""
    root = Path(state.directory)
    if data != "climbmix":
        shutil.rmtree(root, ignore_errors=True)
        return
    for path in root.iterdir():
        if path.name == "shards" or path.name.endswith(".lock"):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def reference_hashes(store: object, template_dir: str | Path, profile: str, data: str,
                     cache_dir: str | None = None) -> tuple[str, str]:
    """(template hash, data fingerprint) every worker must match, from the controller's node.

    The data fingerprint is pinned in the store's meta at the run's first start: a resumed
    run on data that differs from what its results were scored with is refused.
    """
    template = template_hash(template_dir)
    pinned = store.get_meta("data_hash")  # type: ignore[attr-defined]
    try:
        data_hash = data_fingerprint(template_dir, profile, data, cache_dir, expected=pinned or "")
    except DataPrepareError as exc:
        raise DataPrepareError(f"preparing the data failed: {exc}") from exc
    except DataMismatch as exc:
        if not pinned:  # a new run has no earlier results to differ from
            raise
        raise DataMismatch(f"this run's results were scored on other data: {exc}") from exc
    store.set_meta("data_hash", data_hash)  # type: ignore[attr-defined]
    store.set_meta("template_hash", template)  # type: ignore[attr-defined]
    return template, data_hash
