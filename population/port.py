"""The population port: what the controller asks of a population, and its two backends.

`Population` is the one interface — choose a parent, record a result and get its survival
verdict, seed the islands from the root, migrate, re-seed stagnant islands — and the pure
rules (`population.selection`, `survival`, `islands`) are called here, never restated.
`StorePopulation` keeps the population in the SQLite store (the shell); `MemoryPopulation`
keeps it in memory (the simulator). The same contract tests run on both.

Island groups (`groups`): the islands whose scores compare (one device type each, with
`workers.device_groups`; else all islands): copies only move inside a group.
"""

from __future__ import annotations

import random
from bisect import insort
from collections.abc import Sequence
from typing import Protocol

from population.candidate import Candidate, Status
from population.islands import plan_broadcast, plan_migration, plan_reseeds, plan_seeding
from population.result import Result
from population.selection import ParentSelector
from population.store import Store
from population.survival import Verdict, is_ranked, rank_key, verdict

Groups = Sequence[Sequence[int]]


class Population(Protocol):
    """The controller's view of a population (docs/contracts.md §9)."""

    size: int  # survivors an island keeps (the strategy's `population_size`)

    def choose_parent(self, island: int, rng: random.Random) -> str: ...

    def record(self, result: Result, now: float) -> tuple[Candidate, Verdict]: ...

    def seed(self, root: Candidate, now: float) -> list[Candidate]: ...

    def migrate(self, groups: Groups, now: float) -> list[Candidate]: ...

    def reseed(self, groups: Groups, now: float) -> list[Candidate]: ...


class StorePopulation:
    """The population in a writable store: bounded queries (an island's top `size` rows)."""

    def __init__(self, store: Store, selector: ParentSelector, *, size: int, islands: int,
                 root_id: str = "root", stagnation_reseed_after: int = 0,
                 broadcast: bool = False) -> None:
        self.store = store
        self.broadcast = broadcast  # gossip: bests spread at once (`spread`), no ring
        self.selector = selector
        self.size = selector.population_size(size)
        self.islands = islands
        self.root_id = root_id
        self.patience = stagnation_reseed_after

    def choose_parent(self, island: int, rng: random.Random) -> str:
        if self.selector.from_root:  # random search: children of the root only
            return self.root_id
        survivors = self.store.survivors(island, self.size)
        if not survivors:  # an island not seeded yet grows from the best there is, and
            best = self.store.best()  # the root before its result is recorded (held for
            return best.id if best is not None else self.root_id  # its noise re-runs)
        return self.selector.select(survivors, rng).id

    def record(self, result: Result, now: float) -> tuple[Candidate, Verdict]:
        """Store a final result, judged against the island's survivors *when it arrives*;
        the verdict is stored with the metrics (`kept`), so results.tsv can be rebuilt."""
        candidate = self.store.get(result.candidate_id)
        before = self.store.survivors(candidate.island, self.size)
        metrics = dict(result.metrics)
        judged = candidate.replace(status=result.status, metrics=metrics, finished_at=now)
        said = verdict(judged, before, self.size)
        metrics["kept"] = said == "keep"
        stored = self.store.record_result(result.candidate_id, status=result.status,
                                          metrics=metrics, reason=result.reason,
                                          log_tail=result.log_tail, now=now)
        return stored, said

    def seed(self, root: Candidate, now: float) -> list[Candidate]:
        """Copy the scored root to every other island still empty (idempotent on resume)."""
        return [self.store.add_copy(copy.source_id, copy.to_island, now=now)
                for copy in plan_seeding(root, self.islands)
                if not self.store.survivors(copy.to_island, 1)]

    def migrate(self, groups: Groups, now: float) -> list[Candidate]:
        """Ring migration inside each group, on one snapshot of its islands (none when bests
        are broadcast instead)."""
        if self.broadcast:
            return []
        made = []
        for islands in groups:
            survivors = [self.store.survivors(i, self.size) for i in islands]
            made += [self.store.add_copy(copy.source_id, islands[copy.to_island], now=now)
                     for copy in plan_migration(survivors, self.size)]
        return made

    def spread(self, best: Candidate, groups: Groups, now: float) -> list[Candidate]:
        """Gossip (`population.migration: broadcast`): a new best of the run is copied at once
        to every other island of its group where it would survive."""
        if not self.broadcast:
            return []
        made: list[Candidate] = []
        for islands in groups:
            if best.island not in islands:
                continue
            survivors = [self.store.survivors(i, self.size) for i in islands]
            local = best.replace(island=list(islands).index(best.island))
            made += [self.store.add_copy(best.id, islands[copy.to_island], now=now)
                     for copy in plan_broadcast(local, survivors, self.size)]
        return made

    def reseed(self, groups: Groups, now: float) -> list[Candidate]:
        """Restart the islands that found nothing better for `stagnation_reseed_after`
        results from the best island of their group."""
        if self.patience <= 0:
            return []
        made: list[Candidate] = []
        for islands in groups:
            if len(islands) < 2:
                continue
            stagnation = [self.store.finished_since_best(i) for i in islands]
            if max(stagnation) < self.patience:
                continue
            survivors = [self.store.survivors(i, self.size) for i in islands]
            for plan in plan_reseeds(stagnation, survivors, self.patience):
                made += self.store.reseed(islands[plan.island], plan.source_ids, now=now)
        return made


