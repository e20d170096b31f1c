"""A read-only view of a run directory, shared by `evolve export` and `evolve report`.

Nothing here writes into the run: the store is opened with `readonly=True`, so both
commands are safe on a run that is still going.
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from evolve.run.rundir import RunDir, RunDirError
from population.candidate import Candidate, Status
from population.store import Store, StoreError, is_copy


class RunViewError(Exception):
    """A run directory that cannot be read as asked; the message says what to do."""


def open_run_dir(path: str | Path) -> RunDir:
    """The run directory at `path`, checked without creating anything in it."""
    try:
        return RunDir.open(path)
    except RunDirError as error:
        raise RunViewError(str(error)) from error


@contextmanager
def open_store(run_dir: RunDir) -> Iterator[Store]:
    """The run's store, read-only (a live run keeps writing; we never take its lock)."""
    try:
        store = Store.open(run_dir.store_path, readonly=True)
    except (StoreError, OSError) as error:
        raise RunViewError(f"{run_dir.store_path}: cannot read the store: {error}") from error
    try:
        yield store
    finally:
        store.close()


def load_config(run_dir: RunDir) -> tuple[dict[str, Any], str]:
    """The resolved configuration the run was started with, parsed and as text."""
    text = run_dir.config_path.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise RunViewError(f"{run_dir.config_path}: not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise RunViewError(f"{run_dir.config_path}: expected a mapping of settings")
    return data, text


def config_get(config: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """`config_get(c, "population.islands")` without caring which levels are missing."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def resolve_template(run_dir: RunDir, config: dict[str, Any]) -> Path:
    """The template directory named in config.yaml: absolute, or relative to the run's folder
    or a folder above it (the repository that holds results/), else to the working directory."""
    name = config.get("template")
    if not name:
        raise RunViewError(f"{run_dir.config_path} names no `template:` directory")
    given = Path(str(name)).expanduser()
    if given.is_absolute():
        places = [given]
    else:
        places = [run_dir.path / given,
                  *(parent / given for parent in run_dir.path.resolve().parents),
                  Path.cwd() / given]
    for place in places:
        if (place / "prepare.py").is_file():
            return place.resolve()
    raise RunViewError(
        f"template directory {str(name)!r} (from {run_dir.config_path}) was not found with a "
        f"prepare.py in it (looked beside {run_dir.path} and the folders above it, "
        "and in the working directory); run from the folder the run was started in, or fix `template:` in "
        "config.yaml")


def all_candidates(store: Store) -> list[Candidate]:
    """Every candidate the run knows, finished ones in finish order, then the unfinished."""
    return [*store.finished_in_order(include_rejected=True, include_copies=True),
            *store.unfinished()]


def find_candidate(store: Store, wanted: str) -> Candidate:
    """A candidate by id, `best`, or a unique id prefix; errors list what was meant."""
    if wanted == "best":
        best = store.best()
        if best is None:
            raise RunViewError("the run has no finished candidate with a val_bpb yet; "
                               "wait for one, or name a candidate with --candidate ID")
        return best
    try:
        return store.get(wanted)
    except KeyError:
        pass
    ids = [c.id for c in all_candidates(store)]
    matches = [i for i in ids if i.startswith(wanted)]
    if len(matches) == 1:
        return store.get(matches[0])
    if matches:
        raise RunViewError(f"candidate id {wanted!r} is ambiguous: it begins "
                           f"{', '.join(matches[:8])}; give more of the id")
    close = difflib.get_close_matches(wanted, ids, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise RunViewError(f"no candidate {wanted!r} in this run{hint}; `evolve status RUN_DIR` "
                       "lists the candidates, or use --candidate best")


def kept_flags(run_dir: RunDir, done_in_order: list[Candidate],
               population_size: int) -> dict[str, bool]:
    """Whether each done experiment was kept, as the controller logged it in results.tsv;
    a row missing there (a live run between two writes) is judged as the controller would:
    kept when it ranked within its island's population (migrants included) when it arrived."""
    logged: dict[str, bool] = {}
    if run_dir.tsv_path.exists():
        with open(run_dir.tsv_path, newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                if row.get("commit") and row.get("status") in ("keep", "discard"):
                    logged[row["commit"]] = row["status"] == "keep"
    seen: dict[int, list[float]] = {}
    flags: dict[str, bool] = {}
    for candidate in done_in_order:
        if candidate.status is not Status.DONE or candidate.val_bpb is None:
            continue
        island = seen.setdefault(candidate.island, [])
        rank = sum(1 for value in island if value <= candidate.val_bpb)
        island.append(candidate.val_bpb)
        if not is_copy(candidate):
            flags[candidate.id] = logged.get(candidate.id, rank < max(population_size, 1))
    return flags


def file_diff(before: dict[str, str] | None, after: dict[str, str]) -> str:
    """A unified diff between two candidates' files (git-style a/ b/ names)."""
    before = dict(before or {})
    parts: list[str] = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name, ""), after.get(name, "")
        if old == new:
            continue
        lines = difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True),
            fromfile=f"a/{name}" if name in before else "/dev/null",
            tofile=f"b/{name}" if name in after else "/dev/null")
        for line in lines:
            parts.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(parts)
