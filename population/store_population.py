"""The store seen as a population: parent choice, verdicts and island upkeep in one place.

A thin layer that joins the pure decisions (selection, survival, islands) to the store's
queries and writes, so the controller shell never re-implements island rules. It satisfies
the scheduler core's `ParentSource` (`choose_parent(island, rng) -> id`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from population.candidate import Candidate, Status
from population.islands import migration_due, plan_migration, plan_reseeds, plan_seeding
from population.selection import ParentSelector, make_selector
from population.store import Store
from population.survival import Verdict, verdict

LAST_MIGRATION = "last_migration_at"


@dataclass(frozen=True)
class IslandRules:
    """The `selection` / `population` parts of a config that shape the islands."""

    strategy: str = "greedy"
    size: int = 1
    islands: int = 1
    migration_interval: int = 0          # finished experiments between migrations; 0 = never
    stagnation_reseed_after: int = 0     # finished experiments without gain on an island; 0 = never
    tournament_size: int = 3
    rank_power: float = 1.0

    @classmethod
    def of(cls, population: Any, selection: Any) -> IslandRules:
        """From the config's `population` and `selection` sections (read by name, so this
        pure package needs no import of the config code)."""
        return cls(strategy=selection.strategy, size=population.size,
                   islands=population.islands, migration_interval=population.migration_interval,
                   stagnation_reseed_after=population.stagnation_reseed_after,
                   tournament_size=selection.tournament_size, rank_power=selection.rank_power)


class StorePopulation:
    """Parents, verdicts, seeding, migration and re-seeding over one writable store."""

    def __init__(self, store: Store, rules: IslandRules) -> None:
        self.store = store
        self.rules = rules
        self.selector: ParentSelector = make_selector(
            rules.strategy, tournament_size=rules.tournament_size, rank_power=rules.rank_power)
        self.size = self.selector.population_size(rules.size)

    def choose_parent(self, island: int, rng: random.Random) -> str:
        """A parent from the island's survivors; an island still empty borrows the best."""
        survivors = self.store.survivors(island, self.size)
        if not survivors:
            best = self.store.best()
            if best is None:
                raise LookupError("no finished candidate to make a child from yet (the root "
                                  "must finish first)")
            survivors = [best]
        return self.selector.select(survivors, rng).id

    def record(self, candidate_id: str, *, status: Status, metrics: Mapping, reason: str = "",
               log_tail: str = "", now: float | None = None) -> tuple[Candidate, Verdict]:
        """Record a final result and say whether it was kept, judged against the island's
        survivors at the moment it arrived."""
        island = self.store.get(candidate_id).island
        before = self.store.survivors(island, self.size)
        result = self.store.record_result(candidate_id, status=status, metrics=metrics,
                                          reason=reason, log_tail=log_tail, now=now)
        return result, verdict(result, before, self.size)

    def seed_islands(self, root_id: str, *, now: float | None = None) -> list[Candidate]:
        """Copy the finished root into every other island that is still empty (idempotent,
        so a resumed run can call it again)."""
        copies = []
        for copy in plan_seeding(self.store.get(root_id), self.rules.islands):
            if not self.store.survivors(copy.to_island, 1):
                copies.append(self.store.add_copy(
                    copy.source_id, copy.to_island, now=now,
                    description=f"baseline {copy.source_id} seeding island {copy.to_island}"))
        return copies

    def migrate(self, *, now: float | None = None) -> list[Candidate]:
        """Ring migration now, on one snapshot of every island."""
        snapshot = [self.store.survivors(i, self.size) for i in range(self.rules.islands)]
        return [self.store.add_copy(c.source_id, c.to_island, now=now,
                                    description=f"migrant {c.source_id} from island "
                                                f"{c.from_island}")
                for c in plan_migration(snapshot, self.size)]

    def reseed_stagnant(self, *, now: float | None = None) -> list[Candidate]:
        """Restart islands that stopped improving from the best island's survivors."""
        if self.rules.stagnation_reseed_after <= 0:
            return []
        islands = range(self.rules.islands)
        stagnation = [self.store.finished_since_best(i) for i in islands]
        snapshot = [self.store.survivors(i, self.size) for i in islands]
        copies: list[Candidate] = []
        for plan in plan_reseeds(stagnation, snapshot, self.rules.stagnation_reseed_after):
            copies += self.store.reseed(plan.island, plan.source_ids, now=now)
        return copies

    def upkeep(self, finished: int, *, now: float | None = None) -> list[Candidate]:
        """After each finished experiment: migrate when due (the count of the last migration
        is kept in the store, so resume keeps the rhythm), then re-seed stagnant islands."""
        copies: list[Candidate] = []
        last = int(self.store.get_meta(LAST_MIGRATION, "0") or 0)
        if self.rules.islands > 1 and migration_due(finished, last,
                                                    self.rules.migration_interval):
            copies += self.migrate(now=now)
            self.store.set_meta(LAST_MIGRATION, str(finished))
        if self.rules.islands > 1:
            copies += self.reseed_stagnant(now=now)
        return copies
