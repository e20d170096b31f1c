"""The pure scheduler core: decisions for given events, in milliseconds."""

from __future__ import annotations

import random

from evolve.controller.core import (
    Cancel,
    GiveUp,
    History,
    Migrate,
    ProposalFailed,
    ProposalReady,
    Propose,
    Requeue,
    ResultArrived,
    Run,
    Scheduler,
    Settings,
    Stop,
    StopRequested,
    Tick,
    WorkerJoined,
    WorkerLost,
)


class Champion:
    """Always proposes from the last candidate it was told about (enough for the core)."""

    def __init__(self, root: str = "root") -> None:
        self.best = root

    def choose_parent(self, island: int, rng: random.Random) -> str:
        return self.best


def of(kind, decisions):
    return [d for d in decisions if isinstance(d, kind)]


def start(n_workers: int, **settings) -> tuple[Scheduler, list]:
    core = Scheduler(Settings(**settings), Champion(), "root")
    out = []
    for i in range(n_workers):
        out += core.handle(WorkerJoined(worker_id=f"w{i}", now=0.0))
    return core, out


def finish_root(core: Scheduler, out: list, val: float = 1.0, now: float = 10.0) -> list:
    """The root's result; returns the proposals made while it ran, then what it leads to."""
    (run,) = of(Run, out)
    return of(Propose, out) + core.handle(ResultArrived(
        candidate_id="root", worker_id=run.worker_id, outcome="done", val_bpb=val, now=now))


def test_children_of_the_root_are_proposed_and_run_while_it_runs():
    core, out = start(4)
    assert of(Run, out) == [Run("root", "w0", 1)]  # the root first
    proposals = of(Propose, out)
    assert len(proposals) == 4 and all(p.parent_id == "root" for p in proposals)
    assert len({p.seed for p in proposals}) == 4
    runs = []
    for i, p in enumerate(proposals):
        runs += of(Run, core.handle(ProposalReady(ticket=p.ticket, candidate_id=f"c{i}",
                                                  now=1.0 + i)))
    assert runs == [Run("c0", "w1", 1), Run("c1", "w2", 1), Run("c2", "w3", 1)]
    assert core.status().running == 4 and core.status().ready == 1
    out = core.handle(ResultArrived(candidate_id="c0", worker_id="w1", outcome="done",
                                    val_bpb=0.9, now=5.0))  # before the root: nothing waits
    assert of(Run, out) == [Run("c3", "w1", 1)]
    assert [p.parent_id for p in of(Propose, out)] == ["root"]  # still the only parent
    out = finish_root(core, [Run("root", "w0", 1)], now=10.0)
    assert all(p.parent_id == "root" for p in of(Propose, out))  # Champion: the root's id
    assert not of(Stop, out)


def test_a_failed_root_cancels_the_runs_beside_it_and_stops_with_its_reason():
    core, out = start(3)
    proposals = of(Propose, out)
    runs = []
    for i, p in enumerate(proposals[:2]):
        runs += of(Run, core.handle(ProposalReady(ticket=p.ticket, candidate_id=f"c{i}",
                                                  now=1.0)))
    assert len(runs) == 2 and core.status().running == 3
    out = core.handle(ResultArrived(candidate_id="root", worker_id="w0", outcome="crashed",
                                    now=5.0))
    cancelled = of(Cancel, out)
    assert [(c.candidate_id, c.worker_id) for c in cancelled] == [("c0", "w1"), ("c1", "w2")]
    assert all(c.reason.startswith("cancelled: the baseline (root root) did not finish")
               for c in cancelled)
    (stop,) = of(Stop, out)
    assert "baseline" in stop.reason and "crashed" in stop.reason
    assert not of(Run, out) and not of(Propose, out) and not of(GiveUp, out)
    assert core.status().finished == 1  # the root only: a cancelled child is no result
    # a cancelled run's late result changes nothing
    assert core.handle(ResultArrived(candidate_id="c0", worker_id="w1", outcome="done",
                                     val_bpb=0.5, now=6.0)) == []


