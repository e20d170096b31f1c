"""The asynchronous-greedy trigger: a win on a stale line is merged onto the best at once.

With several workers, a child can beat its parent after another win has already moved the
island's best elsewhere; the two wins then sit on different lines. When a merge operator is
configured, that event triggers the merge (`population.wins.carry_after`) as a proposal of
its own (`evolve.controller.triggers`), not drawn by weight.
"""

from __future__ import annotations

from evolve.controller.triggers import Trigger, TriggeredProposal
from population.candidate import Candidate, Status
from population.store import Store
from population.wins import carry_after


class CarryTrigger:
    """Asked around each recorded result; says which merge it triggers, if any."""

    def __init__(self, store: Store, operator: str | None) -> None:
        self.store = store
        # the first merge operator, whatever its weight (0: merges only when triggered);
        # none configured (None): the trigger is off
        self.operator = operator

    def before(self, candidate_id: str) -> Candidate | None:
        """The island's best just before this candidate's result is recorded."""
        if self.operator is None:
            return None
        return self.store.best(self.store.get(candidate_id).island)

    def after(self, child: Candidate, best_before: Candidate | None) -> TriggeredProposal | None:
        """The merge the recorded `child` triggers: (target, donor) as a triggered proposal."""
        if self.operator is None or child.status is not Status.DONE or child.parent_id is None:
            return None
        parent = self.store.get(child.parent_id)
        best_after = self.store.best(child.island)
        if best_after is None:
            return None
        found = carry_after(child, parent, best_before, best_after)
        if found is None:
            return None
        target, donor = found
        if donor in self.store.donors_into(target):
            return None  # already carried (a drawn merge got there first)
        return TriggeredProposal(parent_id=target, operator=self.operator, trigger=Trigger.CARRY,
                                 island=child.island, note=donor)
