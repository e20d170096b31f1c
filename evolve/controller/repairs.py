"""Which crashes trigger a repair proposal (`evolve.mutate.repair`), as the shell asks.

The decision needs the crashed child's log (is there a traceback?), which the pure core's
events do not carry, so the shell asks here when it records a crash and hands the request
to the core as a `ProposalsTriggered` event (`Controller.trigger`).
"""

from __future__ import annotations

from evolve.controller.triggers import Trigger, TriggeredProposal
from evolve.mutate.repair import wants_repair
from population.candidate import Candidate


def repair_requests(candidate: Candidate, operator: str | None) -> tuple[TriggeredProposal, ...]:
    """One repair of `candidate`, on its own island, if it crashed with a traceback."""
    if operator is None or not wants_repair(candidate):
        return ()
    return (TriggeredProposal(parent_id=candidate.id, operator=operator, trigger=Trigger.REPAIR,
                              island=candidate.island, note="repair"),)
