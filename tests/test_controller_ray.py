"""The controller on real Ray: a worker actor killed mid-experiment is lost, requeued, finished once."""

from __future__ import annotations

import asyncio

from test_controller_shell import FINISHED, Recorder, finished_once, make_config, make_template

from evolve.controller.executor import RayExecutor
from evolve.controller.shell import Controller
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
        controller = Controller(config, store, executor, {"heuristic": HeuristicMutator()},
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
