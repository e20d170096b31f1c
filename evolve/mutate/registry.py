"""The mutation operator registry: one row per `mutation.operators` kind.

A row joins a kind's typed config class (a `Section` with `kind: Literal[...]`) to the
builder that makes its mutator. The config's allowed kinds derive from the rows (the
schema rebuilds its operator union when a row is added), and `build_mutators` is the one
place mutators are made. What an operator can do beyond `propose` it declares by satisfying
the capability protocols below, never by attribute names the caller guesses:

* `Health` (a mutator): it can tell that its backend is down (`mutation.on_llm_down`);
* `Secrets` (a config): environment variables it needs kept from the workers;
* `Rate` (a config): a tokens-per-minute budget the scheduler core respects;
* `Spending` (a config): its proposals cost money, charged to the run's spend ledger.

A new mutator kind: a module with the mutator, its config class, and `register_operator`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from evolve.config.section import OperatorSection
from evolve.mutate.base import Mutator

if TYPE_CHECKING:
    from evolve.mutate.cost import PriceTable, SpendLedger


# ---------------------------------------------------------------- capabilities


@runtime_checkable
class Health(Protocol):
    """A mutator whose backend can go down: the run stops or falls back while it is."""

    @property
    def is_down(self) -> bool: ...

    @property
    def down_reason(self) -> str: ...


@runtime_checkable
class Secrets(Protocol):
    """An operator config naming environment variables the driver keeps and workers never see."""

    def secret_names(self) -> Sequence[str]: ...


@runtime_checkable
class Rate(Protocol):
    """An operator config with an account rate budget (tokens per minute; None = unlimited)."""

    tokens_per_minute: int | None


@runtime_checkable
class Spending(Protocol):
    """An operator config whose proposals cost money: its prices per million tokens."""

    def price_table(self) -> PriceTable: ...


def secret_names(operators: Sequence[Any]) -> list[str]:
    """Every secret the configured operators need, in order, once each."""
    names: list[str] = []
    for op in operators:
        if isinstance(op, Secrets):
            names += [n for n in op.secret_names() if n and n not in names]
    return names


def token_rate(operators: Sequence[Any]) -> int | None:
    """The run's token budget per minute: the tightest of the operators' (None: unlimited)."""
    rates = [op.tokens_per_minute for op in operators
             if isinstance(op, Rate) and op.tokens_per_minute]
    return min(rates) if rates else None


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class OperatorFacts:
    """The run-wide facts an operator may need beside its own config section, built once
    (`evolve.run.app.build_mutators`)."""

    template_dir: str | Path | None = None
    max_in_flight: int = 8  # proposals in flight at once (`mutation.max_concurrent_proposals`)
    proposal_timeout_s: float | None = None  # the mutator's own deadline (`mutator_deadline`)
    down_after_s: float = 900.0  # an LLM is down after this long without a successful call
    seed: int = 0


@dataclass
class BuildContext:
    """What the builders share: the run's facts, its spend ledger and the mutators built so
    far."""

    operators: Sequence[Any]
    facts: OperatorFacts = OperatorFacts()
    ledger: SpendLedger | None = None
    built: dict[int, Mutator] = field(default_factory=dict)  # operator index -> mutator

    def build(self, index: int) -> Mutator:
        """The mutator of operator `index`, built once (crossover shares the first LLM's)."""
        if index not in self.built:
            op = self.operators[index]
            self.built[index] = OPERATORS[op.kind].build(op, self)
        return self.built[index]

    def first_of(self, kind: str) -> Mutator | None:
        """The mutator of the first operator of `kind`, built if need be (None: no such)."""
        for index, op in enumerate(self.operators):
            if op.kind == kind:
                return self.build(index)
        return None


@dataclass(frozen=True)
class OperatorKind:
    """One registry row: a kind, its typed config class, and its builder."""

    kind: str
    config: type[OperatorSection]
    build: Callable[[Any, BuildContext], Mutator]


OPERATORS: dict[str, OperatorKind] = {}
_listeners: list[Callable[[], None]] = []


def register_operator(row: OperatorKind) -> OperatorKind:
    """Add (or replace) a kind; configs may name it from now on."""
    OPERATORS[row.kind] = row
    for listener in _listeners:
        listener()
    return row


def unregister_operator(kind: str) -> None:
    """Remove a kind (a test's toy one)."""
    OPERATORS.pop(kind, None)
    for listener in _listeners:
        listener()


def on_register(listener: Callable[[], None]) -> None:
    """Call `listener` after each registration (the schema rebuilds its operator union)."""
    _listeners.append(listener)


def build_mutators(operators: Sequence[Any], names: Sequence[str], *,
                   facts: OperatorFacts = OperatorFacts(),
                   ledger: SpendLedger | None = None) -> dict[str, Mutator]:
    """The mutators for `mutation.operators`, keyed by `names` (the controller's operator
    names), each made by its kind's registry row from its section and the run's facts."""
    context = BuildContext(operators, facts=facts, ledger=ledger)
    for index, op in enumerate(operators):
        if op.kind not in OPERATORS:
            raise ValueError(f"unknown operator kind {op.kind!r}")
        context.build(index)
    return {name: context.built[i] for i, name in enumerate(names)}


def kinds() -> Mapping[str, type[OperatorSection]]:
    """Kind -> config class, for the schema's union."""
    return {kind: row.config for kind, row in OPERATORS.items()}
