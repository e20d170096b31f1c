"""Operators that speak through an LLM mutator (crossover, repair): one client, one budget,
one set of rate limits and one health for all of them, so a run spends and fails over as one."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the controller imports these operators without loading the LLM client
    from evolve.mutate.llm import LLMMutator


class SharesLLM:
    """The health, spending and fatal-error state of the LLM mutator this operator uses."""

    def __init__(self, llm: LLMMutator) -> None:
        self.llm = llm

    @property
    def is_down(self) -> bool:
        return self.llm.is_down

    @property
    def down_reason(self) -> str:
        return self.llm.down_reason

    @property
    def budget_exhausted(self) -> bool:
        return self.llm.budget_exhausted

    @property
    def fatal_reason(self) -> str:
        return self.llm.fatal_reason

    @property
    def spend_summary(self) -> str:
        return self.llm.spend_summary
