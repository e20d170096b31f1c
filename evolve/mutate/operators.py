"""Mutation operators: the statistics that adapt their mix (building them: `registry`).

The controller core picks the operator for each proposal by weight (`mix_weights`). In adaptive
mode each configured weight is scaled by an upper confidence bound on that operator's rate of
children that beat their parent (UCB1), so a productive operator is used more while the others
still get tried. The statistics are a function of the store (`tally`), so a resumed run picks up
exactly where it stopped and the choice for each proposal replays under the run's seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from population.candidate import Candidate, Status
from population.store import MIGRATION, RAN

REPAIR = "repair"  # evolve.mutate.repair's operator (not imported: it pulls in the LLM client)


def label_of(mutator: str, model: str = "") -> str:
    """The key an operator's children are credited under: the mutator kind, plus the model for
    LLM operators (so LLM operators on different models are told apart in the store)."""
    return f"{mutator}:{model}" if mutator == "llm" and model else mutator


@dataclass(frozen=True)
class OperatorStats:
    """Finished children of one operator, and how many of them beat their parent."""

    trials: int = 0
    improved: int = 0

    def add(self, improved: bool) -> OperatorStats:
        return OperatorStats(self.trials + 1, self.improved + int(improved))


# ---------------------------------------------------------------- learning


def credit(child: Candidate, parent_val_bpb: float | None) -> tuple[str, bool] | None:
    """(label, beat its parent) for a child that ran to the end (done, crashed, timed out);
    None for anything that is not an operator's experiment (the root, migration copies,
    children still running, rejected). A crash is a trial that did not improve; a repair
    succeeds when the fixed child runs to a score."""
    if child.parent_id is None or child.mutator == MIGRATION or child.status not in RAN:
        return None
    mine = child.val_bpb
    if child.mutator == REPAIR:  # its parent crashed and has no score: a fix that runs succeeds
        return REPAIR, child.status is Status.DONE and mine is not None
    improved = (child.status is Status.DONE and mine is not None and parent_val_bpb is not None
                and mine < parent_val_bpb)
    return label_of(child.mutator, child.model), improved


def tally(candidates: Iterable[Candidate], *, drawn_only: bool = False) -> dict[str, OperatorStats]:
    """The statistics of every label from a run's finished candidates (migration copies
    included: they are parents too). `drawn_only`: what the live run's weights learned,
    rebuilt from the store — children of triggered proposals are parents, never trials."""
    finished = list(candidates)
    scores = {c.id: c.val_bpb for c in finished if c.status is Status.DONE}
    stats: dict[str, OperatorStats] = {}
    for child in finished:
        if drawn_only and child.triggered_by:
            continue
        judged = credit(child, scores.get(child.parent_id or ""))
        if judged is not None:
            label, improved = judged
            stats[label] = stats.get(label, OperatorStats()).add(improved)
    return stats


# ---------------------------------------------------------------- choosing


def ucb_score(stats: OperatorStats, total_trials: int, exploration: float) -> float:
    """UCB1 on the rate of improving on the parent: the rate (with a prior of one success in
    two, so an untried operator starts at 1/2) plus an exploration bonus that shrinks as the
    operator is tried and grows slowly with all trials."""
    rate = (stats.improved + 1) / (stats.trials + 2)
    bonus = exploration * math.sqrt(math.log(total_trials + 1) / (stats.trials + 1))
    return rate + bonus


def mix_weights(weights: Mapping[str, float], stats: Mapping[str, OperatorStats], *,
                labels: Mapping[str, str] | None = None, adaptive: bool = False,
                exploration: float = 1.0) -> dict[str, float]:
    """The weight each operator (by name) is chosen by now. Fixed mode: the configured
    weights. Adaptive: each configured weight times the UCB1 score of its label's stats
    (`labels`: operator name -> label; operators sharing a label share its stats). A weight
    of 0 stays 0: that operator is never chosen."""
    if not adaptive:
        return dict(weights)
    labels = labels or {}
    used = {labels.get(name, name) for name, weight in weights.items() if weight > 0}
    total = sum(stats.get(label, OperatorStats()).trials for label in used)
    return {name: weight * ucb_score(stats.get(labels.get(name, name), OperatorStats()), total,
                                     exploration) if weight > 0 else 0.0
            for name, weight in weights.items()}
