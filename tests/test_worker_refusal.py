"""A worker whose node holds another harness or other data refuses to score: the node's
problem, never the candidate's. On Ray the run goes elsewhere and the worker leaves the pool
(holding its slot, so nothing is re-placed there); on the controller's own machine the run
stops with the reason. Nodes without network isolation are named once, live and in status.

Real harness subprocesses, real Ray (the session head), a real store.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import sys
from pathlib import Path

from rich.console import Console

from evolve.controller.core import (
    GiveUp,
    ProposalReady,
    Propose,
    Requeue,
    ResultArrived,
    Run,
    Scheduler,
    Settings,
    WorkerJoined,
    WorkerRefused,
)
from evolve.controller.executor import LocalExecutor, RayExecutor
from evolve.controller.shell import Controller
from evolve.controller.wiring import plan_run
from evolve.inspect.status import render_status
from evolve.mutate.heuristic import HeuristicMutator
from evolve.run.live import LiveDisplay
from evolve.run.rundir import RunDir
from evolve.workers.pristine import template_hash
from population.candidate import Status
from population.store import Store

sys.path.insert(0, str(Path(__file__).parent))
from test_controller_shell import make_config, make_template  # noqa: E402


class Root:
    def choose_parent(self, island: int, rng: random.Random) -> str:
        return "root"


def of(kind, decisions):
    return [d for d in decisions if isinstance(d, kind)]


class Watcher:
    """The run directory's part of a recorder, plus the live display writing to a buffer."""

    def __init__(self, on_result=None) -> None:
        self.out = io.StringIO()
        self.display = LiveDisplay(Console(file=self.out, width=300), line_every_s=0.0)
        self.hook = on_result

    def on_candidate(self, c) -> None:
        pass

    def on_result(self, c, kept: bool) -> None:
        self.display.on_result(c, kept)
        if self.hook is not None:
            self.hook(c)

    def on_progress(self, snapshot) -> None:
        self.display.on_progress(snapshot)


def open_run(tmp_path: Path, config) -> tuple[RunDir, Store]:
    run_dir = RunDir.create(tmp_path / "results", "t")
    run_dir.config_path.write_text(config.to_yaml())
    return run_dir, Store.open(run_dir.store_path)


def status_text(run_dir: RunDir) -> str:
    console = Console(file=io.StringIO(), width=300, record=True)
    render_status(run_dir, console, islands=1, population_size=4)
    return console.export_text()


def test_a_refusal_requeues_the_run_without_charging_a_lost_attempt():
    core = Scheduler(Settings(max_lost_attempts=0, lookahead=1), Root(), "root")
    handle, proposed = core.handle, []

    def recording(event):  # the root's children are proposed while it runs, at any event
        decisions = handle(event)
        proposed.extend(of(Propose, decisions))
        return decisions

    core.handle = recording
    out = core.handle(WorkerJoined(worker_id="bad0", now=0.0))
    assert of(Run, out) == [Run("root", "bad0", 1)]
    out = core.handle(WorkerJoined(worker_id="bad1", now=0.1))
    out = core.handle(WorkerRefused(worker_id="bad0", reason="other harness", now=1.0))
    # max_lost_attempts 0: a lost attempt would give the root up; a refusal does not.
    assert of(Requeue, out) == [Requeue("root", 0)] and not of(GiveUp, out)
    assert of(Run, out) == [Run("root", "bad1", 2)]
    out = core.handle(WorkerRefused(worker_id="bad1", reason="other harness", now=2.0))
    assert not of(GiveUp, out) and not of(Run, out)
    assert core.status().workers == 0 and core.status().ready == 1 and not core.stopped
    out = core.handle(WorkerJoined(worker_id="good", now=3.0))
    assert of(Run, out) == [Run("root", "good", 3)]
    out = core.handle(ResultArrived(candidate_id="root", worker_id="good", outcome="done",
                                    val_bpb=1.0, now=4.0))
    for p in list(proposed):
        out += core.handle(ProposalReady(ticket=p.ticket, candidate_id=f"c{p.ticket}", now=5.0))
    assert {r.worker_id for r in of(Run, out)} == {"good"}


def hold_cpus(ray, cpus: int):
    """An actor holding `cpus` of the cluster's CPUs, placed before this returns."""

    class Holder:
        def ready(self) -> bool:
            return True

    holder = ray.remote(num_cpus=cpus)(Holder).remote()
    ray.get(holder.ready.remote(), timeout=120)
    return holder


