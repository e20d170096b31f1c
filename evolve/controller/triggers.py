"""Triggered proposals: children caused by an event rather than drawn by weight.

Most proposals are drawn: the core picks an operator by weight and a parent by the selection
strategy whenever the pipeline has room. Some are *triggered* by what just happened — carry
a win across lines when a child beats a parent that is no longer the best, repair a crashed
child — and name their parent and operator themselves. The scheduler core emits them as
`Propose(..., trigger=...)` decisions, ahead of drawn ones, and keeps their results out of
the operator weight adaptation (a triggered operator was not chosen by weight, so its
children say nothing about the weights).

Two ways in, both handled by the core (`evolve.controller.core.Scheduler`):

* a `TriggerRule` given to the core: asked on every finished result, it returns the
  requests that result triggers (pure: it sees the event, nothing else);
* a `ProposalsTriggered` event, for a shell that decides from what the store knows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from evolve.controller.core import ResultArrived


class Trigger(str, Enum):
    """Why a proposal was made."""

    DRAWN = "drawn"      # by weight, to keep the pipeline full (every proposal before triggers)
    CARRY = "carry"      # carry a win across lines (e.g. merge it into the current best)
    REPAIR = "repair"    # repair a child that crashed
    OTHER = "other"      # a rule of a plug-in's own


@dataclass(frozen=True)
class TriggeredProposal:
    """A request for one proposal from `parent_id` by `operator` (an operator name the
    controller's mutators are keyed by). `island`: where the child goes (None: the parent's,
    as the shell knows it; the core uses the least busy island). `note` travels to the
    mutator's context unchanged (e.g. the id of the other line to carry)."""

    parent_id: str
    operator: str
    trigger: Trigger
    island: int | None = None
    note: str = ""


class TriggerRule(Protocol):
    """Decides which proposals a finished result triggers (pure: the event alone)."""

    def on_result(self, event: ResultArrived) -> Sequence[TriggeredProposal]: ...
