"""A second stop signal abandons what runs: the store says nothing runs any more, and resume
runs each abandoned candidate again exactly once without charging it a lost attempt.
Real controller, LocalExecutor, the stand-in harness, a real store and `evolve status`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_controller_shell import FINISHED, Recorder, finished_once, make_config, make_template  # noqa: E402,I001
from test_worker_refusal import open_run, status_text  # noqa: E402

from evolve.controller.executor import LocalExecutor  # noqa: E402
from evolve.controller.shell import ABANDONED, Controller  # noqa: E402
from evolve.controller.wiring import plan_run  # noqa: E402
from evolve.mutate.heuristic import HeuristicMutator  # noqa: E402
from population.candidate import Status  # noqa: E402
from population.store import Store  # noqa: E402


def running_again(store: Store, abandoned: set[str]) -> bool:
    """Some candidate runs now (an open attempt); with `abandoned`, one abandoned before."""
    for c in store.unfinished():
        outcomes = [a.outcome for a in store.attempts(c.id)]
        if outcomes and outcomes[-1] == "running" and (not abandoned or c.id in abandoned):
            return True
    return False


def drive(path: Path, config, tmp_path: Path, abandon_when) -> str:
    """Run the controller on the store at `path`; with `abandon_when`, stop twice once it
    holds (the shell's Ctrl-C, Ctrl-C)."""

    async def go() -> str:
        stop, drop = asyncio.Event(), asyncio.Event()
        with Store.open(path) as store:
            recorder = Recorder()
            controller = Controller(plan_run(config), store, LocalExecutor(2),
                                    {"heuristic": HeuristicMutator()}, recorder,
                                    work_root=tmp_path / "work", tick_s=0.1)
            task = asyncio.create_task(controller.run(stop, drop))
            while abandon_when is not None and not task.done():
                if abandon_when(store, recorder):
                    stop.set()
                    drop.set()
                    break
                await asyncio.sleep(0.02)
            return await task

    return asyncio.run(go())


def abandoned_ids(store: Store) -> set[str]:
    return {c.id for c in [*store.unfinished(), *store.finished_in_order()]
            if any(a.outcome == "abandoned" for a in store.attempts(c.id))}


def test_abandoned_experiments_show_as_not_running_and_rerun_once_uncharged(tmp_path):
    # max_lost_attempts 1: two abandons of one candidate would give it up if they counted.
    config = make_config(make_template(tmp_path, 0.4), budget={"max_experiments": 8},
                         workers={"max_lost_attempts": 1})
    run_dir, store = open_run(tmp_path, config)
    store.close()
    path = run_dir.store_path

    first = drive(path, config, tmp_path,
                  lambda s, r: len(r.results) >= 1 and running_again(s, set()))
    assert first.startswith("abandoned")
    with Store.open(path) as store:
        once = abandoned_ids(store)
        assert once and store.count(Status.RUNNING) == 0
        for cid in once:
            attempt = store.attempts(cid)[-1]
            assert attempt.outcome == "abandoned" and attempt.reason == ABANDONED
            assert attempt.ended_at is not None and store.lost_count(cid) == 0
            assert store.get(cid).status is Status.PROPOSED
    text = status_text(run_dir)
    assert "running 0" in text and "run stopped: abandoned" in text

    # Resume, and abandon again while an abandoned candidate runs its second time.
    second = drive(path, config, tmp_path, lambda s, r: running_again(s, once))
    assert second.startswith("abandoned")
    with Store.open(path) as store:
        twice = {cid for cid in abandoned_ids(store)
                 if [a.outcome for a in store.attempts(cid)].count("abandoned") == 2}
        assert twice and store.count(Status.RUNNING) == 0

    assert drive(path, config, tmp_path, None) == "max_experiments reached (8)"
    with Store.open(path) as store:
        assert store.count(*FINISHED) == 8
        assert store.count(Status.CRASHED, Status.TIMED_OUT) == 0  # none given up as lost
        finished_once(store)  # one real run each, abandoned tries aside
        for cid in twice:
            outcomes = [a.outcome for a in store.attempts(cid)]
            assert outcomes == ["abandoned", "abandoned", "done"], (cid, outcomes)
            assert store.get(cid).status is Status.DONE
    assert "running 0" in status_text(run_dir)
