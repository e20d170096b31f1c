"""Survival: who stays in an island's population, and whether a new result was kept.

Lower val_bpb is better; ties go to the earlier finisher, so a child must be strictly better
than the candidate it would displace (the greedy keep/revert rule). `Store.survivors`
ranks the same way in SQL; these pure functions state the rule and serve the tests, the
results.tsv keep|discard column and the simulator.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from population.candidate import Candidate, Status

Verdict = Literal["keep", "discard", "crash"]


def rank_key(candidate: Candidate) -> tuple[float, float, str]:
    """Sort key, best first: val_bpb, then who finished first."""
    bpb = candidate.val_bpb
    finished = candidate.finished_at
    return (math.inf if bpb is None else bpb,
            math.inf if finished is None else finished, candidate.id)


def is_score(value: Any) -> bool:
    """A score that can be compared: a real number, finite (None, NaN, inf, a bool or a
    string never is). The one test of "is this val_bpb usable" (shell, extra runs, survival)."""
    if type(value) is float:  # the common case, checked first: survival calls this a lot
        return math.isfinite(value)
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_ranked(candidate: Candidate) -> bool:
    """Only done candidates with a finite score take part in survival."""
    return candidate.status is Status.DONE and is_score(candidate.val_bpb)


def survivors(candidates: Iterable[Candidate], size: int) -> list[Candidate]:
    """The best `size` done candidates, best first."""
    if size < 1:
        raise ValueError(f"population size must be at least 1, not {size}")
    return sorted(filter(is_ranked, candidates), key=rank_key)[:size]


def verdict(child: Candidate, survivors_before: Sequence[Candidate], size: int) -> Verdict:
    """Was the child kept? Judged against the island's survivors *when its result arrived*
    (not when it was proposed): kept if there was room or it beats the worst survivor
    strictly. With size 1 that is: strictly better than the current champion."""
    if not is_ranked(child):
        return "crash"
    # One pass, no list (every result is judged: the simulator's hot path): the worst
    # survivor by rank_key is the one with the highest val_bpb. is_ranked, inlined.
    child_id, done, finite = child.id, Status.DONE, math.isfinite
    ranked, worst = 0, -math.inf
    for s in survivors_before:
        if s.status is not done or s.id == child_id:
            continue
        score = s.metrics.get("val_bpb")
        if type(score) is not float:  # as Candidate.val_bpb reads it
            if score is None:
                continue
            score = float(score)
        if not finite(score):
            continue
        ranked += 1
        if score > worst:
            worst = score
    if ranked < size:
        return "keep"
    return "keep" if child.val_bpb < worst else "discard"  # type: ignore[operator]


def lost_too_often(lost_count: int, max_lost: int) -> bool:
    """A candidate lost more than `max_lost` times probably kills its worker (OOM): stop."""
    return lost_count > max_lost


def lost_reason(lost_count: int) -> str:
    """The crash reason recorded for a candidate given up after repeated losses."""
    return (f"lost its worker {lost_count} times (the node or worker died mid-run); "
            "given up so it cannot take workers down forever")