class MemoryPopulation:
    """The population in memory, per island, best first (the simulator's backend). Children
    are `add`ed when proposed; `record` finishes them."""

    def __init__(self, selector: ParentSelector, *, size: int, islands: int,
                 root_id: str = "root", stagnation_reseed_after: int = 0) -> None:
        self.selector = selector
        self.size = selector.population_size(size)
        self.root_id = root_id
        self.patience = stagnation_reseed_after
        self.survivors: list[list[Candidate]] = [[] for _ in range(islands)]
        self.pending: dict[str, Candidate] = {}
        self._since_best = [0] * islands
        self._copies = 0

    def add(self, candidate: Candidate) -> None:
        """A child was proposed (the store's `add`)."""
        self.pending[candidate.id] = candidate

    def choose_parent(self, island: int, rng: random.Random) -> str:
        if self.selector.from_root:
            return self.root_id
        survivors = self.survivors[island] or self._best_anywhere()
        if not survivors:  # the root, before its result is recorded
            return self.root_id
        return self.selector.select(survivors, rng).id

    def record(self, result: Result, now: float) -> tuple[Candidate, Verdict]:
        candidate = self.pending.pop(result.candidate_id)
        island = self.survivors[candidate.island]
        metrics = dict(result.metrics)
        final = candidate.replace(status=result.status, reason=result.reason, finished_at=now,
                                  metrics=metrics)
        said = verdict(final, island, self.size)
        metrics["kept"] = said == "keep"  # as the store keeps it (one copy: the sim's hot path)
        if said == "keep":
            self._insert(final)
            self._since_best[final.island] = 0 if island[0] is final else \
                self._since_best[final.island] + 1
        else:
            self._since_best[final.island] += 1
        return final, said

    def seed(self, root: Candidate, now: float) -> list[Candidate]:
        return [self._copy(root, copy.to_island, now) for copy in plan_seeding(root, len(
            self.survivors)) if not self.survivors[copy.to_island]]

    def migrate(self, groups: Groups, now: float) -> list[Candidate]:
        made = []
        for islands in groups:
            snapshot = [list(self.survivors[i]) for i in islands]
            for copy in plan_migration(snapshot, self.size):
                source = next(c for c in snapshot[copy.from_island] if c.id == copy.source_id)
                made.append(self._copy(source, islands[copy.to_island], now))
        return made

    def reseed(self, groups: Groups, now: float) -> list[Candidate]:
        if self.patience <= 0:
            return []
        made: list[Candidate] = []
        for islands in groups:
            if len(islands) < 2:
                continue
            stagnation = [self._since_best[i] for i in islands]
            snapshot = [list(self.survivors[i]) for i in islands]
            for plan in plan_reseeds(stagnation, snapshot, self.patience):
                island = islands[plan.island]
                sources = {c.id: c for group in snapshot for c in group}
                self.survivors[island] = []
                made += [self._copy(sources[sid], island, now) for sid in plan.source_ids]
                self._since_best[island] = 0
        return made

    def _best_anywhere(self) -> list[Candidate]:
        tops = [s[0] for s in self.survivors if s]
        return [min(tops, key=rank_key)] if tops else []

    def _insert(self, candidate: Candidate) -> None:
        island = self.survivors[candidate.island]
        if is_ranked(candidate):
            insort(island, candidate, key=rank_key)
            del island[self.size:]

    def _copy(self, source: Candidate, island: int, now: float) -> Candidate:
        self._copies += 1
        copy = source.replace(id=f"{source.id}@{island}.{self._copies}", parent_id=source.id,
                              island=island, mutator="migration", status=Status.DONE,
                              finished_at=source.finished_at)
        self._insert(copy)
        return copy
