"""The candidate record: one variant of the training script and everything known about it."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import re
import threading
from collections import OrderedDict
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
    return "\n".join(filter(None, _line_forms(source)))


def _line_form(line: str) -> str:
    """One line as `normalise_source` keeps it ("" when it keeps nothing)."""
    stripped = _COMMENT.sub("", line).rstrip() if "#" in line else line.rstrip()
    return stripped if stripped.strip() else ""


_FORMS_KEPT = 64  # sources whose per-line forms are kept (parents of the next children)
_forms: OrderedDict[str, tuple[str, ...]] = OrderedDict()
_forms_lock = threading.Lock()
_OTHER_BREAKS = ("\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def _line_forms(source: str, like: str | None = None) -> tuple[str, ...]:
    """Each line's form (see `normalise_source`). With `like` (the source it was edited
    from), only the lines between the two sources' shared head and tail are formed again:
    a child shares all but a few of its 900 lines with its parent."""
    with _forms_lock:
        kept = _forms.get(source)
    if kept is not None:
        return kept
    if like is not None and _plain(source) and _plain(like):
        base = _line_forms(like)
        head, tail = shared_line_ends(like, source)
        lines = source.split("\n")[:-1]  # ends in "\n": the same lines as splitlines()
        forms = base[:head] + tuple(map(_line_form, lines[head:len(lines) - tail])) \
            + base[len(base) - tail:]
    else:
        forms = tuple(map(_line_form, source.splitlines()))
    with _forms_lock:
        _forms[source] = forms
        while len(_forms) > _FORMS_KEPT:
            _forms.popitem(last=False)
    return forms


def _plain(text: str) -> bool:
    """Ends in a newline and has no other line break str.splitlines knows."""
    return text.endswith("\n") and not any(mark in text for mark in _OTHER_BREAKS)


def shared_line_ends(old: str, new: str) -> tuple[int, int]:
    """How many lines two newline-ended texts share at the start, then at the end of what is
    left: what comparing their lists of lines would find, at C speed."""
    prefix = _common_prefix(old, new)
    head = old.count("\n", 0, prefix)
    start = old.rfind("\n", 0, prefix) + 1  # where the first differing line starts
    rest_old, rest_new = old[start:], new[start:]
    suffix = _common_prefix(rest_old[::-1], rest_new[::-1])
    tail = rest_old.count("\n", len(rest_old) - suffix)
    at_old, at_new = len(rest_old) - suffix, len(rest_new) - suffix
    if tail and not ((at_old == 0 or rest_old[at_old - 1] == "\n")
                     and (at_new == 0 or rest_new[at_new - 1] == "\n")):
        tail -= 1  # the shared end begins inside a line: that line differs
    return head, tail


def _common_prefix(a: str, b: str) -> int:
    """The length of the longest common prefix, by bisection (C-speed comparisons)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a.startswith(b[:mid]):
            lo = mid
        else:
            hi = mid - 1
    return lo


def source_hash(files: Mapping[str, str], like: Mapping[str, str] | None = None) -> str:
    """Hash of the normalised mutable files: equal hashes are the same experiment. `like`:
    the files these were edited from (only what changed is normalised again)."""
    if like is not None:
        for name, source in files.items():
            _line_forms(source, like.get(name))
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
