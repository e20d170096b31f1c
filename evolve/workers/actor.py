"""The Ray actor that runs candidates on one worker slot (one GPU, or some CPUs).

A thin shell around `run_candidate`: the runner does the work, the actor says where it runs.
No torch here, so a worker costs no CUDA context of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import ray
import ray.exceptions as rex

from evolve.workers.device import detect_device, visible_gpus
from evolve.workers.network import unshare_problem
from evolve.workers.runner import RunRequest, RunResult, TemplateError, run_candidate


@dataclass(frozen=True)
class WorkerInfo:
    """Who a worker is and where: recorded with every attempt it runs."""

    worker_id: str
    node_id: str
    ip: str
    device: str
    isolation_problem: str = ""  # why experiments here cannot be network-isolated ("" = they can)


@ray.remote(max_restarts=0, max_task_retries=0)
class CandidateWorker:
    """Runs one candidate at a time in a subprocess; dies with no experiment left behind."""

    def __init__(self, worker_id: str | None = None) -> None:
        context = ray.get_runtime_context()
        self._info = WorkerInfo(
            worker_id=worker_id or context.get_actor_id(),
            node_id=context.get_node_id(),
            ip=ray.util.get_node_ip_address(),
            device=_assigned_device(),
            isolation_problem=unshare_problem(),
        )

    def describe(self) -> WorkerInfo:
        return self._info

    def run(self, request: RunRequest) -> RunResult:
        return run_candidate(request)


def _assigned_device() -> str:
    """The GPU Ray assigned to this actor (by name), or "cpu" when it holds none."""
    if not ray.get_gpu_ids():
        return "cpu"
    ids = visible_gpus() or tuple(str(gpu) for gpu in ray.get_gpu_ids())
    return detect_device(ids)


# Errors that mean the worker (its process, its node, or the object holding its answer) is
# gone: the experiment is `lost` and runs again elsewhere; it is never the candidate's crash.
_LOST = (
    rex.RayActorError,  # ActorDiedError, ActorUnavailableError
    rex.WorkerCrashedError,
    rex.NodeDiedError,
    rex.LocalRayletDiedError,
    rex.OutOfMemoryError,  # Ray's memory monitor killed the worker (the store bounds retries)
    rex.ActorUnschedulableError,
    rex.ActorPlacementGroupRemoved,
    rex.ObjectLostError,
)


def is_refusal(exc: BaseException) -> bool:
    """True if `exc` (raised by ray.get on `run`) is the worker refusing to score: its node's
    harness or data differ from the controller's (`TemplateError`). Neither the candidate's
    fault nor a loss: the run belongs on another worker, and this worker on none."""
    if isinstance(exc, TemplateError):  # Ray re-raises the cause as a subclass of its type
        return True
    return isinstance(exc, rex.RayTaskError) and isinstance(getattr(exc, "cause", None), TemplateError)


def is_worker_lost(exc: BaseException) -> bool:
    """True if `exc` (raised by ray.get on a worker call) means the worker was lost.

    A RayTaskError (the runner itself raised, e.g. a broken template) and a cancelled task are
    not losses: retrying them elsewhere would fail the same way.
    """
    if isinstance(exc, rex.ObjectFreedError):
        return False
    if isinstance(exc, rex.RayTaskError) and not isinstance(exc, _LOST):
        return False
    return isinstance(exc, _LOST)
