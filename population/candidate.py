"""The candidate record: one variant of the training script and everything known about it."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
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

    @property
    def val_bpb(self) -> float | None:
        value = self.metrics.get("val_bpb")
        return None if value is None else float(value)

    @property
    def source_hash(self) -> str:
        return source_hash(self.files)

    def replace(self, **changes: Any) -> Candidate:
        return dataclasses.replace(self, **changes)


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
