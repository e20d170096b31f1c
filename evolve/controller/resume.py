"""Between the store/config and the core: settings, parent choice, and state after a restart."""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

from evolve.controller.core import History, Settings
from evolve.controller.devices import first_types
from evolve.mutate.operators import credit, label_of, tally
from population.candidate import Candidate, Status
from population.selection import make_selector
from population.store import MIGRATION, Store
from population.survival import lost_reason, lost_too_often, population_size

RESUME_LOST = "the controller stopped while this attempt ran; it runs again on resume"


def operator_names(config: Any) -> list[str]:
    """The name each `mutation.operators` entry goes by: its kind, numbered if repeated
    (`llm0`, `llm1`). The mutators handed to the controller are keyed by these names."""
    kinds = Counter(op.kind for op in config.mutation.operators)
    seen: Counter[str] = Counter()
    names = []
    for op in config.mutation.operators:
        if kinds[op.kind] == 1:
            names.append(op.kind)
        else:
            names.append(f"{op.kind}{seen[op.kind]}")
            seen[op.kind] += 1
    return names


def operator_labels(config: Any) -> dict[str, str]:
    """Operator name -> the label its children are stored under (`label_of`): what its
    statistics are kept by. Operators of one kind (and model) share a label and its stats."""
    return {name: label_of(op.kind, getattr(op, "model", ""))
            for name, op in zip(operator_names(config), config.mutation.operators, strict=True)}


def settings_from_config(config: Any) -> Settings:
    operators = [(name, op.weight) for name, op in zip(operator_names(config),
                                                       config.mutation.operators, strict=True)]
    tpm = [op.tokens_per_minute for op in config.mutation.operators
           if getattr(op, "tokens_per_minute", None)]
    budget = config.budget
    return Settings(
        lookahead=config.mutation.lookahead,
        max_concurrent_proposals=config.mutation.max_concurrent_proposals,
        max_experiments=budget.max_experiments, max_hours=budget.max_hours,
        target_val_bpb=budget.target_val_bpb, max_llm_usd=budget.max_llm_usd,
        offline_operators=frozenset(
            name for name, op in zip(operator_names(config), config.mutation.operators,
                                     strict=True) if op.kind in ("heuristic", "merge")),
        tokens_per_minute=min(tpm) if tpm else None,
        max_lost_attempts=config.workers.max_lost_attempts,
        islands=config.population.islands, migration_interval=config.population.migration_interval,
        operators=operators, operator_labels=operator_labels(config),
        adaptive_operators=config.mutation.adaptive_weights,
        exploration=config.mutation.exploration, seed=config.seed,
        device_groups=config.workers.device_groups,
    )


class StoreParents:
    """The core's `ParentSource` over the store: the config's strategy on an island's survivors
    (bounded queries: only the top `size` rows are read)."""

    def __init__(self, store: Store, config: Any, root_id: str = "root") -> None:
        self.store = store
        self.root_id = root_id
        selection = config.selection
        self.size = population_size(selection.strategy, config.population.size)
        self.selector = make_selector(selection.strategy, tournament_size=selection.tournament_size,
                                      power=selection.rank_power)

    def choose_parent(self, island: int, rng: random.Random) -> str:
        if self.selector.name == "random":  # random search: children of the root only
            return self.root_id
        survivors = self.store.survivors(island, self.size)
        if not survivors:  # an island not seeded yet grows from the best there is
            best = self.store.best()
            return best.id if best is not None else self.root_id
        return self.selector.select(survivors, rng).id


def recover(store: Store, root_id: str, *, max_lost_attempts: int,
            now: float | None = None) -> History:
    """The core's state from a store with history (empty for a new run).

    Attempts left open by a killed controller end as `lost`; their candidates run again,
    first — as do those a deliberate stop put back to proposed (attempts `abandoned`). A
    candidate lost too often is recorded crashed instead; only `lost` attempts count
    (`Store.lost_count`): a refused or abandoned one was not the candidate's doing. Each
    island keeps the device type it was bound to (`island_devices`).
    """
    now = time.time() if now is None else now
    running, proposed = [], []
    lost_counts, attempts = {}, {}
    unfinished = store.unfinished()
    for candidate in unfinished:
        history = store.attempts(candidate.id)
        for attempt in history:
            if attempt.outcome == "running":
                store.finish_attempt(attempt.id, outcome="lost", reason=RESUME_LOST, now=now)
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
    ran = store.finished_in_order(include_copies=True)
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
        operator_stats=tally(ran), island_devices=island_devices(store, [*ran, *unfinished]),
    )


def island_devices(store: Store, candidates: list[Candidate]) -> dict[int, str]:
    """Island -> the device type its first attempt ran on: with `workers.device_groups` the
    island stays bound to it after a restart, so its scores keep comparing like with like."""
    return first_types((attempt.id, candidate.island, attempt.device)
                       for candidate in candidates if candidate.mutator != MIGRATION
                       for attempt in store.attempts(candidate.id))


def judge(store: Store, candidate: Candidate) -> tuple[str, bool] | None:
    """(label, beat its parent) for a child whose result is final, judged as `recover` judges
    the store (for `Scheduler.learn`); None for anything that is not an operator's experiment."""
    if candidate.parent_id is None or credit(candidate, None) is None:
        return None  # no need to read the parent
    parent = store.get(candidate.parent_id)
    return credit(candidate, parent.val_bpb if parent.status is Status.DONE else None)
