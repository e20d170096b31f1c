"""Extra runs in the scheduler core (seed re-runs, stages): first in line, outside the
experiment budget, still run while closing; then Stop, with nothing queued at the end (the
held-out test split is scored in every run, never by a retraining)."""

from __future__ import annotations

import random

from evolve.controller.core import (
    ProposalReady,
    Propose,
    ResultArrived,
    Run,
    Scheduler,
    Settings,
    Stop,
    WorkerJoined,
    WorkerLost,
)


class Root:
    def choose_parent(self, island: int, rng: random.Random) -> str:
        return "root"


def of(kind, decisions):
    return [d for d in decisions if isinstance(d, kind)]


def test_extra_runs_go_first_and_do_not_count_as_experiments():
    core = Scheduler(Settings(lookahead=1, max_experiments=2), Root(), "root")
    out = core.handle(WorkerJoined(worker_id="w0", now=0.0))
    assert of(Run, out) == [Run("root", "w0", 1)]
    # Start full: a child of the root is proposed while it runs; it is ready (waiting for the
    # one worker) before the root's re-runs are queued, and still they go first.
    (propose,) = of(Propose, out)
    assert not of(Run, core.handle(ProposalReady(ticket=propose.ticket, candidate_id="c0",
                                                 now=0.5)))
    out = core.handle(ResultArrived(candidate_id="root", worker_id="w0", outcome="done",
                                    val_bpb=1.0, then_run=("root@x1", "root@x2"), now=1.0))
    assert of(Run, out) == [Run("root@x1", "w0", 1)]
    out = core.handle(ResultArrived(candidate_id="root@x1", worker_id="w0", outcome="done", now=2))
    assert of(Run, out) == [Run("root@x2", "w0", 1)]
    out = core.handle(ResultArrived(candidate_id="root@x2", worker_id="w0", outcome="done", now=3))
    assert of(Run, out) == [Run("c0", "w0", 1)] and not of(Stop, out)
    assert core.status().finished == 1  # the root only: extra runs are not experiments


def test_extra_runs_run_while_closing_then_the_run_stops_with_nothing_more_queued():
    core = Scheduler(Settings(lookahead=0, max_experiments=1), Root(), "root")
    core.handle(WorkerJoined(worker_id="w0", now=0.0))
    out = core.handle(ResultArrived(candidate_id="root", worker_id="w0", outcome="done",
                                    val_bpb=1.0, then_run=("root@x1",), now=1.0))
    assert of(Run, out) == [Run("root@x1", "w0", 1)]  # budget spent, the re-run still runs
    assert not of(Propose, out) and not of(Stop, out)
    out = core.handle(ResultArrived(candidate_id="root@x1", worker_id="w0", outcome="done", now=2))
    assert out == [Stop("max_experiments reached (1)")]


def test_a_run_without_extra_runs_stops_as_its_budget_is_spent():
    core = Scheduler(Settings(lookahead=0, max_experiments=1), Root(), "root")
    core.handle(WorkerJoined(worker_id="w0", now=0.0))
    out = core.handle(ResultArrived(candidate_id="root", worker_id="w0", outcome="done",
                                    val_bpb=1.0, now=1.0))
    assert out == [Stop("max_experiments reached (1)")]


def test_a_lost_extra_run_is_requeued_first():
    core = Scheduler(Settings(lookahead=0, max_experiments=5), Root(), "root")
    core.handle(WorkerJoined(worker_id="w0", now=0.0))
    out = core.handle(ResultArrived(candidate_id="root", worker_id="w0", outcome="done",
                                    val_bpb=1.0, then_run=("root@x1",), now=1.0))
    assert of(Run, out) == [Run("root@x1", "w0", 1)]
    core.handle(WorkerLost(worker_id="w0", now=2.0))
    out = core.handle(WorkerJoined(worker_id="w1", now=3.0))
    assert of(Run, out) == [Run("root@x1", "w1", 2)]
    out = core.handle(ResultArrived(candidate_id="root@x1", worker_id="w1", outcome="done", now=4))
    assert core.status().finished == 1


def test_an_extra_run_reports_the_best_after_its_decision_for_the_target():
    core = Scheduler(Settings(lookahead=0, max_experiments=9, target_val_bpb=0.9), Root(), "root")
    core.handle(WorkerJoined(worker_id="w0", now=0.0))
    core.handle(ResultArrived(candidate_id="root", worker_id="w0", outcome="done",
                              val_bpb=None, then_run=("root@x1",), now=1.0))
    out = core.handle(ResultArrived(candidate_id="root@x1", worker_id="w0", outcome="done",
                                    val_bpb=0.85, now=2.0))
    assert core.status().best_val_bpb == 0.85
    assert of(Stop, out) == [Stop("target val_bpb 0.9 reached (0.850000)")]
