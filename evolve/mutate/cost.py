"""What LLM calls cost: a price table, usage -> dollars, and the run's running total."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

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


# Matched by substring of the model name, first hit wins; override or extend in the config.
DEFAULT_PRICES: dict[str, Price] = {
    "opus": Price.standard(5.0, 25.0),
    "sonnet": Price.standard(3.0, 15.0),
    "haiku": Price.standard(1.0, 5.0),
}


@dataclass(frozen=True)
class PriceTable:
    """Model name -> Price. Unknown models get `default` (set it to zeros for local servers)."""

    prices: Mapping[str, Price] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    default: Price = DEFAULT_PRICES["opus"]  # unknown Claude-like names: err on the dear side

    @classmethod
    def from_config(cls, table: Mapping[str, Mapping[str, float]] | None = None,
                    default: Mapping[str, float] | None = None) -> PriceTable:
        """From plain dicts: {model: {input, output[, cache_write, cache_read]}} per million."""
        # The config's entries come first so they win the substring match.
        prices = {name: _price(entry) for name, entry in (table or {}).items()}
        prices.update({k: v for k, v in DEFAULT_PRICES.items() if k not in prices})
        fallback = _price(default) if default is not None else DEFAULT_PRICES["opus"]
        return cls(prices, fallback)

    def lookup(self, model: str) -> Price:
        if model in self.prices:
            return self.prices[model]
        lowered = model.lower()
        for key, price in self.prices.items():
            if key.lower() in lowered:
                return price
        return self.default

    def cost(self, model: str, usage: Mapping[str, int]) -> float:
        """Dollars for one call's usage (missing fields count as zero)."""
        price = self.lookup(model)
        micro = (usage.get("input_tokens", 0) * price.input
                 + usage.get("output_tokens", 0) * price.output
                 + usage.get("cache_creation_input_tokens", 0) * price.cache_write
                 + usage.get("cache_read_input_tokens", 0) * price.cache_read)
        return micro / 1_000_000


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

    `spent_usd` starts from what a resumed run had already spent.
    """

    def __init__(self, max_usd: float | None = None, spent_usd: float = 0.0) -> None:
        self.max_usd = max_usd
        self.spent_usd = spent_usd
        self.calls = 0
        self.usage: dict[str, int] = dict.fromkeys(USAGE_KEYS, 0)
        self.by_model: dict[str, float] = {}

    @classmethod
    def resume(cls, costs: Iterable[float], max_usd: float | None = None) -> SpendLedger:
        """A ledger for a resumed run, from the stored candidates' `cost_usd`."""
        return cls(max_usd, float(sum(costs)))

    def record(self, model: str, usage: Mapping[str, int], cost_usd: float) -> None:
        self.calls += 1
        self.spent_usd += cost_usd
        self.usage = add_usage(self.usage, usage)
        self.by_model[model] = self.by_model.get(model, 0.0) + cost_usd

    @property
    def exhausted(self) -> bool:
        """True once the cap is reached: no new proposals (running experiments still finish)."""
        return self.max_usd is not None and self.spent_usd >= self.max_usd

    @property
    def remaining_usd(self) -> float | None:
        return None if self.max_usd is None else max(0.0, self.max_usd - self.spent_usd)

    def summary(self) -> str:
        cap = "" if self.max_usd is None else f" of ${self.max_usd:.2f}"
        return f"${self.spent_usd:.2f}{cap} in {self.calls} LLM calls"
