"""The Ray side of the workers: the actor, creating a pool, and telling a lost worker apart."""

from __future__ import annotations

import os
import signal
import time

import pytest
import ray
import ray.exceptions as rex
from sleep_requests import SEED, alive, request  # noqa: E402

from evolve.workers.actor import CandidateWorker, WorkerInfo, is_worker_lost
from evolve.workers.pool import worker_count
from evolve.workers.runner import TemplateError, experiment_dir


def create_workers(count: int | str = "auto", *, gpus_per_worker: float = 0.0,
                   cpus_per_worker: float = 1.0, name_prefix: str = "w",
                   start: int = 0) -> list:
    """Start the workers (actor handles) on the attached Ray cluster, spread across nodes.

    Worker ids are `<name_prefix><start + i>`, so replacements can continue the numbering.
    """
    n = worker_count(count, gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,
                     resources=ray.available_resources())
    options = CandidateWorker.options(
        num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, scheduling_strategy="SPREAD",
        max_restarts=0,
    )
    return [options.remote(f"{name_prefix}{start + i}") for i in range(n)]


def describe_workers(workers: list, *, timeout_s: float = 120.0) -> list[WorkerInfo]:
    """Wait until every worker is placed and say where each runs.

    Raises TimeoutError naming how many could not be placed (the cluster lacks resources).
    """
    refs = [worker.describe.remote() for worker in workers]
    ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    if pending:
        raise TimeoutError(
            f"{len(pending)} of {len(refs)} workers were not placed within {timeout_s:g} s: "
            "the cluster lacks the CPUs/GPUs they ask for (see workers.count and "
            "workers.gpus_per_worker)")
    try:
        return ray.get(refs)
    except rex.RayError as exc:
        raise RuntimeError(f"a worker failed to start: {exc}") from exc


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)


@pytest.fixture
def workers(ray_session):
    """Workers a test creates; killed at teardown so their resources go back to the pool."""
    made: list = []
    yield made
    for worker in made:
        ray_session.kill(worker)


def test_worker_count_auto_and_explicit():
    cluster = {"CPU": 16.0, "GPU": 8.0}
    assert worker_count("auto", gpus_per_worker=1, cpus_per_worker=1, resources=cluster) == 8
    assert worker_count("auto", gpus_per_worker=2, cpus_per_worker=1, resources=cluster) == 4
    assert worker_count("auto", gpus_per_worker=1, cpus_per_worker=4, resources=cluster) == 4
    assert worker_count("auto", gpus_per_worker=0, cpus_per_worker=2, resources=cluster) == 8
    assert worker_count("auto", gpus_per_worker=0.5, cpus_per_worker=0, resources=cluster) == 16
    assert worker_count(3, gpus_per_worker=1, cpus_per_worker=1, resources={}) == 3
    with pytest.raises(ValueError, match="gpus_per_worker: 0"):
        worker_count("auto", gpus_per_worker=1, cpus_per_worker=1, resources={"CPU": 2.0})
    with pytest.raises(ValueError, match="workers.count"):
        worker_count(0, gpus_per_worker=0, cpus_per_worker=1, resources=cluster)
    with pytest.raises(ValueError, match="workers.count"):
        worker_count("many", gpus_per_worker=0, cpus_per_worker=1, resources=cluster)


def test_lost_worker_errors_are_told_from_others():
    assert is_worker_lost(rex.ActorDiedError())
    assert is_worker_lost(rex.RayActorError())
    assert is_worker_lost(rex.WorkerCrashedError())
    assert is_worker_lost(rex.NodeDiedError("node gone"))
    assert not is_worker_lost(rex.TaskCancelledError())
    assert not is_worker_lost(rex.RayTaskError("run", "tb", ValueError("x")).as_instanceof_cause())
    assert not is_worker_lost(ValueError("x"))


def test_actor_runs_a_request(workers, tmp_path):
    import ray

    workers.extend(create_workers(1, cpus_per_worker=1, gpus_per_worker=0))
    [info] = describe_workers(workers, timeout_s=60)
    assert isinstance(info, WorkerInfo)
    assert info.worker_id == "w0" and info.device == "cpu"
    assert info.node_id == ray.get_runtime_context().get_node_id() and info.ip
    result = ray.get(workers[0].run.remote(request(tmp_path)), timeout=60)
    assert result.outcome == "done", result.reason
    assert 1.0 < result.metrics["val_bpb"] < 3.0 and result.device == "cpu"


def test_gpu_worker_names_its_gpu(workers, ray_session):
    # The session head advertises two (fake) GPUs: the actor is assigned one and reports it.
    workers.extend(create_workers(1, cpus_per_worker=0, gpus_per_worker=1, name_prefix="g", start=5))
    [info] = describe_workers(workers, timeout_s=60)
    assert info.worker_id == "g5" and info.device != "cpu"
    assert worker_count("auto", gpus_per_worker=1, cpus_per_worker=0,
                        resources=ray_session.cluster_resources()) == 2


def test_runner_error_in_actor_is_not_a_lost_worker(workers, tmp_path):
    import ray

    workers.extend(create_workers(1, cpus_per_worker=1, gpus_per_worker=0))
    ref = workers[0].run.remote(request(tmp_path, template_dir=str(tmp_path / "missing")))
    with pytest.raises(TemplateError) as caught:
        ray.get(ref, timeout=60)
    assert not is_worker_lost(caught.value)


def test_killing_the_actor_mid_run_is_lost_and_kills_the_child(workers, tmp_path):
    import ray

    source = SEED.replace("    steps = 0\n", (
        "    import os, subprocess, time\n"
        "    child = subprocess.Popen(['sleep', '300'])\n"
        "    open('pid.tmp', 'w').write(f'{os.getpid()} {child.pid}')\n"
        "    os.replace('pid.tmp', 'pid')\n"
        "    time.sleep(300)\n"
        "    steps = 0\n"))
    workers.extend(create_workers(1, cpus_per_worker=1, gpus_per_worker=0))
    req = request(tmp_path, source)
    ref = workers[0].run.remote(req)
    pid_file = experiment_dir(req) / "pid"
    pids: list[int] = []
    try:
        wait_for(pid_file.exists, 60, "the experiment started on the worker")
        pids = [int(pid) for pid in pid_file.read_text().split()]
        assert all(alive(pid) for pid in pids)
        ray.kill(workers[0])
        with pytest.raises(rex.RayError) as caught:
            ray.get(ref, timeout=60)
        assert is_worker_lost(caught.value), repr(caught.value)
        wait_for(lambda: not any(alive(pid) for pid in pids), 15,
                 f"experiment processes {pids} died with their worker")
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
