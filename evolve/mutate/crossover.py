"""Crossover: the model sees two parents and writes a child that combines their strengths."""

from __future__ import annotations

from evolve.mutate.base import MutationContext, Proposal
from evolve.mutate.llm import LLMMutator
from evolve.mutate.prompt import build_crossover_prompt


class CrossoverMutator:
    """Edits apply to `context.parent`; the second parent is `context.inspirations[0]`.

    It shares the LLM mutator's client, budget, rate limits and health, so a run spends and
    fails over as one.
    """

    name = "crossover"

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

    async def propose(self, context: MutationContext) -> Proposal:
        # never the parent's own source again (a migration copy of it, say): nothing to combine
        mine = context.parent.source_hash
        others = [c for c in context.inspirations
                  if c.id != context.parent.id and c.source_hash != mine]
        if not others:
            return Proposal(files={}, description="", rationale="", mutator=self.name,
                            model=self.llm.model,
                            error="crossover needs a second parent: the context has no "
                                  "inspiration with a source different from the parent's")
        prompt = build_crossover_prompt(context, others[0], self.llm.limits)
        return await self.llm.run_prompt(prompt, context, self.name)
