"""A deterministic executor for strategy benchmarks: P virtual workers, real runs on any cores.

Every run takes one *round* of virtual time (under a token budget every run costs the same),
and the controller hears results in virtual-time order (ties: the order the runs started),
each only once it has finished reacting to the one before (`Controller.idle`). The trainings
themselves are real, executed on `cores` threads (each a harness subprocess), so a P=8 run on
a 2-core machine gives the same store as on 1 core or 64: the run is reproducible under its
seed and independent of the machine. Wall-clock fields of a result (timings, MFU, the log's
summary block) are replaced by virtual ones, since they would differ from machine to machine.

`ResultCache` (benchmarks only) keeps finished results keyed by what decides them on CPU under
a token budget: normalised source, seed, profile, data, harness, torch version, splits, and
which runner produced them (the refereed harness, `HarnessRunner`, or the benchmark's trusted
in-process one, trusted_runner.py): entries of the two never mix.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from evolve.controller.executor import Emit, Finished, Joined, failed_result
from evolve.workers.runner import RunRequest, RunResult, run_candidate
from population.candidate import source_hash

# Metrics that measure the machine (its clock, its memory), not the candidate: left out, as
# is every "*_seconds" key (training_seconds comes back as the virtual round). The evaluators'
# allowance shares are seconds over an allowance: the machine's load too.
MACHINE_METRICS = ("mfu_percent", "peak_vram_mb", "tokens_per_second", "sandboxed",
                   "eval_allowance_used", "probe_allowance_used")
CACHED_OUTCOMES = ("done", "crashed", "invalid")  # not timed_out: that may be the machine's load


class Runner(Protocol):
    """Runs one request to its result; `name` keys the cache."""

    name: str

    def __call__(self, request: RunRequest) -> RunResult: ...


class HarnessRunner:
    """The real refereed harness (`run_candidate`): a subprocess per run, jailed roles."""

    name = "harness"

    def __call__(self, request: RunRequest) -> RunResult:
        return run_candidate(request)

    def close(self) -> None:
        pass


class ResultCache:
    """Finished results on disk, one JSON file per key; counts its hits and misses."""

    def __init__(self, root: str | Path, runner: str = "harness") -> None:
        self.root = Path(root)
        self.runner = runner
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        import torch

        self.torch = torch.__version__

    def key(self, request: RunRequest) -> str:
        parts = [source_hash(request.files), request.seed, request.profile, request.data,
                 request.data_hash, request.template_hash, self.torch, list(request.splits),
                 request.budget_fraction, self.runner]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def get(self, request: RunRequest) -> dict[str, Any] | None:
        path = self.root / f"{self.key(request)}.json"
        if not path.exists():
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(path.read_text())

    def put(self, request: RunRequest, entry: dict[str, Any]) -> None:
        if entry["outcome"] not in CACHED_OUTCOMES:
            return
        path = self.root / f"{self.key(request)}.json"
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps(entry))
        os.replace(temp, path)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


def run_deterministic(request: RunRequest, cache: ResultCache | None,
                      runner: Runner | None = None) -> dict[str, Any]:
    """The machine-independent part of running `request` (with `runner`, default the harness):
    outcome, metrics without wall-clock values, reason, log tail (only for failures: a
    finished run's log prints its timings)."""
    runner = runner or HarnessRunner()
    if cache is not None and cache.runner != runner.name:
        raise ValueError(f"a cache of {cache.runner!r} results cannot take {runner.name!r} runs")
    cached = cache.get(request) if cache is not None else None
    if cached is not None:
        return cached
    try:
        result = runner(request)
    except Exception as exc:  # the runner itself broke: a crash, said why (not cached)
        result = failed_result(request, f"the runner failed: {type(exc).__name__}: {exc}", 0.0)
        cache = None
    metrics = {k: v for k, v in result.metrics.items()
               if k not in MACHINE_METRICS and not k.endswith("_seconds")}
    entry = {"outcome": result.outcome, "metrics": metrics, "reason": result.reason,
             "log_tail": "" if result.outcome == "done" else result.log_tail,
             "exit_code": result.exit_code, "device": result.device}
    if cache is not None:
        cache.put(request, entry)
    return entry


@dataclass
class _InFlight:
    worker_id: str
    request: RunRequest
    started: float
    ends: float
    seq: int
    future: asyncio.Future[dict[str, Any]]


class VirtualExecutor:
    """`workers` virtual workers, each run `round_s` long in virtual time, computed on `cores`
    threads (each run by `runner`, default the harness). Give the controller `clock` as its clock
    and `bind` it before `run()`."""

    def __init__(self, workers: int, *, cores: int, cache: ResultCache | None = None,
                 runner: Runner | None = None, round_s: float = 1.0, prefix: str = "v",
                 start: float = 1.0) -> None:
        if workers < 1 or cores < 1:
            raise ValueError(f"need at least one worker and one core, not {workers} / {cores}")
        self.workers = workers
        self.cache = cache
        self.runner = runner or HarnessRunner()
        self.round_s = round_s
        self.prefix = prefix
        self.now = start  # not 0: the store reads a time of 0 as "not given" and stamps its own
        self.runs = 0  # runs handed out (cache hits included)
        self._pool = ThreadPoolExecutor(max_workers=cores, thread_name_prefix="virtual-run")
        self._idle: Callable[[], bool] | None = None
        self._emit: Emit | None = None
        self._flight: list[_InFlight] = []
        self._seq = 0
        self._pump: asyncio.Task[None] | None = None

    def clock(self) -> float:
        return self.now

    def bind(self, idle: Callable[[], bool]) -> None:
        """The controller's `idle`: a result is handed over only when it holds."""
        self._idle = idle

    async def start(self, emit: Emit) -> None:
        if self._idle is None:
            raise RuntimeError("VirtualExecutor.bind(controller.idle) must come before run()")
        self._emit = emit
        node = platform.node() or "localhost"
        for i in range(self.workers):
            emit(Joined(f"{self.prefix}{i}", node, "cpu"))
        self._pump = asyncio.get_running_loop().create_task(self._deliver())

    def submit(self, worker_id: str, request: RunRequest) -> None:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, run_deterministic, request, self.cache,
                                      self.runner)
        self._seq += 1
        self.runs += 1
        self._flight.append(_InFlight(worker_id, request, self.now, self.now + self.round_s,
                                      self._seq, future))

    async def _deliver(self) -> None:
        """Forever: wait for the controller to settle, then hand over the earliest run."""
        assert self._emit is not None and self._idle is not None
        while True:
            while not (self._flight and self._idle()):
                await asyncio.sleep(0.002)
            run = min(self._flight, key=lambda r: (r.ends, r.seq))
            entry = await run.future
            self._flight.remove(run)
            self.now = max(self.now, run.ends)
            self._emit(Finished(run.worker_id, self._result(run, entry)))
            await asyncio.sleep(0)

    def _result(self, run: _InFlight, entry: dict[str, Any]) -> RunResult:
        metrics = dict(entry["metrics"])
        if entry["outcome"] == "done":
            metrics["training_seconds"] = self.round_s  # virtual: every run takes one round
        return RunResult(candidate_id=run.request.candidate_id, outcome=entry["outcome"],
                         metrics=metrics, reason=entry["reason"], log_tail=entry["log_tail"],
                         log_path="", exit_code=entry["exit_code"], started_at=run.started,
                         ended_at=run.ends, device=entry["device"])

    async def close(self, *, abandon: bool = False) -> None:
        if self._pump is not None:
            self._pump.cancel()
        for run in self._flight:  # a stop with runs in flight: let the threads finish
            run.future.cancel()
        self._flight.clear()
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)

