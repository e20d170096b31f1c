"""What a run does when the LLM cannot be used: down for a while (`mutation.on_llm_down`),
refused for good (bad key, unknown model), or out of budget (`budget.max_llm_usd`).

- down: stop with a clear message (`evolve resume` goes on once it is back), or keep the
  workers busy with the offline heuristic mutator, asking the LLM again now and then;
- refused for good: always stop at once, naming the reason (a bad key or an unknown model
  is the user's to fix; falling back all night would hide it);
- budget spent: LLM proposals stop; the offline operators (heuristic) keep the workers busy
  if the config has one with weight > 0, otherwise the run stops and says why.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from evolve.mutate.base import MutationContext, Mutator, Proposal
from evolve.mutate.registry import Health

PROBE_EVERY = 10  # while down, every Nth proposal asks the LLM again
OFFLINE_KINDS = ("heuristic", "merge")  # operators that spend no LLM money


def can_go_down(mutator: Mutator) -> bool:
    """Whether the operator declares the `Health` capability (its backend can be down)."""
    return isinstance(mutator, Health)


@runtime_checkable
class Refusable(Protocol):
    """A backend that can refuse for good (a bad key, an unknown model): never probed again."""

    @property
    def fatal_reason(self) -> str: ...


@runtime_checkable
class Budgeted(Protocol):
    """A backend whose spend is capped: `budget_exhausted` once no call fits under the cap."""

    @property
    def budget_exhausted(self) -> bool: ...

    @property
    def spend_summary(self) -> str: ...


def _fatal(mutator: object) -> str:
    return mutator.fatal_reason if isinstance(mutator, Refusable) else ""


def _spent(mutator: object) -> bool:
    return isinstance(mutator, Budgeted) and mutator.budget_exhausted


class OfflineStandIn:
    """An LLM-backed operator whose proposals go to `offline` while the LLM is down (when
    `when_down`) or its budget is spent (when `when_spent`)."""

    def __init__(self, llm: Mutator, offline: Mutator, *, when_down: bool = True,
                 when_spent: bool = False, probe_every: int = PROBE_EVERY) -> None:
        self.llm = llm
        self.offline = offline
        self.name = llm.name
        self.when_down = when_down
        self.when_spent = when_spent
        self.probe_every = probe_every
        self._since_probe = 0

    @property
    def is_down(self) -> bool:
        return bool(self.llm.is_down)  # type: ignore[attr-defined]

    @property
    def down_reason(self) -> str:
        return str(self.llm.down_reason)  # type: ignore[attr-defined]

    @property
    def budget_exhausted(self) -> bool:
        return _spent(self.llm)

    @property
    def fatal_reason(self) -> str:
        return _fatal(self.llm)

    @property
    def spend_summary(self) -> str:
        return self.llm.spend_summary if isinstance(self.llm, Budgeted) else ""

    def _stand_in_reason(self) -> str:
        if self.when_spent and _spent(self.llm):
            return "the LLM budget is spent"
        if self.when_down and self.is_down and not _fatal(self.llm):
            self._since_probe += 1
            if self._since_probe < self.probe_every:
                return f"the LLM is down: {self.down_reason}"
            self._since_probe = 0  # this one probes the LLM
        return ""

    async def propose(self, context: MutationContext) -> Proposal:
        reason = self._stand_in_reason()
        if not reason:
            return await self.llm.propose(context)
        proposal = await self.offline.propose(context)
        return dataclasses.replace(
            proposal, rationale=f"{proposal.rationale} [{self.offline.name} instead of "
                                f"{self.name}: {reason}]".strip())


def with_offline(mutators: Mapping[str, Mutator], offline: Mutator, *, when_down: bool,
                 when_spent: bool) -> dict[str, Mutator]:
    """Every LLM-backed operator wrapped so that an outage or a spent budget hands its
    proposals to `offline` (as the config asks)."""
    if not (when_down or when_spent):
        return dict(mutators)
    return {name: OfflineStandIn(m, offline, when_down=when_down, when_spent=when_spent)
            if can_go_down(m) else m for name, m in mutators.items()}


def outage_message(reason: str) -> str:
    return (f"the LLM is down: {reason}. Running experiments finished; go on with `evolve resume "
            "RUN_DIR` once it is back, or set mutation.on_llm_down: fallback to keep the workers "
            "busy with the heuristic mutator meanwhile")


def refused_message(reason: str) -> str:
    return (f"the LLM refused the run: {reason}. Running experiments finished; fix the "
            "operator's model or key, then `evolve resume RUN_DIR`")


def spent_message(summary: str) -> str:
    return (f"the LLM budget is spent ({summary}). Running experiments finished; raise "
            "budget.max_llm_usd and `evolve resume RUN_DIR`, or add an operator of kind "
            "heuristic with weight > 0 to keep the workers busy once the budget is spent")


def refusal(mutators: Mapping[str, Mutator]) -> str:
    """The stop message of the first LLM operator refused for good ("" = none is)."""
    for mutator in mutators.values():
        if can_go_down(mutator) and _fatal(mutator):
            return refused_message(_fatal(mutator))
    return ""


def why_stop(mutators: Mapping[str, Mutator], *, stop_when_down: bool,
             stop_when_spent: bool) -> str:
    """Why the run must stop now ("" = it need not), from the LLM operators' state."""
    if refused := refusal(mutators):
        return refused
    for mutator in mutators.values():
        if not can_go_down(mutator):
            continue
        if stop_when_down and mutator.is_down:  # type: ignore[attr-defined]
            return outage_message(mutator.down_reason)  # type: ignore[attr-defined]
        if stop_when_spent and _spent(mutator):
            return spent_message(mutator.spend_summary)  # type: ignore[attr-defined]
    return ""


async def watch_llm(mutators: Mapping[str, Mutator], stop: asyncio.Event,
                    on_stop: Callable[[str], None], *, stop_when_down: bool = True,
                    stop_when_spent: bool = False, poll_s: float = 1.0) -> None:
    """Set `stop` (no new proposals; running experiments finish) once the LLM operators
    cannot go on and the config has nothing to stand in for them."""
    if not any(can_go_down(m) for m in mutators.values()):
        return
    while not stop.is_set():
        reason = why_stop(mutators, stop_when_down=stop_when_down,
                          stop_when_spent=stop_when_spent)
        if reason:
            on_stop(reason)
            stop.set()
            return
        await asyncio.sleep(poll_s)