def test_steady_state_keeps_every_worker_busy():
    core, out = start(4, lookahead=1)
    out = finish_root(core, out)
    pending = of(Propose, out)
    rng = random.Random(1)
    running: dict[str, str] = {}
    now, n = 10.0, 0
    for _ in range(300):
        now += 1.0
        if pending and (rng.random() < 0.6 or not running):
            p = pending.pop(rng.randrange(len(pending)))
            n += 1
            out = core.handle(ProposalReady(ticket=p.ticket, candidate_id=f"c{n}", now=now))
        else:
            cid = rng.choice(sorted(running))
            out = core.handle(ResultArrived(candidate_id=cid, worker_id=running.pop(cid),
                                            outcome="done", val_bpb=2.0, now=now))
        for run in of(Run, out):
            running[run.candidate_id] = run.worker_id
        pending += of(Propose, out)
        status = core.status()
        # A free worker never waits while a child is ready, and the pipeline stays full.
        assert status.ready == 0 or status.running == 4
        assert status.ready + status.proposing == 4
        assert status.proposing == len(pending)


def test_lookahead_zero_is_strictly_sequential():
    core, out = start(1, lookahead=0)
    out = finish_root(core, out)
    for i in range(5):
        (p,) = of(Propose, out)
        assert not of(Run, out)
        out = core.handle(ProposalReady(ticket=p.ticket, candidate_id=f"c{i}", now=20.0 + i))
        assert of(Run, out) == [Run(f"c{i}", "w0", 1)] and not of(Propose, out)
        out = core.handle(ResultArrived(candidate_id=f"c{i}", worker_id="w0", outcome="done",
                                        val_bpb=1.0, now=20.5 + i))


def test_lookahead_zero_with_a_rejection_proposes_again():
    core, out = start(1, lookahead=0)
    out = finish_root(core, out)
    (p,) = of(Propose, out)
    out = core.handle(ProposalFailed(ticket=p.ticket, reason="duplicate", now=11.0))
    assert len(of(Propose, out)) == 1


def test_max_experiments_never_overshoots():
    core, out = start(4, max_experiments=5)
    out = finish_root(core, out)
    proposals = of(Propose, out)
    assert len(proposals) == 4  # 1 finished + 4 = 5
    runs = []
    for i, p in enumerate(proposals):
        runs += of(Run, core.handle(ProposalReady(ticket=p.ticket, candidate_id=f"c{i}", now=11.0)))
    assert len(runs) == 4
    for r in runs[:3]:
        out = core.handle(ResultArrived(candidate_id=r.candidate_id, worker_id=r.worker_id,
                                        outcome="crashed", now=12.0))
        assert not of(Propose, out) and not of(Run, out)
    out = core.handle(ResultArrived(candidate_id=runs[3].candidate_id, worker_id=runs[3].worker_id,
                                    outcome="done", val_bpb=0.5, now=13.0))
    assert out == [Stop("max_experiments reached (5)")]
    assert core.status().finished == 5 and core.stopped


def test_max_hours_lets_running_finish_then_stops():
    core, out = start(2, max_hours=1.0)
    out = finish_root(core, out, now=10.0)
    p = of(Propose, out)[0]
    (run,) = of(Run, core.handle(ProposalReady(ticket=p.ticket, candidate_id="c", now=20.0)))
    assert core.next_wakeup() == 3600.0
    assert core.handle(Tick(now=3601.0)) == []
    assert core.status().closing.startswith("max_hours")
    out = core.handle(ResultArrived(candidate_id="c", worker_id=run.worker_id, outcome="done",
                                    val_bpb=0.9, now=3700.0))
    assert out == [Stop("max_hours reached (1 h)")]


def test_max_hours_counts_time_before_resume():
    core = Scheduler(Settings(max_hours=1.0), Champion(), "root",
                     history=History(root_done=True, finished=1, elapsed_s=3500.0))
    assert core.handle(WorkerJoined(worker_id="w", now=0.0))
    assert core.handle(Tick(now=101.0)) == [Stop("max_hours reached (1 h)")]


def test_target_val_bpb_stops():
    core, out = start(1, target_val_bpb=0.8)
    out = finish_root(core, of(Run, out), val=0.79)
    assert out == [Stop("target val_bpb 0.8 reached (0.790000)")]