def test_on_ray_a_worker_with_another_harness_leaves_and_the_run_finishes_elsewhere(
        tmp_path, ray_session):
    # Runs of a second each: the root's nine children keep the good worker busy long enough
    # for the two others to start on a loaded machine and refuse.
    template = make_template(tmp_path, 1.0)
    config = make_config(template, budget={"max_experiments": 10}, workers={"count": 3})
    run_dir, store = open_run(tmp_path, config)
    first: list[str] = []
    # Room for one worker only: the other two wait to be placed, as workers on nodes that
    # join later would. (With room for all three, the root's children would start beside it
    # and every worker would pin the harness before the change.)
    holder = hold_cpus(ray_session, int(ray_session.cluster_resources()["CPU"]) - 1)

    def change_template(c) -> None:
        # The root has pinned the harness on its worker; the others join now and read this
        # other version, as workers on nodes with a stale copy of the template would.
        if c.id == "root" and not first:
            first.append(store.attempts("root")[-1].worker)
            prepare = template / "prepare.py"
            prepare.write_text(prepare.read_text() + "\n# another version\n")
            ray_session.kill(holder)

    watcher = Watcher(change_template)
    executor = RayExecutor(3, cpus_per_worker=1, poll_s=0.3)
    controller = Controller(plan_run(config), store, executor, {"heuristic": HeuristicMutator()}, watcher,
                            work_root=tmp_path / "work", tick_s=0.1)
    controller.template_hash = template_hash(template)
    try:
        reason = asyncio.run(controller.run())
        assert reason == "max_experiments reached (10)"
        assert store.count(Status.CRASHED, Status.TIMED_OUT) == 0
        (good,) = first
        finished = store.finished_in_order()
        assert len(finished) == 10
        assert {a.worker for c in finished for a in store.attempts(c.id) if a.outcome == "done"} \
            == {good}
        refused = [line for line in store.get_meta("refused_workers").splitlines() if line]
        others = {"w0", "w1", "w2"} - {good}
        assert {line.split()[1] for line in refused} == others, refused
        assert all("refused to score" in line and "differs from the controller's" in line
                   and "on node " in line for line in refused)
        # Each refused attempt went back to the queue and finished on the good worker; no
        # replacement worker was placed in a refused one's slot (it would refuse again).
        refused_attempts = [a for c in finished for a in store.attempts(c.id)
                            if a.outcome == "refused"]
        assert all(store.lost_count(c.id) == 0 for c in finished)
        assert len(refused_attempts) == 2 and all(a.reason.startswith("refused:")
                                                  for a in refused_attempts)
        assert all(a.worker in {"w0", "w1", "w2"} for c in finished for a in store.attempts(c.id))
    finally:
        store.close()
        ray_session.kill(holder)
    live = watcher.out.getvalue()
    assert sum(f"warning: worker {w} on node" in live for w in others) == 2, live
    text = status_text(run_dir)
    assert "refused workers (2):" in text and all(f"worker {w} on node" in text for w in others)


def test_locally_a_template_changed_under_the_controller_stops_the_run(tmp_path):
    template = make_template(tmp_path, 0.05)
    config = make_config(template, budget={"max_experiments": 4}, workers={"count": 2})
    run_dir, store = open_run(tmp_path, config)
    watcher = Watcher()
    controller = Controller(plan_run(config), store, LocalExecutor(2), {"heuristic": HeuristicMutator()},
                            watcher, work_root=tmp_path / "work", tick_s=0.1)
    controller.template_hash = template_hash(template)
    prepare = template / "prepare.py"
    prepare.write_text(prepare.read_text() + "\n# edited while the run was starting\n")
    try:
        reason = asyncio.run(controller.run())
        assert reason.startswith("stopped: worker local")
        assert "differs from the controller's" in reason
        assert "changed under the running controller" in reason and "evolve resume" in reason
        assert store.get_meta("stop_reason") == reason
        root = store.get("root")
        assert root.status is Status.PROPOSED  # not crashed: `evolve resume` runs it again
        assert store.count(Status.CRASHED, Status.TIMED_OUT, Status.DONE) == 0
        assert [a.outcome for a in store.attempts("root")] == ["refused"]
        assert store.lost_count("root") == 0  # resume does not charge it either
        # the root's refusal, and the other worker's if a child of the root had started there
        refused = [line for line in store.get_meta("refused_workers").splitlines() if line]
        assert 1 <= len(refused) <= 2 and all("differs from the controller's" in line
                                               for line in refused), refused
    finally:
        store.close()
    assert "warning: stopped: worker local" in watcher.out.getvalue()
    assert f"refused workers ({len(refused)}):" in status_text(run_dir)


