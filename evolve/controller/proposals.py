"""Proposals: mutators run as concurrent tasks, so a slow or broken one never stalls a worker.

`start()` builds the mutation context and runs the mutator off the event loop's critical path,
with its timeout and the static pre-flight checks; the outcome comes back through `post` as a
`ProposalDone`, and `child()` turns it into the candidate the shell stores.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from evolve.controller.core import Propose
from evolve.controller.store_index import StoreIndex
from evolve.controller.triggers import Trigger
from evolve.controller.wiring import RunFacts
from evolve.guard.preflight import (
    check_child,
    check_not_duplicate,
    harness_modules,
)
from evolve.mutate.base import INFRASTRUCTURE, MutationContext, Mutator, Proposal, unified_diff
from evolve.mutate.findings import brief_facts, in_flight, pick_inspirations, recent_results
from evolve.mutate.merge import MergeMutator
from evolve.mutate.notebook import LabNotebook
from evolve.mutate.novelty import NoveltyIndex
from population.candidate import Candidate, Status
from population.store import Store
from population.wins import Win

NOTEBOOK_REFRESH_S = 5.0


@dataclass(frozen=True)
class ProposalDone:
    """A mutator's answer, back on the event loop."""

    ticket: int
    parent: Candidate
    island: int
    seed: int
    proposal: Proposal
    rejection: str  # from the static pre-flight checks, "" if they passed
    trigger: Trigger = Trigger.DRAWN  # why the proposal was made (stored on the child)


_PARSE_LOCK = threading.Lock()  # see Proposals._static_checks


