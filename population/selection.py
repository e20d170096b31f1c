"""Parent selection: which survivor of an island the next child is made from.

Every strategy takes the island's survivors best first (as `Store.survivors` returns them)
and a `random.Random`, so a run's choices replay exactly under its seed. `STRATEGIES` is the
one registry: the config's `selection.strategy` names and parameters derive from it, and
`make_selector` builds every selector from it. A new strategy is a class here plus one
`register_strategy` row (or a row registered from anywhere, e.g. a test).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

from annotated_types import Ge, Gt

from population.candidate import Candidate


class ParentSelector(Protocol):
    """Picks one parent from survivors ordered best first (never empty).

    A strategy's quirks live here: `from_root` (every child is made from the root, not from a
    survivor) and `population_size` (how many survivors an island keeps under it)."""

    name: str
    from_root: bool

    def population_size(self, size: int) -> int: ...

    def select(self, survivors: Sequence[Candidate], rng: random.Random) -> Candidate: ...


class _Selector:
    """Defaults for the quirks: draws from the survivors, keeps `population.size` of them."""

    from_root = False

    def population_size(self, size: int) -> int:
        return size


def _require(survivors: Sequence[Candidate]) -> None:
    if not survivors:
        raise ValueError("cannot select a parent from an island with no survivors")


@dataclass(frozen=True)
class Greedy(_Selector):
    """Always the champion: the one-agent keep/revert loop (population 1 per island)."""

    name: str = "greedy"

    def population_size(self, size: int) -> int:
        return 1  # only the champion survives, whatever `population.size` says

    def select(self, survivors: Sequence[Candidate], rng: random.Random) -> Candidate:
        _require(survivors)
        return survivors[0]


@dataclass(frozen=True)
class Tournament(_Selector):
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
class Rank(_Selector):
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
class FromRoot(_Selector):
    """Random search: every child is made from the root, never from a survivor (the
    baseline a population search must beat). The root is the lineage start, generation 0;
    the population layer passes it in with the survivors."""

    name: str = "random"
    from_root = True

    def select(self, survivors: Sequence[Candidate], rng: random.Random) -> Candidate:
        _require(survivors)
        return min(survivors, key=lambda c: c.generation)


# ---------------------------------------------------------------- the registry

PositiveInt = Annotated[int, Gt(0)]
Positive = Annotated[float, Gt(0)]
NonNegative = Annotated[float, Ge(0)]


@dataclass(frozen=True)
class Strategy:
    """One registry row: a strategy's config name, its parameters, and how it is built.

    `params`: the `selection` config keys it reads -> (type, default); the type may carry
    annotated_types bounds, which the config checks. `build` gets the `selection` section
    (anything with those keys as attributes) and returns the selector."""

    name: str
    build: Callable[[Any], ParentSelector]
    params: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)


STRATEGIES: dict[str, Strategy] = {}
_listeners: list[Callable[[], None]] = []


def register_strategy(row: Strategy) -> Strategy:
    """Add (or replace) a strategy; `selection.strategy: <name>` then builds it."""
    STRATEGIES[row.name] = row
    _changed()
    return row


def unregister_strategy(name: str) -> None:
    """Remove a strategy (a test's toy one)."""
    STRATEGIES.pop(name, None)
    _changed()


def on_register(listener: Callable[[], None]) -> None:
    """Call `listener` whenever the registry changes (the config schema rebuilds from it)."""
    _listeners.append(listener)


def _changed() -> None:
    for listener in _listeners:
        listener()


register_strategy(Strategy("greedy", lambda section: Greedy()))
register_strategy(Strategy("tournament", lambda section: Tournament(section.tournament_size),
                           params={"tournament_size": (PositiveInt, 3)}))
register_strategy(Strategy("rank", lambda section: Rank(section.rank_power),
                           params={"rank_power": (Positive, 1.0)}))
register_strategy(Strategy("random", lambda section: FromRoot()))


class _Section:
    """A `selection` section from keyword arguments, the registry's defaults filled in."""

    def __init__(self, strategy: str, values: Mapping[str, Any]) -> None:
        self.strategy = strategy
        for row in STRATEGIES.values():
            for key, (_, default) in row.params.items():
                setattr(self, key, values.get(key, default))


def make_selector(strategy: str, **params: Any) -> ParentSelector:
    """The selector `strategy` names, built from its registry row; `params` are `selection`
    config keys (e.g. `tournament_size=2`), the rest take the registry's defaults."""
    row = STRATEGIES.get(strategy)
    if row is None:
        raise ValueError(f"unknown selection strategy {strategy!r}; choose one of "
                         f"{tuple(STRATEGIES)}")
    unknown = sorted(set(params) - {k for r in STRATEGIES.values() for k in r.params})
    if unknown:
        raise ValueError(f"unknown selection parameters {unknown}")
    return row.build(_Section(strategy, params))


def proposal_rng(run_seed: int, proposal_index: int) -> random.Random:
    """A Random for one proposal, fixed by the run seed and the proposal's number, so choices
    do not depend on the order in which concurrent results arrived."""
    return random.Random(f"{run_seed}:{proposal_index}")
