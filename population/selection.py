"""Parent selection: which survivor of an island the next child is made from.

Every strategy takes the island's survivors best first (as `Store.survivors` returns them)
and a `random.Random`, so a run's choices replay exactly under its seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from population.candidate import Candidate


class ParentSelector(Protocol):
    """Picks one parent from survivors ordered best first (never empty)."""

    name: str

    def select(self, survivors: Sequence[Candidate], rng: random.Random) -> Candidate: ...


def _require(survivors: Sequence[Candidate]) -> None:
    if not survivors:
        raise ValueError("cannot select a parent from an island with no survivors")


@dataclass(frozen=True)
class Greedy:
    """Always the champion: the one-agent keep/revert loop (population 1 per island)."""

    name: str = "greedy"

    def select(self, survivors: Sequence[Candidate], rng: random.Random) -> Candidate:
        _require(survivors)
        return survivors[0]


@dataclass(frozen=True)
class Tournament:
    """The best of `tournament_size` survivors drawn without replacement."""

    tournament_size: int = 3
    name: str = "tournament"

    def __post_init__(self) -> None:
        if self.tournament_size < 1:
            raise ValueError(f"tournament_size must be at least 1, not {self.tournament_size}")

    def select(self, survivors: Sequence[Candidate], rng: random.Random) -> Candidate:
        _require(survivors)
        drawn = rng.sample(range(len(survivors)), min(self.tournament_size, len(survivors)))
        return survivors[min(drawn)]  # best first: the lowest index wins


@dataclass(frozen=True)
class Rank:
    """Power law on rank, weight ∝ (rank + 1) ** -power: scale-free, never raw scores."""

    power: float = 1.0
    name: str = "rank"

    def __post_init__(self) -> None:
        if self.power < 0:
            raise ValueError(f"rank power must be >= 0 (0 is uniform), not {self.power}")

    def weights(self, count: int) -> list[float]:
        return [(rank + 1) ** -self.power for rank in range(count)]

    def select(self, survivors: Sequence[Candidate], rng: random.Random) -> Candidate:
        _require(survivors)
        return rng.choices(survivors, weights=self.weights(len(survivors)))[0]


@dataclass(frozen=True)
class FromRoot:
    """Random search: every child is made from the root, never from a survivor (the
    baseline a population search must beat). The root is the lineage start, generation 0;
    the population layer passes it in with the survivors."""

    name: str = "random"

    def select(self, survivors: Sequence[Candidate], rng: random.Random) -> Candidate:
        _require(survivors)
        return min(survivors, key=lambda c: c.generation)


STRATEGIES = ("greedy", "tournament", "rank", "random")


def make_selector(strategy: str, *, tournament_size: int = 3,
                  power: float = 1.0) -> ParentSelector:
    """The selector a config names (`selection.strategy` and its parameters)."""
    if strategy == "greedy":
        return Greedy()
    if strategy == "tournament":
        return Tournament(tournament_size)
    if strategy == "rank":
        return Rank(power)
    if strategy == "random":
        return FromRoot()
    raise ValueError(f"unknown selection strategy {strategy!r}; choose one of {STRATEGIES}")


def proposal_rng(run_seed: int, proposal_index: int) -> random.Random:
    """A Random for one proposal, fixed by the run seed and the proposal's number, so choices
    do not depend on the order in which concurrent results arrived."""
    return random.Random(f"{run_seed}:{proposal_index}")