class Proposals:
    """The mutation tasks in flight and the candidates their answers become."""

    def __init__(self, store: Store, facts: RunFacts, mutators: Mapping[str, Mutator],
                 memory: StoreIndex, *, timeout_s: float, post: Callable[[ProposalDone], None],
                 clock: Callable[[], float]) -> None:
        self.store = store
        self.facts = facts
        self.timeout_s = timeout_s  # mutation.proposal_timeout_s: the shell's hard cut
        self.mutators = dict(mutators)
        self.memory = memory
        self.post = post
        self.clock = clock
        self._harness_modules = harness_modules(facts.template, facts.mutable_files)
        program = facts.template / "program.md"
        self.program_md = program.read_text() if program.exists() else ""
        self.notebook = LabNotebook(store)
        self.tasks: set[asyncio.Task[None]] = set()
        self._notebook_at: float | None = None
        self._notebook_text = ""
        self._recent_text = ""
        self.novelty = NoveltyIndex(store.children_of)

    def start(self, decision: Propose) -> None:
        """Ask the decision's mutator for a child of its parent, as a task of its own."""
        self.store.set_meta("next_ticket", str(decision.ticket + 1))
        parent = self.store.get(decision.parent_id)
        mutator = self.mutators.get(decision.operator)
        wins: tuple[Win, ...] = ()
        carried: tuple[str, ...] = ()
        if isinstance(mutator, MergeMutator):  # a merge carries a win onto the best
            if decision.trigger is Trigger.CARRY and decision.note:  # this win, this target
                wins = self._win(decision.note)
            else:
                parent = self._merge_target(mutator, decision.island) or parent
                wins = tuple(self.store.wins())
            carried = tuple(self.store.donors_into(parent.id))
        notebook = self._notebook()
        context = MutationContext(
            parent=parent, lineage=self.memory.lineage(parent),
            inspirations=pick_inspirations(self.store, parent, self.facts.islands,
                                           random.Random(decision.seed)),
            tried_on_parent=self.memory.tried_on(parent),
            notebook=notebook, program_md=self.program_md,
            mutable_files=self.facts.mutable_files, seed=decision.seed,
            trigger=decision.trigger.value, note=decision.note,
            wins=wins, carried=carried,
            recent=self._recent_text, in_flight=in_flight(self.store),
            parent_log=parent.log_tail,
            facts=brief_facts(self.store, self.facts.template, self.facts.profile, parent),
            vet=self._vet(parent, decision.ticket),
        )
        task = asyncio.get_running_loop().create_task(
            self._mutate(decision, parent, mutator, context))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def child(self, done: ProposalDone, now: float) -> Candidate:
        """The candidate a proposal becomes: `proposed`, or `rejected` with the reason."""
        proposal, parent = done.proposal, done.parent
        reason = proposal.error or done.rejection
        if proposal.error and proposal.infrastructure:
            reason = INFRASTRUCTURE + reason  # not an experiment: kept out of every prompt
        if not reason:  # duplicates: against the store, here, so two proposals cannot both pass
            reason = check_not_duplicate(proposal.files, self.store.has_hash) or ""
        files = proposal.files if proposal.files else parent.files
        return Candidate(
            id=candidate_id(done.ticket), parent_id=parent.id, island=done.island,
            generation=parent.generation + 1, files=dict(files),
            description=proposal.description, rationale=proposal.rationale,
            mutator=proposal.mutator, model=proposal.model, raw_answer=proposal.raw_answer,
            applied_edit=proposal.applied_edit, diff=unified_diff(parent.files, files),
            usage=dict(proposal.usage), cost_usd=proposal.cost_usd,
            status=Status.REJECTED if reason else Status.PROPOSED, reason=reason,
            seed=self.facts.seed, created_at=now, finished_at=now if reason else None,
            donor_id=proposal.donor_id or None,
            triggered_by=None if done.trigger is Trigger.DRAWN else Trigger(done.trigger).value,
        )

    def _merge_target(self, mutator: MergeMutator, island: int) -> Candidate | None:
        """The line a merge carries a win onto: the island's best, or the run's."""
        return self.store.best() if mutator.target == "global" else self.store.best(island)

    def _win(self, donor_id: str) -> tuple[Win, ...]:
        """The one win a triggered merge carries (none if the donor did not beat its parent)."""
        donor = self.store.get(donor_id)
        base = self.store.get(donor.parent_id) if donor.parent_id else None
        if base is None or donor.val_bpb is None or base.val_bpb is None \
                or not donor.val_bpb < base.val_bpb:
            return ()
        return (Win(donor=donor, base=base),)

    async def _mutate(self, decision: Propose, parent: Candidate, mutator: Mutator | None,
                      context: MutationContext) -> None:
        timeout = self.timeout_s
        if mutator is None:
            proposal = _error(decision.operator, f"no mutator named {decision.operator!r} is set up")
        else:
            try:
                proposal = await asyncio.wait_for(mutator.propose(context), timeout)
            except asyncio.TimeoutError:
                proposal = _error(mutator.name, f"{mutator.name} mutator timed out after {timeout:g} s "
                                                "(mutation.proposal_timeout_s)")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken mutator costs one proposal, never the run
                proposal = _error(mutator.name, f"{mutator.name} mutator failed: "
                                                f"{type(exc).__name__}: {exc}")
        rejection = ""
        if not proposal.error:
            # Parsing and walking 25 KB of source takes tens of ms: off the event loop.
            try:
                rejection = await asyncio.to_thread(self._static_checks, parent.files,
                                                    proposal.files)
            except Exception as exc:  # never lose the proposal (the core would wait for it)
                rejection = f"pre-flight failed: {type(exc).__name__}: {exc}"
        self.post(ProposalDone(decision.ticket, parent, decision.island, decision.seed,
                               proposal, rejection, decision.trigger))

    def _static_checks(self, parent_files: Mapping[str, str], files: Mapping[str, str]) -> str:
        """`evolve.guard.preflight.check_child` less the duplicate check (the store answers
        that when the child is added): the first verdict's message, or "".
        One thread at a time: CPython 3.11 before 3.11.8 corrupts `ast.parse` run in
        concurrent threads ("AST constructor recursion depth mismatch")."""
        with _PARSE_LOCK:
            return check_child(parent_files, files, mutable_files=self.facts.mutable_files,
                               harness_modules=self._harness_modules).reason

    def _notebook(self) -> str:
        """The lab notebook and the recent-results table, rebuilt at most every
        NOTEBOOK_REFRESH_S: with hundreds of workers results arrive several times a second,
        and a table seconds old is as good."""
        now = self.clock()
        if self._notebook_at is None or now - self._notebook_at >= NOTEBOOK_REFRESH_S:
            self._notebook_text = self.notebook.text()
            self._recent_text = recent_results(self.store)
            self._notebook_at = now
        return self._notebook_text

    def _vet(self, parent: Candidate, ticket: int) -> Callable[[Mapping[str, str], str], str]:
        """Pre-flight and the novelty filter, for the mutator to run inside its conversation:
        a refused edit goes back to the model with the reason, within its retries."""
        def vet(files: Mapping[str, str], description: str) -> str:
            return (self._static_checks(parent.files, files)
                    or check_not_duplicate(files, self.store.has_hash) or ""
                    or self.novelty.check(parent, files, description, candidate_id(ticket)))
        return vet


def candidate_id(ticket: int) -> str:
    return f"c{ticket:05d}"


def _error(mutator: str, reason: str) -> Proposal:
    return Proposal(files={}, description="", rationale="", mutator=mutator, error=reason)
