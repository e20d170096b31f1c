"""The built-in mutation operator kinds: each one's config class and registry row.

Builders import their mutator lazily, so reading a config never imports the LLM client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator

from evolve.config.section import (
    NonNegative,
    NonNegativeInt,
    OperatorSection,
    Positive,
    PositiveInt,
)
from evolve.mutate.base import Mutator
from evolve.mutate.registry import BuildContext, OperatorKind, register_operator

if TYPE_CHECKING:
    from evolve.mutate.cost import PriceTable
    from evolve.mutate.llm import LLMMutator


class HeuristicOperator(OperatorSection):
    kind: Literal["heuristic"]
    max_tries: PositiveInt = 32  # moves tried before the proposal gives up


class LLMOperator(OperatorSection):
    """An LLM over the Messages API. Capabilities: `Secrets` (its key variable), `Rate`
    (`tokens_per_minute`), `Spending` (its prices); its mutator satisfies `Health`."""

    kind: Literal["llm"]
    model: str = "claude-sonnet-5-5"
    base_url: str | None = None  # any server that speaks the Messages API
    api_key_env: str = "ANTHROPIC_API_KEY"
    temperature: Annotated[float, Field(ge=0, le=1)] = 1.0
    max_tokens: PositiveInt = 16000
    timeout_s: Positive = 300.0
    max_apply_retries: NonNegativeInt = 2
    tokens_per_minute: PositiveInt | None = None  # account rate budget; None = unlimited
    input_usd_per_mtok: NonNegative | None = None  # None = the mutator's price table
    output_usd_per_mtok: NonNegative | None = None

    @field_validator("model")
    @classmethod
    def _model_named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a model, e.g. claude-sonnet-5-5")
        return value

    def label(self) -> str:
        from evolve.mutate.operators import label_of

        return label_of(self.kind, self.model)

    def secret_names(self) -> Sequence[str]:
        return [self.api_key_env]

    def price_table(self) -> PriceTable:
        from evolve.mutate.cost import PriceTable

        prices = PriceTable()
        if self.input_usd_per_mtok is None:
            return prices
        output = self.output_usd_per_mtok
        entry = {"input": self.input_usd_per_mtok,
                 "output": output if output is not None else prices.lookup(self.model).output}
        return PriceTable.from_config({self.model: entry})


class CrossoverOperator(OperatorSection):
    kind: Literal["crossover"]


class CommandOperator(OperatorSection):
    kind: Literal["command"]
    argv: Annotated[list[str], Field(min_length=1)]
    timeout_s: Positive = 600.0
    # environment variables the agent gets (e.g. ANTHROPIC_API_KEY); it gets no other secret
    secrets: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] = []
    readonly: list[str] = []  # extra paths the agent's program needs, visible read-only
    sandbox: Literal["require", "warn"] = "warn"  # no jail on this machine: refuse, or warn

    def secret_names(self) -> Sequence[str]:
        """The secrets the agent is given: the driver takes them out of its environment too."""
        return list(self.secrets)


def build_llm(op: LLMOperator, context: BuildContext) -> LLMMutator:
    from evolve.mutate.llm import LLMMutator
    from evolve.mutate.ratelimit import RateLimiter

    return LLMMutator(
        model=op.model, base_url=op.base_url, api_key_env=op.api_key_env,
        # 1.0 is the API's default; sending nothing keeps models without sampling parameters happy
        temperature=None if op.temperature == 1.0 else op.temperature,
        max_tokens=op.max_tokens, timeout_s=op.timeout_s, max_apply_retries=op.max_apply_retries,
        prices=op.price_table(), ledger=context.ledger,
        limiter=RateLimiter(context.max_in_flight, op.tokens_per_minute),
        proposal_timeout_s=context.proposal_timeout_s, seed=context.seed)


def build_heuristic(op: HeuristicOperator, context: BuildContext) -> Mutator:
    from evolve.mutate.heuristic import HeuristicMutator

    return HeuristicMutator(max_tries=op.max_tries)


def build_command(op: CommandOperator, context: BuildContext) -> Mutator:
    from evolve.mutate.command import CommandMutator

    return CommandMutator(list(op.argv), template_dir=context.template_dir, timeout_s=op.timeout_s,
                          secrets=op.secrets, readonly=op.readonly, sandbox=op.sandbox)


def build_crossover(op: CrossoverOperator, context: BuildContext) -> Mutator:
    """Crossover reuses the first LLM operator's client, budget and health (or a default LLM
    mutator when the config has none)."""
    from evolve.mutate.crossover import CrossoverMutator

    base: Any = context.first_of("llm") or build_llm(LLMOperator(kind="llm"), context)
    return CrossoverMutator(base)


register_operator(OperatorKind("heuristic", HeuristicOperator, build_heuristic))
register_operator(OperatorKind("llm", LLMOperator, build_llm))
register_operator(OperatorKind("crossover", CrossoverOperator, build_crossover))
register_operator(OperatorKind("command", CommandOperator, build_command))
