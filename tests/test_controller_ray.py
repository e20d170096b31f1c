"""The controller on real Ray: a worker actor killed mid-experiment is lost, requeued, finished once."""

from __future__ import annotations

import asyncio
import time

from test_controller_shell import FINISHED, Recorder, finished_once, make_config, make_template

from evolve.controller.executor import RayExecutor
from evolve.controller.shell import Controller
from evolve.controller.wiring import plan_run
from evolve.mutate.heuristic import HeuristicMutator
from population.candidate import Status
from population.store import Store


def test_killed_worker_is_lost_requeued_and_finished_once(ray_session, tmp_path):
    ray = ray_session
    config = make_config(make_template(tmp_path, 1.5), budget={"max_experiments": 5},
                         workers={"count": 2, "max_lost_attempts": 2})
    executor = RayExecutor(2, cpus_per_worker=1, poll_s=0.5)
    killed: list[tuple[str, str]] = []

    async def main(store: Store) -> str:
        controller = Controller(plan_run(config), store, executor, {"heuristic": HeuristicMutator()},
                                Recorder(), work_root=tmp_path / "work", tick_s=0.2)
        task = asyncio.create_task(controller.run())
        while not killed and not task.done():
            await asyncio.sleep(0.1)
            for c in store.unfinished():
                open_attempts = [a for a in store.attempts(c.id) if a.outcome == "running"]
                if c.id != "root" and c.status is Status.RUNNING and open_attempts:
                    worker = open_attempts[-1].worker
                    await asyncio.sleep(0.5)  # well inside the experiment
                    ray.kill(executor.actor(worker))
                    killed.append((c.id, worker))
                    break
        return await task

    with Store.open(tmp_path / "store.sqlite") as store:
        reason = asyncio.run(main(store))
        assert reason == "max_experiments reached (5)"
        assert killed
        victim, worker = killed[0]
        attempts = store.attempts(victim)
        assert attempts[0].outcome == "lost" and attempts[0].worker == worker
        assert attempts[-1].outcome in ("done", "crashed") and attempts[-1].worker != worker
        assert store.get(victim).status in FINISHED
        assert store.count(*FINISHED) == 5
        finished_once(store)
        # A replacement worker joined for the dead one.
        workers = {a.worker for c in store.finished_in_order() for a in store.attempts(c.id)}
        assert len(workers) >= 2


BROKEN_SEED = '''

_root_hparams = {root!r}
_sleeping_train = train


def train(ctx):
    """The seed itself is broken (after a second); every child of it sleeps a minute."""
    if {{n: v for n, v in globals().items() if n.isupper()}} == _root_hparams:
        time.sleep(1.0)
        raise RuntimeError("the seed is broken")
    return _sleeping_train(ctx)
'''


def test_a_broken_seed_cancels_the_children_beside_it_and_stops_the_run(ray_session, tmp_path):
    template = make_template(tmp_path, 60.0)
    for name in ("train.py", "train_cpu.py"):
        path = template / name
        constants: dict = {}
        exec(compile(path.read_text(), str(path), "exec"), constants)  # the seed's constants
        root = {n: v for n, v in constants.items() if n.isupper()}
        path.write_text(path.read_text() + BROKEN_SEED.format(root=root))
    config = make_config(template, budget={"max_experiments": 10}, workers={"count": 3})
    executor = RayExecutor(3, cpus_per_worker=1, poll_s=0.5)
    with Store.open(tmp_path / "store.sqlite") as store:
        controller = Controller(plan_run(config), store, executor, {"heuristic": HeuristicMutator()},
                                Recorder(), work_root=tmp_path / "work", tick_s=0.2)
        started = time.monotonic()
        reason = asyncio.run(controller.run())
        took = time.monotonic() - started
        assert reason.startswith("the baseline (root root) did not finish: crashed")
        assert store.get("root").status is Status.CRASHED
        assert "the seed is broken" in store.get("root").log_tail
        beside = [c for c in store.finished_in_order() if c.id != "root"]
        assert not beside  # no child was recorded: not as a crash, not at all
        children = [c for c in store.unfinished() if c.id != "root"]
        attempts = [a for c in children for a in store.attempts(c.id)]
        assert len(attempts) == 2  # two children ran beside the root, on the other workers
        assert all(a.outcome == "abandoned" and a.reason.startswith("cancelled: the baseline")
                   for a in attempts)
        assert all(c.status is Status.PROPOSED for c in children)  # resume may run them
        assert took < 45  # they did not sleep out their minute
