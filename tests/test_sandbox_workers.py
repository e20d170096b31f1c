"""`workers.sandbox` through the controller: on Ray, workers on a node without a working jail
refuse under `require` (the node's problem: no candidate blamed, the run stops when every worker
has refused) and, under `warn`, run with each such node named once, live and in `evolve status`,
and every score from it marked in the store.

Real Ray (the session head), real harness subprocesses, a real store. A node without the jail
is a worker whose PATH has no bwrap and whose jail is told to ignore the bundled one
(EVOLVE_BWRAP_WHEEL=0), through the workers' runtime_env.
"""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

from rich.console import Console

from evolve.controller.executor import LocalExecutor, RayExecutor
from evolve.controller.shell import Controller
from evolve.controller.wiring import plan_run
from evolve.inspect.status import render_status
from evolve.mutate.heuristic import HeuristicMutator
from evolve.workers.jail_check import jail_problem
from population.candidate import Status

sys.path.insert(0, str(Path(__file__).parent))
from test_controller_shell import make_config  # noqa: E402
from test_sandbox_require import jailed_template  # noqa: E402
from test_worker_refusal import Watcher, open_run, path_without  # noqa: E402


def no_bubblewrap_env(tmp_path: Path) -> dict[str, str]:
    """Worker environment of a node where the jail finds no bubblewrap."""
    return {"PATH": path_without(tmp_path, "bwrap"), "EVOLVE_BWRAP_WHEEL": "0"}


def sleepy(tmp_path: Path, sandboxed: object) -> Path:
    template = jailed_template(tmp_path, sandboxed)
    for name in ("train.py", "train_cpu.py"):
        path = template / name
        path.write_text(path.read_text().replace("SLEEP_S = 0.5 ", "SLEEP_S = 0.05 "))
    return template


def status_text(run_dir) -> str:
    console = Console(file=io.StringIO(), width=300, record=True)
    render_status(run_dir, console, islands=1, population_size=4)
    return console.export_text()


def test_on_ray_require_where_no_node_can_jail_stops_and_blames_no_candidate(tmp_path, ray_session):
    template = sleepy(tmp_path, True)
    config = make_config(template, budget={"max_experiments": 4},
                         workers={"count": 2, "sandbox": "require"})
    run_dir, store = open_run(tmp_path, config)
    executor = RayExecutor(2, cpus_per_worker=1, poll_s=0.3,
                           runtime_env={"env_vars": no_bubblewrap_env(tmp_path)})
    controller = Controller(plan_run(config), store, executor, {"heuristic": HeuristicMutator()}, Watcher(),
                            work_root=tmp_path / "work", tick_s=0.1)
    try:
        reason = asyncio.run(controller.run())
        assert reason.startswith("stopped: every worker refused to score, the last w")
        assert "sandbox required (workers.sandbox: require) but unavailable on node" in reason
        assert "no bubblewrap" in reason and "evolve resume" in reason
        assert store.get("root").status is Status.PROPOSED  # resume runs it again
        assert store.count(Status.CRASHED, Status.TIMED_OUT, Status.DONE) == 0
        # each worker refused once: the root, or a child of the root it was given beside it
        tried = ["root", *(c.id for c in store.children_of("root"))]
        assert sorted(a.outcome for c in tried for a in store.attempts(c)) == ["refused"] * 2
        assert all(store.lost_count(c) == 0 for c in tried)
        assert {c.status for c in map(store.get, tried)} == {Status.PROPOSED}
    finally:
        store.close()
    assert not list((tmp_path / "work").glob("*/run.log"))  # nothing was laid out, nothing ran
    assert "refused workers (2):" in status_text(run_dir)


def test_on_ray_warn_names_the_node_once_and_marks_every_score(tmp_path, ray_session):
    template = sleepy(tmp_path, True)  # the harness would jail; this node's bwrap is missing
    config = make_config(template, budget={"max_experiments": 3}, workers={"count": 2})
    run_dir, store = open_run(tmp_path, config)
    watcher = Watcher()
    executor = RayExecutor(2, cpus_per_worker=1, poll_s=0.3,
                           runtime_env={"env_vars": no_bubblewrap_env(tmp_path)})
    controller = Controller(plan_run(config), store, executor, {"heuristic": HeuristicMutator()}, watcher,
                            work_root=tmp_path / "work", tick_s=0.1)
    try:
        assert asyncio.run(controller.run()) == "max_experiments reached (3)"
        warnings = [line for line in store.get_meta("sandbox_warnings").splitlines() if line]
        assert len(warnings) == 1, warnings  # two workers, one node: said once
        assert warnings[0].startswith("sandbox: NOT working on node ")
        assert "no bubblewrap" in warnings[0]
        done = [c for c in store.finished_in_order() if c.status is Status.DONE]
        assert len(done) == 3
        assert all(c.sandbox_problem.startswith("no bubblewrap: no bwrap on PATH") for c in done)
    finally:
        store.close()
    live = watcher.out.getvalue()
    assert live.count("warning: sandbox: NOT working on node") == 1, live
    assert live.count("(unsandboxed)") == 3
    text = status_text(run_dir)
    assert "sandbox: NOT working on node" in text and "unsandboxed scores: 3 of 3" in text
    assert "1.5" in text and "(unsandboxed)" in text


def test_require_where_the_jail_works_scores_sandboxed_and_warns_nothing(tmp_path):
    template = sleepy(tmp_path, True)
    config = make_config(template, budget={"max_experiments": 2},
                         workers={"count": 1, "sandbox": "require"})
    run_dir, store = open_run(tmp_path, config)
    controller = Controller(plan_run(config), store, LocalExecutor(1), {"heuristic": HeuristicMutator()},
                            Watcher(), work_root=tmp_path / "work", tick_s=0.1)
    problem = jail_problem(template)
    try:
        reason = asyncio.run(controller.run())
        if problem:  # a box without user namespaces: refused on the controller's own machine
            assert reason.startswith("stopped: worker local0") and problem in reason
            return
        assert reason == "max_experiments reached (2)"
        done = [c for c in store.finished_in_order() if c.status is Status.DONE]
        assert len(done) == 2 and all(c.sandbox_problem == "" for c in done)
        assert store.get_meta("sandbox_warnings") is None
    finally:
        store.close()
    assert "unsandboxed" not in status_text(run_dir)
