"""The core's state after a restart, read back from the store (recovery of an interrupted run)."""

from __future__ import annotations

import time

from evolve.controller.core import History
from evolve.controller.devices import first_types
from evolve.mutate.operators import credit, tally
from population.candidate import Candidate, Status
from population.outcomes import Outcome
from population.store import Store
from population.survival import lost_reason, lost_too_often

RESUME_LOST = "the controller stopped while this attempt ran; it runs again on resume"


def recover(store: Store, root_id: str, *, max_lost_attempts: int,
            now: float | None = None) -> History:
    """The core's state from a store with history (empty for a new run).

    Attempts left open by a killed controller end as `lost`; their candidates run again,
    first — as do those a deliberate stop put back to proposed (attempts `abandoned`). A
    candidate lost too often is recorded crashed instead; only `lost` attempts count
    (`Store.lost_count`): a refused or abandoned one was not the candidate's doing. Each
    island keeps the device type it was bound to (`island_devices`). Children of triggered
    proposals (`Candidate.triggered_by`) stay out of the operator statistics, finished or not.
    """
    now = time.time() if now is None else now
    running, proposed = [], []
    lost_counts, attempts = {}, {}
    unfinished = store.unfinished()
    for candidate in unfinished:
        history = store.attempts(candidate.id)
        for attempt in history:
            if attempt.outcome == Outcome.RUNNING:
                store.finish_attempt(attempt.id, outcome=Outcome.LOST, reason=RESUME_LOST, now=now)
        lost = store.lost_count(candidate.id)
        if lost_too_often(lost, max_lost_attempts):
            store.record_result(candidate.id, status=Status.CRASHED, metrics={},
                                reason=lost_reason(lost), now=now)
            continue
        if lost:
            lost_counts[candidate.id] = lost
        if history:
            attempts[candidate.id] = len(history)
        started = candidate.status is Status.RUNNING or history
        target = running if started else proposed
        target.append((candidate.id, candidate.island))
    ran = store.finished_in_order(include_copies=True, sources=False)
    best = store.best()
    try:
        root_done = store.get(root_id).status.is_final
    except KeyError:
        root_done = False
    return History(
        finished=store.count(Status.DONE, Status.CRASHED, Status.TIMED_OUT),
        proposals_made=int(store.get_meta("next_ticket", "0") or 0),
        llm_usd=float(store.get_meta("llm_usd_total", "0") or 0),
        best_val_bpb=best.val_bpb if best is not None else None,
        root_done=root_done, queued=running + proposed, lost_counts=lost_counts,
        attempts=attempts, elapsed_s=float(store.get_meta("elapsed_s", "0") or 0),
        operator_stats=tally(ran, drawn_only=True),
        island_devices=island_devices(store),
        triggered_children=frozenset(c.id for c in unfinished if c.triggered_by),
    )


def island_devices(store: Store) -> dict[int, str]:
    """Island -> the device type its first attempt ran on: with `workers.device_groups` the
    island stays bound to it after a restart, so its scores keep comparing like with like."""
    return first_types(store.attempt_islands())


def judge(store: Store, candidate: Candidate) -> tuple[str, bool] | None:
    """(label, beat its parent) for a child whose result is final, judged as `recover` judges
    the store (for `Scheduler.learn`); None for anything that is not an operator's experiment."""
    if candidate.parent_id is None or credit(candidate, None) is None:
        return None  # no need to read the parent
    parent = store.get(candidate.parent_id)
    return credit(candidate, parent.val_bpb if parent.status is Status.DONE else None)
