"""Extra runs keep to the device type of the candidate they re-score (workers.device_groups):
a confirmation or test run of island 1's candidate never runs on island 0's hardware."""

from __future__ import annotations

import json
import random

from test_controller_shell import make_config, make_template

from evolve.controller.core import (
    ExtraRunsQueued,
    ProposalReady,
    Propose,
    ResultArrived,
    Run,
    Scheduler,
    Settings,
    WorkerJoined,
)
from evolve.controller.evidence import NOISE_META, Evidence
from population.candidate import Candidate, Status
from population.extra_runs import parse_job_id
from population.result import Result
from population.store import Store


class Root:
    def choose_parent(self, island: int, rng: random.Random) -> str:
        return "root"


def runs(decisions) -> list[Run]:
    return [d for d in decisions if isinstance(d, Run)]


def two_types() -> Scheduler:
    """Island 0 bound to type A (worker wa, the root's), island 1 to type B (worker wb);
    c0 runs on wa, c1 on wb."""
    core = Scheduler(Settings(lookahead=1, islands=2, device_groups=True), Root(), "root")
    out = core.handle(WorkerJoined(worker_id="wa", device="TYPE-A", now=0.0))
    assert runs(out) == [Run("root", "wa", 1)]
    out += core.handle(WorkerJoined(worker_id="wb", device="TYPE-B", now=0.0))
    # Start full: children of the root are proposed while it runs, one per island here;
    # their tickets are answered once the root is done, so c<i> is island i's child.
    tickets = {d.island: d.ticket for d in out if isinstance(d, Propose)}
    assert sorted(tickets) == [0, 1]
    core.handle(ResultArrived(candidate_id="root", worker_id="wa", outcome="done", val_bpb=2.0,
                              now=1.0))
    assert runs(core.handle(ProposalReady(ticket=tickets[0], candidate_id="c0", now=2.0))) == \
        [Run("c0", "wa", 1)]
    assert runs(core.handle(ProposalReady(ticket=tickets[1], candidate_id="c1", now=2.0))) == \
        [Run("c1", "wb", 1)]
    assert core.island_devices() == {0: "TYPE-A", 1: "TYPE-B"}
    return core


def check_confirmations_stay_on_b(core: Scheduler, islands: dict[str, int]) -> None:
    out = core.handle(ResultArrived(candidate_id="c1", worker_id="wb", outcome="done",
                                    val_bpb=1.0, then_run=("c1@x1", "c1@x2"), islands=islands,
                                    now=3.0))
    assert runs(out) == [Run("c1@x1", "wb", 1)]
    # The type-A worker frees up while a confirmation of c1 still waits: it must not take it.
    out = core.handle(ResultArrived(candidate_id="c0", worker_id="wa", outcome="done",
                                    val_bpb=1.5, now=4.0))
    assert all(run.worker_id == "wb" for run in runs(out) if "@x" in run.candidate_id)
    assert "c1@x2" not in core.running
    out = core.handle(ResultArrived(candidate_id="c1@x1", worker_id="wb", outcome="done", now=5.0))
    assert Run("c1@x2", "wb", 1) in runs(out)


def test_a_new_best_on_island_1_is_confirmed_on_its_own_device_type_only():
    check_confirmations_stay_on_b(two_types(), {"c1@x1": 1, "c1@x2": 1})


def test_without_a_named_island_the_job_follows_where_its_candidate_ran():
    check_confirmations_stay_on_b(two_types(), {})


def test_queued_extra_runs_of_a_candidate_not_run_here_use_the_named_island():
    core = two_types()
    # "old" was scored on island 1 before a restart (the final best lineage's test runs).
    out = core.handle(ExtraRunsQueued(job_ids=("old@x7", "root@x8"),
                                      islands={"old@x7": 1, "root@x8": 0}, now=3.0))
    assert not runs(out)  # both workers busy
    out = core.handle(ResultArrived(candidate_id="c0", worker_id="wa", outcome="done",
                                    val_bpb=1.5, now=4.0))
    assert runs(out)[0] == Run("root@x8", "wa", 1)  # old@x7 is ahead but waits for type B
    out = core.handle(ResultArrived(candidate_id="c1", worker_id="wb", outcome="done",
                                    val_bpb=1.4, now=5.0))
    assert runs(out)[0] == Run("old@x7", "wb", 1)


def test_with_device_groups_a_new_best_is_confirmed_against_its_own_types_best(tmp_path):
    """Island 0 (type A) holds the run's best; island 1 (type B) a worse one. A child on
    island 1 beating island 1's best is a new best for type B: confirmed against island 1's
    best, never against island 0's — scores from other hardware."""
    config = make_config(make_template(tmp_path, 0.1), noise={"seeds": 3}, confirm={"seeds": 2},
                         population={"islands": 2}, workers={"device_groups": True})
    with Store.open(tmp_path / "store.sqlite") as store:
        for cid, parent, island, bpb in (("root", None, 0, 1.0), ("b1", "root", 1, 1.3),
                                         ("c", "b1", 1, None)):
            store.add(Candidate(id=cid, parent_id=parent, island=island, generation=0,
                                files={"train.py": f"X = '{cid}'\n"}, seed=3, created_at=1.0))
            store.set_status(cid, Status.RUNNING)
            if bpb is not None:
                store.record_result(cid, status=Status.DONE, metrics={"val_bpb": bpb}, now=2.0)
        store.set_meta(NOISE_META, json.dumps({"sigma": 0.01, "mean": 1.0, "seeds": [],
                                               "runs": []}))

        grouped = Evidence(store, seed=config.seed, noise=config.noise, confirm=config.confirm,
                            size=4, peers=lambda island: [island])
        jobs = grouped.hold(Result("c", Status.DONE, {"val_bpb": 1.2}), now=3.0)
        assert jobs and grouped.held["c"].trigger == "new best"
        assert grouped.held["c"].incumbent_id == "b1"
        rescored = {store.extra_run(parse_job_id(job)).candidate_id for job in jobs}
        assert rescored == {"c", "b1"}  # nothing of island 0's hardware

        # Without groups every island is one comparison: 1.2 is no new best against 1.0.
        assert Evidence(store, seed=config.seed, noise=config.noise, confirm=config.confirm,
                            size=4).hold(Result("c", Status.DONE, {"val_bpb": 1.2}),
                                                    now=3.0) is None
