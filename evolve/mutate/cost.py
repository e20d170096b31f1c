"""What LLM calls cost: a price table, usage -> dollars, and the run's running total.

The ledger holds a cap: every call in flight is reserved at its worst case (its prompt
written to the cache, plus `max_tokens` of output) before it is sent, so sixteen calls in
flight cannot overshoot the cap between them; the reservation is replaced by the real cost
when the call ends (or by what a broken stream had used).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from population import budget

USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_input_tokens",
              "cache_creation_input_tokens")


@dataclass(frozen=True)
class Price:
    """Dollars per million tokens. Cache writes (5-minute TTL) and reads are priced apart."""

    input: float
    output: float
    cache_write: float
    cache_read: float

    @classmethod
    def standard(cls, input: float, output: float) -> Price:
        """Anthropic's usual ratios: cache write 1.25x input, cache read 0.1x input."""
        return cls(input, output, input * 1.25, input * 0.1)


# Model id -> price, from each model's page on platform.claude.com/docs (models/<id>/overview,
# "Pricing": input, output, 5m cache write, cache read), checked 2026-12. A model missing here
# (Haiku 5.5's price depends on the prompt's size; a local server's model) needs its prices in
# the config: the run refuses to guess.
DEFAULT_PRICES: dict[str, Price] = {
    "claude-fable-5-1": Price.standard(10.0, 50.0),
    "claude-opus-5-5": Price(4.0, 20.0, 5.0, 0.20),
    "claude-opus-5": Price(5.0, 25.0, 6.25, 0.50),
    "claude-sonnet-5-5": Price(2.0, 10.0, 2.50, 0.20),
    "claude-sonnet-5": Price(2.0, 10.0, 2.50, 0.20),
    "claude-opus-4-6": Price.standard(5.0, 25.0),
    "claude-opus-4-5": Price.standard(5.0, 25.0),
    "claude-sonnet-4-6": Price.standard(3.0, 15.0),
    "claude-sonnet-4-5": Price.standard(3.0, 15.0),
    "claude-haiku-4-5": Price.standard(1.0, 5.0),
}
# A dated snapshot (claude-sonnet-5-5-20261007, Vertex's claude-opus-5@20260724) is priced as
# its model; nothing else is matched loosely, so claude-sonnet-5-7 is not Sonnet 5's price.
_SNAPSHOT = re.compile(r"(?:[-@]\d{8}|\[1m\])$")


class UnknownPrice(KeyError):
    """No price for a model: the config must give one."""

    def __str__(self) -> str:
        model = self.args[0]
        return (f"no price is known for model {model}: set input_usd_per_mtok and "
                "output_usd_per_mtok on its operator (0 for a free local server)")


@dataclass(frozen=True)
class PriceTable:
    """Model id -> Price; an unknown model raises `UnknownPrice` (never a silent guess)."""

    prices: Mapping[str, Price] = field(default_factory=lambda: dict(DEFAULT_PRICES))

    @classmethod
    def from_config(cls, table: Mapping[str, Mapping[str, float]] | None = None) -> PriceTable:
        """From plain dicts: {model: {input, output[, cache_write, cache_read]}} per million;
        the config's entries override the built-in table."""
        prices = dict(DEFAULT_PRICES)
        prices.update({name: _price(entry) for name, entry in (table or {}).items()})
        return cls(prices)

    def find(self, model: str) -> Price | None:
        if model in self.prices:
            return self.prices[model]
        return self.prices.get(_SNAPSHOT.sub("", model))

    def lookup(self, model: str) -> Price:
        price = self.find(model)
        if price is None:
            raise UnknownPrice(model)
        return price

    def cost(self, model: str, usage: Mapping[str, int]) -> float:
        """Dollars for one call's usage (missing fields count as zero)."""
        price = self.lookup(model)
        micro = (usage.get("input_tokens", 0) * price.input
                 + usage.get("output_tokens", 0) * price.output
                 + usage.get("cache_creation_input_tokens", 0) * price.cache_write
                 + usage.get("cache_read_input_tokens", 0) * price.cache_read)
        return micro / 1_000_000

    def worst_case(self, model: str, prompt_tokens: int, max_tokens: int) -> float:
        """The most one call can cost: the whole prompt written to the cache (the dearest way
        to read it) and `max_tokens` of output."""
        price = self.lookup(model)
        per_input = max(price.input, price.cache_write, price.cache_read)
        return (prompt_tokens * per_input + max_tokens * price.output) / 1_000_000


def _price(entry: Mapping[str, float]) -> Price:
    base = Price.standard(float(entry["input"]), float(entry["output"]))
    return Price(base.input, base.output, float(entry.get("cache_write", base.cache_write)),
                 float(entry.get("cache_read", base.cache_read)))


def usage_from_response(usage: object) -> dict[str, int]:
    """The four usage counts from an SDK `Usage` (absent cache fields are zero)."""
    return {key: int(getattr(usage, key, 0) or 0) for key in USAGE_KEYS}


def add_usage(total: Mapping[str, int], more: Mapping[str, int]) -> dict[str, int]:
    return {key: int(total.get(key, 0)) + int(more.get(key, 0)) for key in USAGE_KEYS}


class SpendLedger:
    """The run's LLM spend: every call is recorded as it returns, so a cap holds mid-proposal.

    `spent_usd` starts from what a resumed run had already spent; `reserved_usd` is the
    worst case of the calls in flight.
    """

    def __init__(self, max_usd: float | None = None, spent_usd: float = 0.0) -> None:
        self.max_usd = max_usd
        self.spent_usd = spent_usd
        self.reserved_usd = 0.0
        self.calls = 0
        self.usage: dict[str, int] = dict.fromkeys(USAGE_KEYS, 0)
        self.by_model: dict[str, float] = {}

    @classmethod
    def resume(cls, costs: Iterable[float], max_usd: float | None = None) -> SpendLedger:
        """A ledger for a resumed run, from the stored candidates' `cost_usd`."""
        return cls(max_usd, float(sum(costs)))

    def affordable(self, worst_usd: float, *, counting_reserved: bool = True) -> bool:
        """Whether a call costing at most `worst_usd` fits under the cap (now, or once the
        calls in flight are settled when `counting_reserved` is False)."""
        held = self.reserved_usd if counting_reserved else 0.0
        return budget.usd_fits(self.spent_usd, held + worst_usd, self.max_usd)

    def reserve(self, worst_usd: float) -> bool:
        """Hold `worst_usd` for a call about to be sent; False if the cap does not allow it."""
        if not self.affordable(worst_usd):
            return False
        self.reserved_usd += worst_usd
        return True

    def release(self, worst_usd: float) -> None:
        self.reserved_usd = max(0.0, self.reserved_usd - worst_usd)

    def record(self, model: str, usage: Mapping[str, int], cost_usd: float) -> None:
        self.calls += 1
        self.spent_usd += cost_usd
        self.usage = add_usage(self.usage, usage)
        self.by_model[model] = self.by_model.get(model, 0.0) + cost_usd

    @property
    def exhausted(self) -> bool:
        """True once the cap is reached: no new proposals (running experiments still finish)."""
        return budget.usd_reached(self.spent_usd, self.max_usd)

    @property
    def remaining_usd(self) -> float | None:
        return budget.usd_left(self.spent_usd, self.max_usd)

    def summary(self) -> str:
        cap = "" if self.max_usd is None else f" of ${self.max_usd:.2f}"
        return f"${self.spent_usd:.2f}{cap} in {self.calls} LLM calls"
