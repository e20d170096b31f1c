"""The built-in mutation operator kinds: each one's config class and registry row.

Builders import their mutator lazily, so reading a config never imports the LLM client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

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
    (`tokens_per_minute`), `Spending` (its prices); its mutator satisfies `Health`.

    Checked at load time against what the API accepts for the model (evolve/mutate/models.py):
    the Claude 5 family takes no non-default sampling parameters and no thinking budget
    (thinking is adaptive, steered by `effort`); a model without a known price needs one."""

    kind: Literal["llm"]
    model: str = "claude-sonnet-5-5"
    base_url: str | None = None  # any server that speaks the Messages API
    api_key_env: str = "ANTHROPIC_API_KEY"
    # Sampling parameters: unset by default. The Claude 5 family refuses non-default values
    # (HTTP 400), so they are a config error there; older models and local servers take them.
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: PositiveInt | None = None
    # output_config.effort (thinking is adaptive; never a budget): the levels the model takes
    effort: str | None = None
    max_tokens: PositiveInt = 16000  # thinking counts toward it; an edit itself is ~1-3k
    max_apply_retries: NonNegativeInt = 2
    tokens_per_minute: PositiveInt | None = None  # account rate budget; None = unlimited
    # dollars per million tokens; needed for a model the built-in price table does not know
    input_usd_per_mtok: NonNegative | None = None
    output_usd_per_mtok: NonNegative | None = None
    cache_write_usd_per_mtok: NonNegative | None = None
    cache_read_usd_per_mtok: NonNegative | None = None

    @field_validator("model")
    @classmethod
    def _model_named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a model, e.g. claude-sonnet-5-5")
        return value

    @model_validator(mode="after")
    def _api_accepts(self) -> LLMOperator:
        from evolve.mutate.cost import PriceTable
        from evolve.mutate.models import request_problems

        sampling = {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}
        problems = request_problems(self.model, sampling, self.effort, self.max_tokens)
        if PriceTable().find(self.model) is None and (self.input_usd_per_mtok is None
                                                      or self.output_usd_per_mtok is None):
            problems.append(f"model {self.model} has no known price: set input_usd_per_mtok and "
                            "output_usd_per_mtok (0 for a free local server)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def label(self) -> str:
        from evolve.mutate.operators import label_of

        return label_of(self.kind, self.model)

    def secret_names(self) -> Sequence[str]:
        return [self.api_key_env]

    def price_entry(self) -> dict[str, float] | None:
        """This operator's prices for `PriceTable.from_config` (None: the built-in table)."""
        if self.input_usd_per_mtok is None and self.output_usd_per_mtok is None:
            return None
        from evolve.mutate.cost import PriceTable

        known = PriceTable().find(self.model)
        entry = {"input": self.input_usd_per_mtok if self.input_usd_per_mtok is not None
                 else known.input if known else 0.0,
                 "output": self.output_usd_per_mtok if self.output_usd_per_mtok is not None
                 else known.output if known else 0.0}
        if self.cache_write_usd_per_mtok is not None:
            entry["cache_write"] = self.cache_write_usd_per_mtok
        if self.cache_read_usd_per_mtok is not None:
            entry["cache_read"] = self.cache_read_usd_per_mtok
        return entry

    def price_table(self) -> PriceTable:
        from evolve.mutate.cost import PriceTable

        entry = self.price_entry()
        return PriceTable.from_config({self.model: entry} if entry else None)

    def sampling(self) -> dict[str, float | int | None]:
        """What goes into the body (1.0 is the API's temperature default: sent as nothing)."""
        return {"temperature": None if self.temperature == 1.0 else self.temperature,
                "top_p": self.top_p, "top_k": self.top_k}


class CrossoverOperator(OperatorSection):
    kind: Literal["crossover"]


class RepairOperator(OperatorSection):
    """Repairs of crashed children: triggered by a crash with a traceback, one per crashed
    child, never drawn by weight (so its weight stays 0). It uses the first LLM operator's
    client, budget and health."""

    kind: Literal["repair"]
    weight: NonNegative = 0.0

    @field_validator("weight")
    @classmethod
    def _never_drawn(cls, value: float) -> float:
        if value != 0:
            raise ValueError("a repair is triggered by a crash, never drawn by weight: leave "
                             "weight out (0)")
        return value


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

    return LLMMutator(op, context.facts, ledger=context.ledger)


def build_heuristic(op: HeuristicOperator, context: BuildContext) -> Mutator:
    from evolve.mutate.heuristic import HeuristicMutator

    return HeuristicMutator(max_tries=op.max_tries)


def build_command(op: CommandOperator, context: BuildContext) -> Mutator:
    from evolve.mutate.command import CommandMutator

    return CommandMutator(op, context.facts)


def build_crossover(op: CrossoverOperator, context: BuildContext) -> Mutator:
    """Crossover reuses the first LLM operator's client, budget and health (or a default LLM
    mutator when the config has none)."""
    from evolve.mutate.crossover import CrossoverMutator

    base: Any = context.first_of("llm") or build_llm(LLMOperator(kind="llm"), context)
    return CrossoverMutator(base)


def build_repair(op: RepairOperator, context: BuildContext) -> Mutator:
    from evolve.mutate.repair import RepairMutator

    base: Any = context.first_of("llm") or build_llm(LLMOperator(kind="llm"), context)
    return RepairMutator(base)


register_operator(OperatorKind("heuristic", HeuristicOperator, build_heuristic))
register_operator(OperatorKind("llm", LLMOperator, build_llm))
register_operator(OperatorKind("crossover", CrossoverOperator, build_crossover))
register_operator(OperatorKind("command", CommandOperator, build_command))
register_operator(OperatorKind("repair", RepairOperator, build_repair))
