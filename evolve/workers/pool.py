"""Create the cluster's candidate workers: how many, with which resources, spread over nodes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import ray
import ray.exceptions as rex

from evolve.workers.actor import CandidateWorker, WorkerInfo


def worker_count(count: int | str, *, gpus_per_worker: float, cpus_per_worker: float,
                 resources: Mapping[str, float]) -> int:
    """Resolve `workers.count`: an int as given, or "auto" = as many as the resources hold.

    "auto" is one worker per `gpus_per_worker` GPUs when GPU workers are asked for, else one
    per `cpus_per_worker` CPUs.
    """
    if gpus_per_worker < 0 or cpus_per_worker < 0:
        raise ValueError("workers.gpus_per_worker and workers.cpus_per_worker must be >= 0")
    if count != "auto":
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"workers.count must be a positive integer or 'auto', got {count!r}")
        return count
    cpus = float(resources.get("CPU", 0.0))
    gpus = float(resources.get("GPU", 0.0))
    fits: list[int] = []
    if gpus_per_worker > 0:
        fits.append(math.floor(gpus / gpus_per_worker + 1e-9))
    if cpus_per_worker > 0:
        fits.append(math.floor(cpus / cpus_per_worker + 1e-9))
    if not fits:
        raise ValueError("workers.count 'auto' needs cpus_per_worker or gpus_per_worker > 0")
    n = min(fits)
    if n < 1:
        if gpus_per_worker > 0 and gpus < gpus_per_worker:
            raise ValueError(
                f"workers.count 'auto' found {gpus:g} free GPUs, fewer than gpus_per_worker="
                f"{gpus_per_worker:g}; set workers.gpus_per_worker: 0 for CPU-only workers")
        raise ValueError(
            f"workers.count 'auto' found {cpus:g} free CPUs, fewer than cpus_per_worker="
            f"{cpus_per_worker:g}; lower workers.cpus_per_worker or give the cluster more CPUs")
    return n


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


def describe_workers(workers: Sequence, *, timeout_s: float = 120.0) -> list[WorkerInfo]:
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
