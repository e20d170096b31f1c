"""What a run does when the LLM is down for good (`mutation.on_llm_down`): stop with a clear
message — `evolve resume` goes on once it is back — or keep the workers busy with the offline
heuristic mutator, asking the LLM again now and then."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping

from evolve.mutate.base import MutationContext, Mutator, Proposal
from evolve.mutate.registry import Health

PROBE_EVERY = 10  # while down, every Nth proposal asks the LLM again


def can_go_down(mutator: Mutator) -> bool:
    """Whether the operator declares the `Health` capability (its backend can be down)."""
    return isinstance(mutator, Health)


class FallbackWhenDown:
    """An LLM-backed operator that hands its proposals to `fallback` while the LLM is down.

    A fatal error (a rejected key) never recovers by itself, so it is not probed again."""

    def __init__(self, llm: Mutator, fallback: Mutator, probe_every: int = PROBE_EVERY) -> None:
        self.llm = llm
        self.fallback = fallback
        self.name = llm.name
        self.probe_every = probe_every
        self._since_probe = 0

    @property
    def is_down(self) -> bool:
        return bool(self.llm.is_down)  # type: ignore[attr-defined]

    @property
    def down_reason(self) -> str:
        return str(self.llm.down_reason)  # type: ignore[attr-defined]

    async def propose(self, context: MutationContext) -> Proposal:
        if self.is_down:
            self._since_probe += 1
            fatal = bool(getattr(getattr(self.llm, "llm", self.llm), "fatal_reason", ""))
            if fatal or self._since_probe < self.probe_every:
                proposal = await self.fallback.propose(context)
                return dataclasses.replace(
                    proposal, rationale=f"{proposal.rationale} [fallback from {self.name}: the "
                                        f"LLM is down: {self.down_reason}]".strip())
            self._since_probe = 0
        return await self.llm.propose(context)


def with_fallback(mutators: Mapping[str, Mutator], fallback: Mutator) -> dict[str, Mutator]:
    """Every LLM-backed operator wrapped so that an outage falls back to `fallback`."""
    return {name: FallbackWhenDown(m, fallback) if can_go_down(m) else m
            for name, m in mutators.items()}


def outage_message(reason: str) -> str:
    return (f"the LLM is down: {reason}. Running experiments finished; go on with `evolve resume "
            "RUN_DIR` once it is back, or set mutation.on_llm_down: fallback to keep the workers "
            "busy with the heuristic mutator meanwhile")


async def stop_when_down(mutators: Mapping[str, Mutator], stop: asyncio.Event,
                         on_down: Callable[[str], None], poll_s: float = 1.0) -> None:
    """Set `stop` (no new proposals; running experiments finish) once any LLM is down."""
    watched = [m for m in mutators.values() if can_go_down(m)]
    if not watched:
        return
    while not stop.is_set():
        for mutator in watched:
            if mutator.is_down:  # type: ignore[attr-defined]
                on_down(outage_message(mutator.down_reason))  # type: ignore[attr-defined]
                stop.set()
                return
        await asyncio.sleep(poll_s)