def test_failed_baseline_stops_with_reason():
    core, out = start(2)
    (run,) = of(Run, out)
    out = core.handle(ResultArrived(candidate_id="root", worker_id="w0", outcome="crashed", now=5.0))
    (stop,) = out
    assert isinstance(stop, Stop) and "baseline" in stop.reason


def test_llm_budget_stops_proposals_but_ready_children_still_run():
    core, out = start(2, max_llm_usd=1.0)
    out = finish_root(core, out)
    p1, p2 = of(Propose, out)
    out = core.handle(ProposalReady(ticket=p1.ticket, candidate_id="a", cost_usd=0.6, now=11.0))
    (run_a,) = of(Run, out)
    assert of(Propose, out)  # under the cap: refill
    out = core.handle(ProposalReady(ticket=p2.ticket, candidate_id="b", cost_usd=0.6, now=12.0))
    (run_b,) = of(Run, out)
    assert run_b.candidate_id == "b" and not of(Propose, out)
    # The proposal already in flight still lands and runs; nothing new is proposed.
    out = core.handle(ResultArrived(candidate_id="a", worker_id=run_a.worker_id, outcome="done",
                                    val_bpb=1, now=20.0))
    assert not of(Propose, out)
    out = core.handle(ResultArrived(candidate_id="b", worker_id=run_b.worker_id, outcome="done",
                                    val_bpb=1, now=21.0))
    assert not out  # one proposal is still in flight
    assert core.status().proposing == 1


def test_llm_budget_stop_after_last_child():
    core, out = start(1, max_llm_usd=1.0, lookahead=0)
    out = finish_root(core, out)
    (p,) = of(Propose, out)
    out = core.handle(ProposalReady(ticket=p.ticket, candidate_id="a", cost_usd=2.0, now=11.0))
    assert of(Run, out) == [Run("a", "w0", 1)]
    out = core.handle(ResultArrived(candidate_id="a", worker_id="w0", outcome="done", val_bpb=1, now=20.0))
    assert out == [Stop("LLM budget spent ($2.00 of $1)")]


def test_lost_attempt_is_requeued_to_the_front_then_crashed_after_n():
    core, out = start(2, max_lost_attempts=2, lookahead=1)
    out = finish_root(core, out)
    p1, p2 = of(Propose, out)
    (run,) = of(Run, core.handle(ProposalReady(ticket=p1.ticket, candidate_id="a", now=11.0)))
    core.handle(ProposalReady(ticket=p2.ticket, candidate_id="b", now=11.0))  # runs on the other worker
    # Worker w0 dies with "a" on it: requeued; no free worker, so it waits at the front.
    out = core.handle(WorkerLost(worker_id=run.worker_id, now=12.0))
    assert Requeue("a", 1) in out and not of(Run, out)
    out = core.handle(WorkerJoined(worker_id="w9", now=13.0))
    assert of(Run, out)[0] == Run("a", "w9", 2)
    # A stale result from the dead worker is ignored.
    assert core.handle(ResultArrived(candidate_id="a", worker_id=run.worker_id, outcome="done",
                                     val_bpb=0.1, now=14.0)) == []
    out = core.handle(ResultArrived(candidate_id="a", worker_id="w9", outcome="lost", now=15.0))
    assert Requeue("a", 2) in out and Run("a", "w9", 3) in out
    finished = core.status().finished
    out = core.handle(ResultArrived(candidate_id="a", worker_id="w9", outcome="lost", now=16.0))
    (give_up,) = of(GiveUp, out)
    assert give_up.candidate_id == "a" and "3 times" in give_up.reason
    assert core.status().finished == finished + 1


def test_concurrent_proposals_are_capped():
    core, out = start(50, max_concurrent_proposals=8, lookahead=2)
    out = finish_root(core, out)
    assert len(of(Propose, out)) == 8


def test_tokens_per_minute_budget_paces_proposals():
    core, out = start(10, tokens_per_minute=30_000, tokens_per_proposal_guess=10_000)
    out = finish_root(core, out)
    proposals = of(Propose, out)
    assert len(proposals) == 3
    out = core.handle(ProposalReady(ticket=proposals[0].ticket, candidate_id="a", tokens=10_000, now=11.0))
    assert not of(Propose, out)  # 30k charged in this minute when the calls started (t=0)
    assert core.next_wakeup() == 60.0
    assert not of(Propose, core.handle(Tick(now=59.0)))
    out = core.handle(Tick(now=60.5))
    assert len(of(Propose, out)) == 3
    # Usage above the estimate is settled against the budget when the answer comes.
    out = core.handle(ProposalReady(ticket=proposals[1].ticket, candidate_id="b", tokens=30_000,
                                    now=61.0))
    assert not of(Propose, core.handle(Tick(now=120.6)))


