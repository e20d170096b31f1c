"""Repair: a child that crashed on a bug gets one proposal that fixes it.

An autoresearch agent reads the traceback and fixes the typo; a population should too,
rather than lose the idea to a shape mismatch. The repair's parent is the crashed candidate
itself (its source and traceback are the prompt), so the lineage shows idea -> fix, and the
fix keeps the idea instead of reverting it. Repairs are an operator of their own (`repair`),
triggered by the crash rather than drawn by weight; one per crashed child, never a repair of
a repair (a fix that crashes again is not chased further).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from evolve.mutate.base import MutationContext, Proposal
from evolve.mutate.operators import REPAIR
from evolve.mutate.prompt import Prompt, PromptLimits, parent_head, system_text
from evolve.mutate.untrusted import fenced
from population.candidate import Candidate, Status

if TYPE_CHECKING:  # the controller asks `wants_repair` without loading the LLM client
    from evolve.mutate.llm import LLMMutator

_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\w*(?:Error|Exception): ",
                        re.MULTILINE)


def has_traceback(log: str) -> bool:
    return bool(_TRACEBACK.search(log or ""))


def wants_repair(candidate: Candidate) -> bool:
    """A crash with a traceback in its log, not itself a repair: worth one fix."""
    return (candidate.status is Status.CRASHED and candidate.mutator != REPAIR
            and has_traceback(candidate.log_tail))


def build_repair_prompt(context: MutationContext, limits: PromptLimits | None = None) -> Prompt:
    """The crashed child as the parent, its traceback as data, and one ask: fix the bug."""
    crashed, limits = context.parent, limits or PromptLimits()
    system = [{"type": "text", "text": system_text(context), "cache_control": {"type": "ephemeral"}}]
    ask = "\n\n".join([
        f"# This child crashed\nIt tried: {crashed.description or '(no description)'}\n"
        f"Outcome: {crashed.status.value}" + (f" ({crashed.reason})" if crashed.reason else ""),
        "## The end of its log, with the traceback\n"
        + fenced(crashed.log_tail, limits.log_tail_chars * 2),
        "# Your task\nFix the bug that made it crash, in the source shown above, so that the "
        "idea it tried actually runs. Keep the idea: do not revert it, do not start a "
        "different experiment. Make the smallest change that fixes the cause (not just the "
        "symptom). DESCRIPTION: start it with \"fix:\" and say what was wrong.",
    ])
    content = [{"type": "text", "text": parent_head(context, limits)},
               {"type": "text", "text": ask}]
    return Prompt(system, [{"role": "user", "content": content}])


class RepairMutator:
    """Fixes a crashed child; shares the LLM mutator's client, budget, limits and health."""

    name = REPAIR

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
        log = context.parent.log_tail
        if not has_traceback(log):
            return Proposal(files={}, description="", rationale="", mutator=self.name,
                            model=self.llm.model,
                            error=f"nothing to repair: {context.parent.id} left no traceback")
        prompt = build_repair_prompt(context, self.llm.limits)
        return await self.llm.run_prompt(prompt, context, self.name)
