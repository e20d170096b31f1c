"""Heterogeneous hardware: a run keeps to one device type, or one island group per type.

Pure decisions (evolve/controller/devices.py and the scheduler core): milliseconds.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from rich.console import Console

from evolve.controller.core import (
    ProposalReady,
    Propose,
    RefuseWorker,
    Requeue,
    ResultArrived,
    Run,
    Scheduler,
    Settings,
    WorkerJoined,
    WorkerLost,
)
from evolve.controller.devices import DevicePolicy, device_type
from evolve.controller.executor import Joined, LocalExecutor
from evolve.controller.shell import Controller
from evolve.controller.wiring import plan_run
from evolve.inspect.status import render_status
from evolve.mutate.heuristic import HeuristicMutator
from evolve.run.live import LiveDisplay
from evolve.run.rundir import RunDir
from population.store import Store

H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"


class Root:
    def choose_parent(self, island: int, rng: random.Random) -> str:
        return "root"


def of(kind, decisions):
    return [d for d in decisions if isinstance(d, kind)]


def test_device_type_names_the_model_not_the_slot():
    assert device_type("gpu:0") == device_type("gpu:3") == "gpu"
    assert device_type(H100) == H100
    assert device_type("cpu") == "cpu"
    assert device_type("") == "unknown"


def test_by_default_the_first_type_pins_the_run_and_others_are_refused_by_name():
    policy = DevicePolicy()
    assert policy.admit("w0", H100).accepted
    assert policy.admit("w1", H100).accepted
    refused = policy.admit("w2", A100)
    assert not refused.accepted
    assert H100 in refused.message and A100 in refused.message and "w2" in refused.message
    assert "device_groups" in refused.message
    assert policy.types() == {H100: 2}


def test_a_resumed_run_keeps_the_type_it_was_scored_on():
    policy = DevicePolicy(pinned=H100)
    assert not policy.admit("w0", A100).accepted
    assert policy.admit("w1", H100).accepted


def test_device_groups_bind_each_island_to_one_type_and_spread_types_over_islands():
    policy = DevicePolicy(groups=True)
    for worker, device in (("a0", H100), ("a1", H100), ("b0", A100)):
        assert policy.admit(worker, device).accepted
    assert policy.pick(0, ["a0", "a1", "b0"]) == "a0"
    policy.started(0, "a0")
    # Island 1 is unbound: it prefers the type that holds no island yet.
    assert policy.pick(1, ["a1", "b0"]) == "b0"
    policy.started(1, "b0")
    assert policy.islands == {0: H100, 1: A100}
    assert policy.pick(0, ["b0"]) is None and policy.pick(1, ["a0", "a1"]) is None
    assert policy.may_run(0, "a1") and not policy.may_run(0, "b0")


def test_the_core_refuses_a_worker_of_another_type_and_never_runs_on_it():
    core = Scheduler(Settings(), Root(), "root")
    out = core.handle(WorkerJoined(worker_id="w0", device=H100, now=0.0))
    assert of(Run, out) == [Run("root", "w0", 1)]
    # Start full: children of the root may be proposed while it runs; gather every ticket.
    proposals = of(Propose, out)
    out = core.handle(WorkerJoined(worker_id="w1", device=A100, now=0.1))
    (refusal,) = of(RefuseWorker, out)
    assert refusal.worker_id == "w1" and A100 in refusal.message and H100 in refusal.message
    assert not of(Run, out)  # the refused worker gets nothing to run
    proposals += of(Propose, out)
    runs = []
    for p in proposals:  # children of the root proposed while it runs: none may go to w1
        runs += of(Run, core.handle(ProposalReady(ticket=p.ticket, candidate_id=f"c{p.ticket}",
                                                  now=0.5)))
    assert all(r.worker_id == "w0" for r in runs)
    out = core.handle(ResultArrived(candidate_id="root", worker_id="w0", outcome="done",
                                    val_bpb=1.0, now=1.0))
    assert core.status().workers == 1
    runs += of(Run, out)
    for p in of(Propose, out):
        runs += of(Run, core.handle(ProposalReady(ticket=p.ticket, candidate_id=f"c{p.ticket}",
                                                  now=2.0)))
    assert {r.worker_id for r in runs} == {"w0"}


def test_with_device_groups_a_lost_attempt_is_retried_on_its_islands_type():
    core = Scheduler(Settings(device_groups=True, islands=2, lookahead=1), Root(), "root")
    out = []
    for worker, device in (("h0", H100), ("h1", H100), ("a0", A100)):
        out += core.handle(WorkerJoined(worker_id=worker, device=device, now=0.0))
    assert not of(RefuseWorker, out)
    (root_run,) = of(Run, out)
    assert root_run.worker_id == "h0"  # island 0 is now an H100 island
    # Start full: children of the root are proposed at the start, while it runs; answer
    # tickets (the new ones they bring too) until every worker is busy, so that a lost
    # attempt finds no idle H100 and has to wait.
    pending = of(Propose, out)
    out = core.handle(ResultArrived(candidate_id="root", worker_id="h0", outcome="done",
                                    val_bpb=1.0, now=1.0))
    runs = of(Run, out)
    pending += of(Propose, out)
    while pending and core.status().running < 3:
        p = pending.pop(0)
        got = core.handle(ProposalReady(ticket=p.ticket, candidate_id=f"c{p.island}-{p.ticket}",
                                        now=2.0))
        runs += of(Run, got)
        pending += of(Propose, got)
    assert core.status().running == 3
    on = {r.candidate_id: r.worker_id for r in runs}
    island0 = [c for c in on if c.startswith("c0-")]
    assert island0 and all(on[c].startswith("h") for c in island0)
    # The H100 running an island-0 child dies: the child waits for an H100, never the A100.
    victim = island0[0]
    out = core.handle(WorkerLost(worker_id=on[victim], reason="node died", now=3.0))
    assert of(Requeue, out)
    assert victim not in {r.candidate_id for r in of(Run, out)}
    for cid, worker in on.items():
        if cid != victim:
            out += core.handle(ResultArrived(candidate_id=cid, worker_id=worker, outcome="done",
                                             val_bpb=0.9, now=4.0))
    retried = [r for r in of(Run, out) if r.candidate_id == victim]
    assert retried and all(r.worker_id.startswith("h") for r in retried)
    assert retried[0].attempt == 2


def test_island_groups_exchange_only_within_a_type():
    from evolve.controller.devices import island_groups

    assert island_groups(3, {}, groups=False) == [[0, 1, 2]]
    assert island_groups(4, {0: H100, 1: A100, 3: H100}, groups=True) == [[0, 3], [1]]


class TwoModels(LocalExecutor):
    """Local workers (real harness subprocesses) that say they sit on two GPU models."""

    async def start(self, emit) -> None:
        self._emit = emit
        for i in range(self.count):
            emit(Joined(f"{self.prefix}{i}", "node", H100 if i % 2 == 0 else A100))


class Shown:
    """A recorder that shows progress on a live display writing to a buffer (not a terminal)."""

    def __init__(self) -> None:
        self.out = io.StringIO()
        self.display = LiveDisplay(Console(file=self.out, width=300), line_every_s=0.0)

    def on_candidate(self, c) -> None:
        pass

    def on_result(self, c, kept: bool) -> None:
        self.display.on_result(c, kept)

    def on_progress(self, snapshot) -> None:
        self.display.on_progress(snapshot)


def _run(tmp_path, groups: bool, recorder=None):
    import asyncio
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_controller_shell import Recorder, make_config, make_template

    config = make_config(make_template(tmp_path, 0.05), budget={"max_experiments": 12},
                         population={"islands": 4, "migration_interval": 3},
                         workers={"count": 4, "device_groups": groups})
    run_dir = RunDir.create(tmp_path / "results", "t")
    run_dir.config_path.write_text(config.to_yaml())
    store = Store.open(run_dir.store_path)
    controller = Controller(plan_run(config), store, TwoModels(4), {"heuristic": HeuristicMutator()},
                            recorder or Recorder(), work_root=tmp_path / "work", tick_s=0.1)
    reason = asyncio.run(controller.run())
    return store, reason, run_dir


def test_a_run_on_two_gpu_models_uses_one_and_names_the_refused(tmp_path):
    shown = Shown()
    store, reason, run_dir = _run(tmp_path, groups=False, recorder=shown)
    try:
        assert reason == "max_experiments reached (12)"
        devices = {a.device for c in store.finished_in_order() for a in store.attempts(c.id)}
        assert devices == {H100}
        refused = store.get_meta("refused_workers")
        assert refused.count("not used") == 2 and A100 in refused and H100 in refused
        assert store.get_meta("device_type") == H100
    finally:
        store.close()
    # Said in the live output (once each) and listed by `evolve status`.
    live = shown.out.getvalue()
    for worker in ("local1", "local3"):
        assert live.count(f"warning: worker {worker} not used: its device is {A100}") == 1, live
    console = Console(file=io.StringIO(), width=300, record=True)
    render_status(run_dir, console, islands=4, population_size=4)
    text = console.export_text()
    assert "refused workers (2):" in text
    assert f"worker local1 not used: its device is {A100} but this run is scored on {H100}" in text


def test_device_groups_keep_each_island_and_its_migrants_on_one_type(tmp_path):
    store, reason, _ = _run(tmp_path, groups=True)
    try:
        assert reason == "max_experiments reached (12)"
        island_type: dict[int, set[str]] = {}
        for c in store.finished_in_order():
            for a in store.attempts(c.id):
                island_type.setdefault(c.island, set()).add(a.device)
        assert all(len(types) == 1 for types in island_type.values()), island_type
        assert {t for types in island_type.values() for t in types} == {H100, A100}
        members = [c for i in island_type for c in store.survivors(i, 10)]
        copies = [c for c in members if c.mutator == "migration"]
        assert copies, "no migration happened: the run is too short to test it"
        for copy in copies:  # a migrant's score was measured on its target island's type
            source = store.get(copy.parent_id)
            assert island_type[source.island] == island_type[copy.island], (copy.id, source.id)
    finally:
        store.close()
