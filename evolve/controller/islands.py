"""Island upkeep: seeding the islands from the root, migration and re-seeding stagnant ones.

The plans are pure (`population.islands`); this carries them out in the store. Scores move
only between islands scored on one device type, so every step works per island group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from evolve.controller.devices import island_groups
from population.candidate import Candidate
from population.islands import plan_migration, plan_reseeds, plan_seeding
from population.store import Store


class IslandUpkeep:
    """Copies candidates between islands; every copy made is passed to `on_candidate`."""

    def __init__(self, store: Store, config: Any, *, size: int,
                 on_candidate: Callable[[Candidate], None], clock: Callable[[], float]) -> None:
        self.store = store
        self.config = config
        self.size = size
        self.on_candidate = on_candidate
        self.clock = clock

    def groups(self, bound: dict[int, str]) -> list[list[int]]:
        """The islands that share a device type (`bound`: island -> the type it is scored on)."""
        return island_groups(self.config.population.islands, bound,
                             self.config.workers.device_groups)

    def seed(self, root: Candidate, now: float) -> None:
        """Copy the scored root to every island."""
        if self.config.workers.device_groups:
            return  # each island starts from its first child, scored on its own device type
        for copy in plan_seeding(root, self.config.population.islands):
            self.on_candidate(self.store.add_copy(copy.source_id, copy.to_island, now=now))

    def migrate(self, bound: dict[int, str]) -> None:
        for islands in self.groups(bound):  # scores move only between islands of one device type
            survivors = [self.store.survivors(i, self.size) for i in islands]
            for copy in plan_migration(survivors, self.size):
                made = self.store.add_copy(copy.source_id, islands[copy.to_island], now=self.clock())
                self.on_candidate(made)

    def reseed_stagnant(self, bound: dict[int, str], now: float) -> None:
        """Replace islands that found nothing better for `stagnation_reseed_after` results."""
        patience = self.config.population.stagnation_reseed_after
        if patience <= 0:
            return
        for islands in self.groups(bound):
            if len(islands) < 2:
                continue
            stagnation = [self.store.finished_since_best(i) for i in islands]
            if max(stagnation) < patience:
                continue
            survivors = [self.store.survivors(i, self.size) for i in islands]
            for plan in plan_reseeds(stagnation, survivors, patience):
                for made in self.store.reseed(islands[plan.island], plan.source_ids, now=now):
                    self.on_candidate(made)
