"""The candidate record: one variant of the training script and everything known about it."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Status(str, Enum):
    """Where a candidate is in its life. It only moves forward."""

    PROPOSED = "proposed"
    RUNNING = "running"
    DONE = "done"
    CRASHED = "crashed"
    TIMED_OUT = "timed_out"
    REJECTED = "rejected"

    @property
    def is_final(self) -> bool:
        return self in (Status.DONE, Status.CRASHED, Status.TIMED_OUT, Status.REJECTED)


@dataclass(frozen=True)
class Candidate:
    """An immutable snapshot of a candidate; the store hands out new snapshots as it changes."""

    id: str
    parent_id: str | None
    island: int
    generation: int
    files: Mapping[str, str]
    description: str = ""
    rationale: str = ""
    mutator: str = ""
    model: str = ""
    raw_answer: str = ""
    applied_edit: str = ""
    diff: str = ""
    usage: Mapping[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    status: Status = Status.PROPOSED
    metrics: Mapping[str, Any] = field(default_factory=dict)
    reason: str = ""
    log_tail: str = ""
    seed: int = 0
    created_at: float = 0.0
    finished_at: float | None = None
    donor_id: str | None = None  # a merge: the candidate whose winning edit was carried here
    # Why a triggered proposal made it ("carry", "repair"...; None: drawn by weight). Its result
    # stays out of the operator statistics, after a resume too.
    triggered_by: str | None = None
    # Why its score was not sandboxed ("" = it was; None = never scored, or not known).
    sandbox_problem: str | None = None
    # The held-out test score of the run that scored it: never in `metrics`, so nothing that
    # shows or selects by metrics (prompts, the notebook, the live view) can see it.
    test_bpb: float | None = None

    @property
    def val_bpb(self) -> float | None:
        value = self.metrics.get("val_bpb")
        return None if value is None else float(value)

    @property
    def unsandboxed(self) -> bool:
        """True if its score came from a run the candidate could reach (no working jail)."""
        return bool(self.sandbox_problem)

    @property
    def source_hash(self) -> str:
        return source_hash(self.files)

    def replace(self, **changes: Any) -> Candidate:
        """A copy with `changes` (as `dataclasses.replace`, which costs twice as much: the
        simulator and the store make one per result). Candidate has no __post_init__."""
        unknown = changes.keys() - _FIELDS
        if unknown:
            raise TypeError(f"Candidate has no field(s) {', '.join(sorted(unknown))}")
        copy = object.__new__(Candidate)
        copy.__dict__.update(self.__dict__)
        copy.__dict__.update(changes)
        return copy


_FIELDS = frozenset(f.name for f in dataclasses.fields(Candidate))


_COMMENT = re.compile(r"#[^\n]*")


def normalise_source(source: str) -> str:
    """Source with comments, trailing blanks and blank lines removed: edits that only touch
    those do not make a new experiment (naive about '#' inside strings, which errs towards
    calling two sources different)."""
    lines = []
    for line in source.splitlines():
        stripped = _COMMENT.sub("", line).rstrip() if "#" in line else line.rstrip()
        if stripped.strip():
            lines.append(stripped)
    return "\n".join(lines)


def source_hash(files: Mapping[str, str]) -> str:
    """Hash of the normalised mutable files: equal hashes are the same experiment."""
    return _hash_of(tuple(sorted(files.items())))


@functools.lru_cache(maxsize=256)
def _hash_of(files: tuple[tuple[str, str], ...]) -> str:
    """Normalising 25 KB of source costs a millisecond, and a child's hash is asked for by
    pre-flight (differs from its parent, duplicate) and the store: computed once per text."""
    digest = hashlib.sha256()
    for name, source in files:
        digest.update(name.encode())
        digest.update(b"\0")
        digest.update(normalise_source(source).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def split_marks(metrics: Mapping[str, Any]) -> tuple[dict[str, Any], str | None, float | None]:
    """A run's metrics without its held-out test scores and sandbox mark, and those two:
    (metrics, sandbox problem: "" sandboxed / text / None unknown, finite test_bpb or None)."""
    kept = {k: v for k, v in metrics.items()
            if not k.startswith("test_") and k not in ("sandboxed", "sandbox_problem")}
    test = metrics.get("test_bpb")
    test_bpb = float(test) if isinstance(test, int | float) and not isinstance(test, bool) \
        and math.isfinite(test) else None
    sandboxed = metrics.get("sandboxed")
    if sandboxed is True:
        problem: str | None = ""
    elif sandboxed is False:
        problem = str(metrics.get("sandbox_problem") or "the run was not sandboxed")
    else:
        problem = None
    return kept, problem, test_bpb
