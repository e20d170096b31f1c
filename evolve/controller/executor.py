"""Executors: where candidates run. The shell submits `RunRequest`s and hears back as events.

`LocalExecutor` runs `run_candidate` on threads in this process (tests, a box without Ray);
`RayExecutor` runs it on `CandidateWorker` actors and follows the cluster as nodes come and go.
Both speak the same narrow interface, so the controller does not know which it drives.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from evolve.workers.runner import RunRequest, RunResult, TemplateError, run_candidate
from population.outcomes import Outcome


@dataclass(frozen=True)
class Joined:
    worker_id: str
    node: str
    device: str
    ip: str = ""
    isolation_problem: str = ""  # why experiments on its node cannot be network-isolated


@dataclass(frozen=True)
class Left:
    """The worker is gone; a run on it (if any) is lost."""

    worker_id: str
    reason: str


@dataclass(frozen=True)
class Refused:
    """The worker refused to score a run: its node's harness or data differ from the
    controller's (`TemplateError`). The run goes back to the queue, charged to no one; the
    worker gets no more work. `fatal`: no worker can do better (the controller's own machine,
    whose template or data changed under the running controller), so the run stops."""

    worker_id: str
    reason: str
    fatal: bool = False


@dataclass(frozen=True)
class Finished:
    worker_id: str
    result: RunResult


ExecutorEvent = Joined | Left | Refused | Finished
Emit = Callable[[ExecutorEvent], None]


class Executor(Protocol):
    """Workers that run one candidate at a time each."""

    async def start(self, emit: Emit) -> None:
        """Begin; announce every worker with `Joined` (now or later, as they come up)."""

    def submit(self, worker_id: str, request: RunRequest) -> None:
        """Run `request` on the (idle) worker; its `Finished`, `Left` or `Refused` follows."""

    async def close(self, *, abandon: bool = False) -> None:
        """Release the workers; `abandon` kills experiments still running."""


def failed_result(request: RunRequest, reason: str, started: float) -> RunResult:
    """A crash result for a run the runner itself could not carry out."""
    return RunResult(candidate_id=request.candidate_id, outcome=Outcome.CRASHED, metrics={},
                     reason=reason, log_tail="", log_path="", exit_code=None,
                     started_at=started, ended_at=time.time(), device="")


class LocalExecutor:
    """`count` workers on threads of this process: each run is a real harness subprocess."""

    def __init__(self, count: int, *, prefix: str = "local") -> None:
        if count < 1:
            raise ValueError(f"LocalExecutor needs at least one worker, not {count}")
        self.count = count
        self.prefix = prefix
        self._emit: Emit | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, emit: Emit) -> None:
        from evolve.workers.network import unshare_problem

        self._emit = emit
        node = platform.node() or "localhost"
        problem = await asyncio.to_thread(unshare_problem)
        for i in range(self.count):
            emit(Joined(f"{self.prefix}{i}", node, "cpu", isolation_problem=problem))

    def submit(self, worker_id: str, request: RunRequest) -> None:
        task = asyncio.get_running_loop().create_task(self._run(worker_id, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, worker_id: str, request: RunRequest) -> None:
        started = time.time()
        assert self._emit is not None
        try:
            result = await asyncio.to_thread(run_candidate, request)
        except TemplateError as exc:  # this machine is the controller's: nowhere else to go
            self._emit(Refused(worker_id, (
                f"stopped: worker {worker_id} on the controller's machine refused to score: {exc} "
                "— the template or its data changed under the running controller; restore them "
                "and `evolve resume` the run"), fatal=True))
            return
        except Exception as exc:  # the runner itself broke: the candidate crashed, say why
            result = failed_result(request, f"the runner failed: {type(exc).__name__}: {exc}", started)
        self._emit(Finished(worker_id, result))

    async def close(self, *, abandon: bool = False) -> None:
        # Threads cannot be killed: runs still going end at their own timeout (their process
        # groups die with this process).
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()


class RayExecutor:
    """One `CandidateWorker` actor per worker slot on the attached Ray cluster.

    Every `poll_s` it compares the cluster with its workers: actors on dead nodes are
    reported `Left`, and missing workers (lost ones, or more room when `count` is "auto")
    are started as resources allow.

    A worker that refuses to score (its node's harness or data differ from the controller's)
    is reported `Refused` and kept alive, idle: it goes on holding its CPUs/GPUs, so no new
    worker is placed in its slot only to refuse again. It is let go when its node dies.
    """

    def __init__(self, count: int | str = "auto", *, gpus_per_worker: float = 0.0,
                 cpus_per_worker: float = 1.0, poll_s: float = 5.0, place_timeout_s: float = 600.0,
                 prefix: str = "w", runtime_env: dict[str, Any] | None = None) -> None:
        self.count = count
        self.gpus_per_worker = gpus_per_worker
        self.cpus_per_worker = cpus_per_worker
        self.poll_s = poll_s
        self.place_timeout_s = place_timeout_s
        self.prefix = prefix
        self.runtime_env = runtime_env  # the workers' own (env_vars, working_dir), if any
        self._emit: Emit | None = None
        self._actors: dict[str, Any] = {}        # live, placed workers
        self._nodes: dict[str, str] = {}         # worker -> node id
        self._ips: dict[str, str] = {}           # worker -> node IP
        self._refused: dict[str, tuple[Any, str]] = {}  # idle refused worker -> (actor, node id)
        self._pending = 0                        # actors created, not yet placed
        self._next = 0
        self._runs: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    async def start(self, emit: Emit) -> None:
        import ray

        if not ray.is_initialized():
            raise RuntimeError("RayExecutor needs ray.init(address=...) first")
        self._emit = emit
        self._spawn(self._wanted())
        self._background(self._follow_cluster())

    def _background(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _wanted(self) -> int:
        import ray

        from evolve.workers.pool import worker_count

        if self.count != "auto":
            return int(self.count)
        try:
            return worker_count("auto", gpus_per_worker=self.gpus_per_worker,
                                cpus_per_worker=self.cpus_per_worker,
                                resources=ray.cluster_resources())
        except ValueError:
            return 0

    def _spawn(self, n: int) -> None:
        from evolve.workers.actor import CandidateWorker

        options = CandidateWorker.options(num_cpus=self.cpus_per_worker,
                                          num_gpus=self.gpus_per_worker,
                                          scheduling_strategy="SPREAD", max_restarts=0,
                                          **({"runtime_env": self.runtime_env}
                                             if self.runtime_env else {}))
        for _ in range(max(0, n)):
            worker_id = f"{self.prefix}{self._next}"
            self._next += 1
            self._pending += 1
            self._background(self._place(worker_id, options.remote(worker_id)))

    async def _place(self, worker_id: str, actor: Any) -> None:
        import ray

        try:
            info = await asyncio.wait_for(actor.describe.remote(), self.place_timeout_s)
        except (asyncio.TimeoutError, ray.exceptions.RayError):
            with contextlib.suppress(Exception):
                ray.kill(actor)
            return
        finally:
            self._pending -= 1
        if self._closing:
            ray.kill(actor)
            return
        self._actors[worker_id] = actor
        self._nodes[worker_id] = info.node_id
        self._ips[worker_id] = info.ip
        assert self._emit is not None
        self._emit(Joined(worker_id, info.node_id, info.device, ip=info.ip,
                          isolation_problem=info.isolation_problem))

    async def _follow_cluster(self) -> None:
        import ray

        while not self._closing:
            await asyncio.sleep(self.poll_s)
            try:
                dead = {n["NodeID"] for n in ray.nodes() if not n.get("Alive", False)}
            except Exception:  # the GCS is briefly unreachable: try again next round
                continue
            for worker_id in [w for w, node in self._nodes.items() if node in dead]:
                self._lose(worker_id, f"its node {self._nodes[worker_id][:12]} died")
            for worker_id in [w for w, (_, node) in self._refused.items() if node in dead]:
                self._refused.pop(worker_id)  # its slot is gone with the node; nothing to say
            missing = self._wanted() - len(self._actors) - len(self._refused) - self._pending
            if missing > 0 and ray.available_resources().get("CPU", 0) >= self.cpus_per_worker:
                self._spawn(min(missing, self._fits()))

    def _fits(self) -> int:
        import ray

        free = ray.available_resources()
        fits = [int(free.get("CPU", 0) // self.cpus_per_worker)] if self.cpus_per_worker else []
        if self.gpus_per_worker:
            fits.append(int(free.get("GPU", 0) // self.gpus_per_worker))
        return min(fits) if fits else 0

    def _lose(self, worker_id: str, reason: str) -> None:
        import ray

        actor = self._actors.pop(worker_id, None)
        self._nodes.pop(worker_id, None)
        self._ips.pop(worker_id, None)
        run = self._runs.pop(worker_id, None)
        if run is not None:
            run.cancel()
        if actor is None:
            return
        with contextlib.suppress(Exception):
            ray.kill(actor)
        assert self._emit is not None
        self._emit(Left(worker_id, reason))

    def _refuse(self, worker_id: str, exc: BaseException) -> None:
        """Take a worker that refused to score out of the pool, keeping its actor (and slot)."""
        actor = self._actors.pop(worker_id, None)
        node = self._nodes.pop(worker_id, "")
        ip = self._ips.pop(worker_id, "")
        if actor is None:
            return
        self._refused[worker_id] = (actor, node)
        cause = getattr(exc, "cause", None) or exc
        detail = " ".join(str(cause).split())[:600]
        where = f"node {node[:12]}" + (f" ({ip})" if ip else "")
        last = not self._actors and not self._pending  # nobody left who might score
        assert self._emit is not None
        if last:
            self._emit(Refused(worker_id, (
                f"stopped: every worker refused to score, the last {worker_id} on {where}: "
                f"{detail}; fix the nodes' template and data, then `evolve resume` the run"),
                fatal=True))
            return
        self._emit(Refused(worker_id, (
            f"worker {worker_id} on {where} refused to score: {detail}; it gets no more work "
            "and holds its slot idle until the run ends")))

    def actor(self, worker_id: str) -> Any:
        """The live actor handle of a worker (operations, tests), or KeyError."""
        return self._actors[worker_id]

    def submit(self, worker_id: str, request: RunRequest) -> None:
        actor = self._actors.get(worker_id)
        if actor is None:
            return  # it died a moment ago: its `Left` is already on the way and requeues this run
        self._runs[worker_id] = self._background(self._run(worker_id, actor, request))

    async def _run(self, worker_id: str, actor: Any, request: RunRequest) -> None:
        from evolve.workers.actor import is_refusal, is_worker_lost

        started = time.time()
        try:
            result = await actor.run.remote(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_refusal(exc):
                self._runs.pop(worker_id, None)
                self._refuse(worker_id, exc)
                return
            if is_worker_lost(exc):
                self._runs.pop(worker_id, None)
                self._lose(worker_id, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                return
            result = failed_result(request, f"the worker failed: {type(exc).__name__}: "
                                            f"{str(exc).splitlines()[0][:300]}", started)
        if self._runs.get(worker_id) is not None:
            self._runs.pop(worker_id, None)
            assert self._emit is not None
            self._emit(Finished(worker_id, result))

    async def close(self, *, abandon: bool = False) -> None:
        import ray

        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for actor in [*self._actors.values(), *(actor for actor, _ in self._refused.values())]:
            with contextlib.suppress(Exception):
                ray.kill(actor)  # its experiment dies with it (parent-death signal)
        self._actors.clear()
        self._refused.clear()
        self._nodes.clear()
        self._ips.clear()
        self._runs.clear()
