"""Multi-fidelity stages, promoted asynchronously in the manner of ASHA.

Every child first trains on a fraction of the budget; it goes on to the next stage when it
ranks in the top fraction of the results seen *at that stage so far* (no generation barrier:
each result is judged the moment it arrives). Scores are only ever compared within a stage,
because a short-budget val_bpb is not comparable with a full-budget one. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    budget_fraction: float   # of the profile's training budget
    promote_top: float       # share of this stage's results that go on to the next stage

    def __post_init__(self) -> None:
        if not 0 < self.budget_fraction <= 1:
            raise ValueError(f"budget_fraction must be in (0, 1], not {self.budget_fraction}")
        if not 0 < self.promote_top <= 1:
            raise ValueError(f"promote_top must be in (0, 1], not {self.promote_top}")


def ladder(stages: Iterable[Stage]) -> tuple[Stage, ...]:
    """The configured short stages followed by the full budget (which promotes nobody)."""
    short = tuple(stages)
    fractions = [s.budget_fraction for s in short]
    if any(b >= a for a, b in zip(fractions[1:], fractions, strict=False)) or \
            any(f >= 1 for f in fractions):
        raise ValueError(f"stage budget fractions must increase and stay below 1: {fractions}")
    return (*short, Stage(1.0, 1.0))


def promotion_rank_limit(seen: int, top: float) -> int:
    """How many of `seen` results at a stage are promoted: the top ceil(top·seen), so the
    first results of a run (nothing to compare with yet) go on, as in asynchronous ASHA."""
    return max(1, math.ceil(top * seen))


def promote(score: float | None, seen: Sequence[float], top: float) -> bool:
    """Is a result with `score` (None: crashed) among the top fraction of the results seen at
    its stage, `seen` including it? Lower val_bpb is better; ties favour the newcomer."""
    if score is None or not math.isfinite(score):
        return False
    better = sum(1 for s in seen if s < score)
    return better < promotion_rank_limit(len(seen), top)


def next_stage(stages: Sequence[Stage], current: int, score: float | None,
               seen: Sequence[float]) -> int | None:
    """The stage index to run next, or None when the child stops here (the last stage, a
    crash, or not in the top fraction)."""
    if current >= len(stages) - 1:
        return None
    return current + 1 if promote(score, seen, stages[current].promote_top) else None
