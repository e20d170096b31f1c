"""Islands: separate populations that trade their best now and then.

Pure decisions only. Each returns the copies to make; the controller applies them with
`Store.add_copy` / `Store.reseed` (a copy is a new done candidate in the target island with
the same files and metrics and `mutator="migration"`), so an island's population stays one
plain query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from population.candidate import Candidate
from population.survival import rank_key, verdict


@dataclass(frozen=True)
class Copy:
    """Copy candidate `source_id` (living on `from_island`) into `to_island`."""

    source_id: str
    from_island: int
    to_island: int
    why: str  # "seed" | "migration" | "broadcast"


@dataclass(frozen=True)
class Reseed:
    """Start `island` afresh from copies of the best island's survivors."""

    island: int
    from_island: int
    source_ids: tuple[str, ...]


def child_island(parent: Candidate) -> int:
    """A child lives where its parent lives."""
    return parent.island


def least_busy_island(in_flight: Sequence[int]) -> int:
    """The island with the fewest proposals and runs in flight (lowest number on ties),
    so every island gets its share of workers."""
    if not in_flight:
        raise ValueError("there must be at least one island")
    return in_flight.index(min(in_flight))  # index() finds the lowest of equals


def plan_seeding(root: Candidate, islands: int) -> list[Copy]:
    """After the baseline finishes, every other island starts from a copy of it."""
    return [Copy(root.id, root.island, island, "seed")
            for island in range(islands) if island != root.island]


def migration_due(finished: int, last_migration_at: int, interval: int) -> bool:
    """Time to migrate: `interval` finished experiments since the last migration (0: never)."""
    return interval > 0 and finished - last_migration_at >= interval


def plan_migration(island_survivors: Sequence[Sequence[Candidate]], size: int) -> list[Copy]:
    """Ring migration: each island's best goes to the next island, unless the same program is
    already there or it would not survive there (all decided on the same snapshot)."""
    count = len(island_survivors)
    if count < 2:
        return []
    copies = []
    for island, members in enumerate(island_survivors):
        if not members:
            continue
        best = members[0]
        target = (island + 1) % count
        residents = island_survivors[target]
        if any(r.source_hash == best.source_hash for r in residents):
            continue
        if verdict(best, residents, size) == "keep":
            copies.append(Copy(best.id, island, target, "migration"))
    return copies


def plan_broadcast(best: Candidate, island_survivors: Sequence[Sequence[Candidate]],
                   size: int) -> list[Copy]:
    """Gossip: a new best of the run goes to every other island at once (what a swarm of
    agents sharing their best does), where that code is not there yet and would survive."""
    copies = []
    for island, residents in enumerate(island_survivors):
        if island == best.island or any(r.source_hash == best.source_hash for r in residents):
            continue
        if verdict(best, residents, size) == "keep":
            copies.append(Copy(best.id, best.island, island, "broadcast"))
    return copies


def plan_reseeds(stagnation: Sequence[int], island_survivors: Sequence[Sequence[Candidate]],
                 patience: int) -> list[Reseed]:
    """Islands with no improvement in `patience` finished experiments (0: never) restart from
    the best island's survivors, if that island is strictly better than theirs."""
    if patience <= 0 or len(island_survivors) < 2:
        return []
    ranked = [(rank_key(members[0]), island)
              for island, members in enumerate(island_survivors) if members]
    if not ranked:
        return []
    _, best_island = min(ranked)
    leader = island_survivors[best_island]
    plans = []
    for island, members in enumerate(island_survivors):
        if island == best_island or stagnation[island] < patience:
            continue
        if members and not leader[0].val_bpb < members[0].val_bpb:  # type: ignore[operator]
            continue
        plans.append(Reseed(island, best_island, tuple(c.id for c in leader)))
    return plans