def path_without(tmp_path: Path, program: str) -> str:
    """A PATH that has every program of ours but `program`: a node that lacks it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            target = bin_dir / name
            if name != program and not target.exists():
                target.symlink_to(Path(directory) / name)
    return str(bin_dir)


def test_workers_on_a_node_without_isolation_are_named_once(tmp_path, ray_session):
    template = make_template(tmp_path, 0.05)
    config = make_config(template, budget={"max_experiments": 2}, workers={"count": 2})
    run_dir, store = open_run(tmp_path, config)
    watcher = Watcher()
    executor = RayExecutor(2, cpus_per_worker=1, poll_s=0.3,
                           runtime_env={"env_vars": {"PATH": path_without(tmp_path, "unshare")}})
    controller = Controller(plan_run(config), store, executor, {"heuristic": HeuristicMutator()}, watcher,
                            work_root=tmp_path / "work", tick_s=0.1)
    try:
        assert asyncio.run(controller.run()) == "max_experiments reached (2)"
        warnings = [line for line in store.get_meta("network_warnings").splitlines() if line]
        assert len(warnings) == 1, warnings  # two workers, one node: said once
        assert warnings[0].startswith("network: NOT isolated on node ")
        assert "no unshare binary" in warnings[0]
        logs = list((tmp_path / "work").glob("*/run.log"))
        assert logs and all("network: NOT isolated" in log.read_text() for log in logs)
    finally:
        store.close()
    live = watcher.out.getvalue()
    assert live.count("warning: network: NOT isolated on node") == 1, live
    assert "network: NOT isolated on node" in status_text(run_dir)


def test_no_warning_where_isolation_works_or_is_not_asked_for(tmp_path):
    from evolve.workers.network import unshare_problem

    template = make_template(tmp_path, 0.05)
    for network in ("isolate", "allow"):
        config = make_config(template, budget={"max_experiments": 1},
                             workers={"count": 1, "network": network})
        store = Store.open(tmp_path / f"{network}.sqlite")
        controller = Controller(plan_run(config), store, LocalExecutor(1), {"heuristic": HeuristicMutator()},
                                Watcher(), work_root=tmp_path / f"work-{network}", tick_s=0.1)
        try:
            asyncio.run(controller.run())
            warned = store.get_meta("network_warnings")
            if network == "isolate" and unshare_problem():  # this machine cannot isolate
                assert warned and "NOT isolated" in warned
            else:
                assert warned is None
        finally:
            store.close()


def test_on_ray_a_run_no_worker_can_score_stops_and_blames_no_candidate(tmp_path, ray_session):
    template = make_template(tmp_path, 0.05)
    config = make_config(template, budget={"max_experiments": 4}, workers={"count": 2})
    run_dir, store = open_run(tmp_path, config)
    controller = Controller(plan_run(config), store, RayExecutor(2, cpus_per_worker=1, poll_s=0.3),
                            {"heuristic": HeuristicMutator()}, Watcher(),
                            work_root=tmp_path / "work", tick_s=0.1)
    controller.template_hash = "0" * 64  # no node has the controller's harness
    try:
        reason = asyncio.run(controller.run())
        assert reason.startswith("stopped: every worker refused to score, the last w")
        assert "differs from the controller's" in reason and "evolve resume" in reason
        assert store.get("root").status is Status.PROPOSED  # resume runs it again
        assert store.count(Status.CRASHED, Status.TIMED_OUT, Status.DONE) == 0
        # one by each worker, both uncharged: on the root or a child started beside it
        tried = ["root", *(c.id for c in store.children_of("root"))]
        assert sorted(a.outcome for c in tried for a in store.attempts(c)) == ["refused"] * 2
        assert all(store.lost_count(c) == 0 for c in tried)
        refused = [line for line in store.get_meta("refused_workers").splitlines() if line]
        assert len(refused) == 2
    finally:
        store.close()
    assert "refused workers (2):" in status_text(run_dir)