def test_migration_every_interval():
    core, out = start(1, islands=2, migration_interval=2, lookahead=0)
    out = finish_root(core, out)
    migrations = []
    for i in range(4):
        (p,) = of(Propose, out)
        core.handle(ProposalReady(ticket=p.ticket, candidate_id=f"c{i}", now=20.0 + i))
        out = core.handle(ResultArrived(candidate_id=f"c{i}", worker_id="w0", outcome="done",
                                        val_bpb=1.0, now=20.5 + i))
        migrations += of(Migrate, out)
    assert migrations == [Migrate(2), Migrate(4)]


def test_islands_share_the_proposals():
    core, out = start(4, islands=2)
    out = finish_root(core, out)
    assert sorted(p.island for p in of(Propose, out)) == [0, 0, 1, 1]


def test_stop_requested_drains_running_then_stops():
    core, out = start(2)
    out = finish_root(core, out)
    p = of(Propose, out)[0]
    (run,) = of(Run, core.handle(ProposalReady(ticket=p.ticket, candidate_id="a", now=11.0)))
    assert core.handle(StopRequested(now=12.0)) == []
    out = core.handle(ResultArrived(candidate_id="a", worker_id=run.worker_id, outcome="done",
                                    val_bpb=1.0, now=13.0))
    assert out == [Stop("stopped by user")]
    assert core.handle(Tick(now=14.0)) == []


def test_resume_rebuilds_state():
    history = History(finished=7, proposals_made=12, root_done=True, best_val_bpb=0.9,
                      queued=[("was_running", 1), ("proposed", 0)], lost_counts={"was_running": 1},
                      attempts={"was_running": 1})
    core = Scheduler(Settings(max_experiments=9, islands=2), Champion(), "root", history=history)
    out = core.handle(WorkerJoined(worker_id="w0", now=0.0))
    assert of(Run, out) == [Run("was_running", "w0", 2)]
    assert not of(Propose, out)  # 7 finished + 1 running + 1 queued = 9: nothing more
    out = core.handle(WorkerJoined(worker_id="w1", now=1.0))
    assert of(Run, out) == [Run("proposed", "w1", 1)]
    core.handle(ResultArrived(candidate_id="proposed", worker_id="w1", outcome="done", val_bpb=1, now=2.0))
    out = core.handle(ResultArrived(candidate_id="was_running", worker_id="w0", outcome="done",
                                    val_bpb=1, now=3.0))
    assert out == [Stop("max_experiments reached (9)")]


def test_resume_continues_proposal_numbering():
    core = Scheduler(Settings(), Champion(), "root", history=History(root_done=True, proposals_made=12))
    (p,) = of(Propose, core.handle(WorkerJoined(worker_id="w0", now=0.0)))
    assert p.ticket == 12


def test_migration_keeps_its_rhythm_across_resume():
    # Every 3 finished experiments; a run resumed after 4 migrates at 6 and 9, not at 5 or 7.
    core = Scheduler(Settings(islands=2, migration_interval=3), Champion(), "root",
                     history=History(finished=4, root_done=True))
    pending = of(Propose, core.handle(WorkerJoined(worker_id="w0", now=0.0)))
    migrations, n = [], 0
    while n < 5:
        n += 1
        proposal = pending.pop(0)
        out = core.handle(ProposalReady(ticket=proposal.ticket, candidate_id=f"c{n}", now=n))
        pending += of(Propose, out)
        (run,) = of(Run, out)
        out = core.handle(ResultArrived(candidate_id=run.candidate_id, worker_id="w0",
                                        outcome="done", val_bpb=1.0, now=n + 0.5))
        pending += of(Propose, out)
        migrations += of(Migrate, out)
    assert migrations == [Migrate(6), Migrate(9)]
