"""Proposals: mutators run as concurrent tasks, so a slow or broken one never stalls a worker.

`start()` builds the mutation context and runs the mutator off the event loop's critical path,
with its timeout and the static pre-flight checks; the outcome comes back through `post` as a
`ProposalDone`, and `child()` turns it into the candidate the shell stores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from evolve.controller.core import Propose
from evolve.controller.store_index import StoreIndex
from evolve.controller.wiring import RunFacts
from evolve.guard.preflight import (
    check_child,
    check_not_duplicate,
    harness_modules,
)
from evolve.mutate.base import MutationContext, Mutator, Proposal, unified_diff
from evolve.mutate.notebook import LabNotebook
from population.candidate import Candidate, Status
from population.store import Store

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

    def start(self, decision: Propose) -> None:
        """Ask the decision's mutator for a child of its parent, as a task of its own."""
        self.store.set_meta("next_ticket", str(decision.ticket + 1))
        parent = self.store.get(decision.parent_id)
        mutator = self.mutators.get(decision.operator)
        context = MutationContext(
            parent=parent, lineage=self.memory.lineage(parent),
            inspirations=self._inspirations(decision.island),
            tried_on_parent=self.memory.tried_on(parent),
            notebook=self._notebook(), program_md=self.program_md,
            mutable_files=self.facts.mutable_files, seed=decision.seed,
            trigger=decision.trigger.value, note=decision.note,
        )
        task = asyncio.get_running_loop().create_task(
            self._mutate(decision, parent, mutator, context))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def child(self, done: ProposalDone, now: float) -> Candidate:
        """The candidate a proposal becomes: `proposed`, or `rejected` with the reason."""
        proposal, parent = done.proposal, done.parent
        reason = proposal.error or done.rejection
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
        )

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
            rejection = await asyncio.to_thread(self._static_checks, parent.files, proposal.files)
        self.post(ProposalDone(decision.ticket, parent, decision.island, decision.seed,
                               proposal, rejection))

    def _static_checks(self, parent_files: Mapping[str, str], files: Mapping[str, str]) -> str:
        """`evolve.guard.preflight.check_child` less the duplicate check (the store answers
        that when the child is added): the first verdict's message, or ""."""
        return check_child(parent_files, files, mutable_files=self.facts.mutable_files,
                           harness_modules=self._harness_modules).reason

    def _notebook(self) -> str:
        """The lab notebook, rebuilt at most every NOTEBOOK_REFRESH_S: with hundreds of
        workers results arrive several times a second, and a notebook seconds old is as good."""
        now = self.clock()
        if self._notebook_at is None or now - self._notebook_at >= NOTEBOOK_REFRESH_S:
            self._notebook_text = self.notebook.text()
            self._notebook_at = now
        return self._notebook_text

    def _inspirations(self, island: int) -> list[Candidate]:
        found = []
        for other in range(self.facts.islands):
            if other != island:
                best = self.store.best(other)
                if best is not None:
                    found.append(best)
        return found[:3]


def candidate_id(ticket: int) -> str:
    return f"c{ticket:05d}"


def _error(mutator: str, reason: str) -> Proposal:
    return Proposal(files={}, description="", rationale="", mutator=mutator, error=reason)
