"""Triggered proposals in the pure core: caused by an event, made ahead of drawn ones, kept
out of the operator statistics (evolve/controller/triggers.py)."""

from __future__ import annotations

from test_controller_core import Champion, finish_root, of, start

from evolve.controller.core import (
    ProposalFailed,
    ProposalReady,
    ProposalsTriggered,
    Propose,
    ResultArrived,
    Run,
    Scheduler,
    Settings,
    WorkerJoined,
)
from evolve.controller.triggers import Trigger, TriggeredProposal


class RepairCrashes:
    """Toy rule: every crashed experiment triggers a repair of it by the `fixer` operator."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_result(self, event: ResultArrived) -> list[TriggeredProposal]:
        self.seen.append(event.candidate_id)
        if event.outcome != "crashed":
            return []
        return [TriggeredProposal(parent_id=event.candidate_id, operator="fixer",
                                  trigger=Trigger.REPAIR, note="crashed")]


def test_a_rule_triggers_a_proposal_ahead_of_drawn_ones():
    rule = RepairCrashes()
    core = Scheduler(Settings(lookahead=1, operators=(("heuristic", 1.0),)), Champion(), "root",
                     triggers=[rule])
    out = core.handle(WorkerJoined(worker_id="w0", now=0.0))
    out = finish_root(core, out)
    (drawn,) = of(Propose, out)
    assert drawn.trigger is Trigger.DRAWN and drawn.operator == "heuristic"
    out = core.handle(ProposalReady(ticket=drawn.ticket, candidate_id="c1", now=11.0))
    (run,) = of(Run, out)
    out = core.handle(ResultArrived(candidate_id="c1", worker_id="w0", outcome="crashed", now=12.0))
    proposals = of(Propose, out)
    assert proposals[0] == Propose(proposals[0].ticket, "c1", 0, "fixer", proposals[0].seed,
                                   Trigger.REPAIR, "crashed")
    assert all(p.trigger is Trigger.DRAWN for p in proposals[1:])
    assert rule.seen == ["root", "c1"]


def test_triggered_children_do_not_teach_the_operator_weights():
    core, out = start(1, lookahead=1, operators=(("heuristic", 1.0), ("llm", 1.0)),
                      adaptive_operators=True)
    (drawn,) = of(Propose, finish_root(core, out))
    (carry,) = of(Propose, core.handle(ProposalsTriggered(
        requests=(TriggeredProposal("root", "llm", Trigger.CARRY),), now=11.0)))
    assert carry.trigger is Trigger.CARRY and carry.operator == "llm"
    core.handle(ProposalReady(ticket=drawn.ticket, candidate_id="drawn", now=12.0))
    core.handle(ProposalReady(ticket=carry.ticket, candidate_id="carried", now=13.0))
    before = core.operator_stats()
    core.learn("llm", True, candidate_id="carried")      # triggered: not counted
    assert core.operator_stats() == before
    core.learn("llm", True, candidate_id="drawn")        # drawn: counted
    assert core.operator_stats()["llm"].trials == before["llm"].trials + 1


def test_triggered_proposals_wait_for_the_root_and_respect_the_proposal_cap():
    core, out = start(2, lookahead=1, max_concurrent_proposals=2)
    drawn = of(Propose, out)  # children of the root, drawn while it runs: the cap is full
    assert [p.trigger for p in drawn] == [Trigger.DRAWN, Trigger.DRAWN]
    requests = tuple(TriggeredProposal("root", "heuristic", Trigger.OTHER) for _ in range(3))
    assert not of(Propose, core.handle(ProposalsTriggered(requests=requests, now=1.0)))
    (root_run,) = of(Run, out)
    again = of(Propose, core.handle(ProposalFailed(ticket=drawn[0].ticket, reason="x", now=2.0)))
    assert [p.trigger for p in again] == [Trigger.DRAWN]  # the root is still running
    assert not of(Propose, finish_root(core, [root_run]))  # the cap: 2 drawn in flight
    out = core.handle(ProposalFailed(ticket=again[0].ticket, reason="x", now=11.0))
    assert [p.trigger for p in of(Propose, out)] == [Trigger.OTHER]  # the first, then
