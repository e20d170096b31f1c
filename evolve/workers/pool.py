"""How many candidate workers a cluster holds (`workers.count: auto`); `RayExecutor` starts them."""

from __future__ import annotations

import math
from collections.abc import Mapping


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
