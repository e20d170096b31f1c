"""Controller CPU per experiment with an `llm` operator's prompt built for every proposal.

The store is pre-filled with N done candidates of 25 KB of source each (lineages hundreds deep
at 10,000, champions with many children); then the real controller runs `--experiments` more
with an executor that finishes every run at once and the real `LLMMutator`, whose client talks
to an in-process stand-in transport that answers at once with a SEARCH/REPLACE edit. So all
CPU measured (process time, all threads) is the engine's: the prompt (lineage, lab notebook,
tried ideas, inspirations), the client, the edit, pre-flight, store writes, selection,
survival, migration. Process CPU, not wall time: the machine is shared.

    python benchmarks/bench_controller_cost.py --sizes 100 1000 10000 --experiments 200 \
        --repeats 3 [--checkout /path/to/other/checkout ...]

Every measurement runs in a fresh process of the checkout it measures; several checkouts are
interleaved run by run, so they share the machine's load; the medians are compared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TEMPLATE = REPO / "tests" / "fixtures" / "sleep_template"
SOURCE_BYTES = 25_000


def padded_source(base: str) -> str:
    """The seed plus real code (not comments) up to 25 KB, so pre-flight parses 25 KB."""
    blocks, i = [base], 0
    while sum(map(len, blocks)) < SOURCE_BYTES:
        blocks.append(f"\n\ndef helper_{i}(x, scale={i}.0):\n    y = x * scale\n"
                      f"    for k in range(3):\n        y = y + k / (scale + 1)\n    return y\n")
        i += 1
    return "".join(blocks)


# --------------------------------------------------------------- one measurement (child process)


def _engine() -> dict[str, Any]:
    """The engine's parts, from whichever layout the checkout on sys.path has."""
    import importlib

    def first(*paths: str) -> Any:
        for path in paths:
            module, _, name = path.rpartition(".")
            try:
                return getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                continue
        raise ImportError(f"none of {paths}")

    def optional(path: str) -> Any:
        try:
            return first(path)
        except ImportError:
            return None

    return {
        "config_from_dict": first("evolve.config.config_from_dict"),
        "Controller": first("evolve.controller.shell.Controller", "evolve.run.shell.Controller"),
        "executor": importlib.import_module(first(
            "evolve.controller.executor.Finished", "evolve.run.executor.Finished").__module__),
        "LLMMutator": first("evolve.mutate.llm.LLMMutator"),
        "RunResult": first("evolve.workers.runner.RunResult"),
        "Candidate": first("population.candidate.Candidate"),
        "Status": first("population.candidate.Status"),
        "Store": first("population.store.Store"),
        "plan_run": optional("evolve.controller.wiring.plan_run"),  # Controller(plan) if any
    }


def fill(engine: dict[str, Any], store: Any, count: int, base: str, islands: int) -> None:
    """`count` done candidates in lineages; parents drawn from the best so far (as selection
    would), so champions have many children and lineages grow deep."""
    Candidate, Status = engine["Candidate"], engine["Status"]
    rng = random.Random(0)
    now = time.time() - 10 * count
    store.add(Candidate(id="root", parent_id=None, island=0, generation=0,
                        files={"train.py": base}, status=Status.DONE, metrics={"val_bpb": 2.0},
                        description="baseline", mutator="template", created_at=now,
                        finished_at=now))
    best: list[list[tuple[float, str, int]]] = [[(2.0, "root", 0)] for _ in range(islands)]
    for i in range(1, count):
        island = i % islands
        parent_bpb, parent, generation = rng.choice(sorted(best[island])[:20])
        bpb = parent_bpb + rng.gauss(0.0, 0.01)
        failed = rng.random() < 0.1
        cid = f"p{i:05d}"
        store.add(Candidate(
            id=cid, parent_id=parent, island=island, generation=generation + 1,
            files={"train.py": base + f"\nSTORED_{i} = {i}\n"}, description=f"stored {i}",
            mutator="llm", diff=f"+STORED_{i} = {i}\n",
            status=Status.PROPOSED if failed else Status.DONE,
            metrics={} if failed else {"val_bpb": bpb}, created_at=now + i,
            finished_at=None if failed else now + i))
        if failed:  # the notebook shows recent failures with their log tails
            store.record_result(cid, status=Status.CRASHED, metrics={}, reason="stand-in crash",
                                log_tail="Traceback\n  ...\nRuntimeError: stand-in\n",
                                now=now + i)
        if not failed:
            best[island].append((bpb, cid, generation + 1))


def make_executor(engine: dict[str, Any], count: int) -> Any:
    executor = engine["executor"]
    RunResult = engine["RunResult"]

    class InstantExecutor:
        """Workers that finish every run at once with a made-up score."""

        def __init__(self) -> None:
            self.emit: Any = None

        async def start(self, emit: Any) -> None:
            self.emit = emit
            for i in range(count):
                emit(executor.Joined(f"w{i}", "node", "cpu"))

        def submit(self, worker_id: str, request: Any) -> None:
            now = time.time()
            bpb = 1.0 + random.Random(request.candidate_id).random()
            result = RunResult(candidate_id=request.candidate_id, outcome="done",
                               metrics={"val_bpb": bpb}, reason="", log_tail="", log_path="",
                               exit_code=0, started_at=now, ended_at=now, device="cpu")
            asyncio.get_running_loop().call_soon(self.emit, executor.Finished(worker_id, result))

        async def close(self, *, abandon: bool = False) -> None:
            pass

    return InstantExecutor()


def make_llm(engine: dict[str, Any], operator: Any) -> Any:
    """The real LLMMutator; its HTTP client answers in-process with the stand-in's edit (as a
    JSON message, or as the event stream when the mutator streams)."""
    import inspect

    import anthropic
    import httpx2

    sys.path.insert(0, str(HERE))
    from messages_standin import _events, _message, _parent_text, edit_answer

    from evolve.mutate.cost import PriceTable

    serial = iter(range(10**9))

    def answer(request: Any) -> Any:
        body = json.loads(request.content)
        n = next(serial)
        message = _message(body, n, edit_answer(_parent_text(body), n))
        if not body.get("stream"):
            return httpx2.Response(200, json=message)
        payload = b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                           for name, data in _events(message))
        return httpx2.Response(200, content=payload,
                               headers={"content-type": "text/event-stream"})

    client = anthropic.AsyncAnthropic(
        api_key="bench", base_url="http://standin.invalid", max_retries=0,
        http_client=anthropic.DefaultAsyncHttpxClient(transport=httpx2.MockTransport(answer)))
    known = inspect.signature(engine["LLMMutator"]).parameters
    if "op" in known:  # the operator takes its config section (and the run's facts)
        return engine["LLMMutator"](operator.model_copy(update={"max_tokens": 2000}),
                                    client=client)
    options: dict[str, Any] = {"model": "stand-in", "client": client, "max_tokens": 2000}
    if hasattr(PriceTable, "from_config"):  # a free local model has a price of 0
        options["prices"] = PriceTable.from_config({"stand-in": {"input": 0.0, "output": 0.0}})
    return engine["LLMMutator"](**{k: v for k, v in options.items() if k in known})


class Clocked:
    """The recorder: process CPU time at every recorded result, so the steady state (first
    result to last) is told apart from start-up (resume reads the whole store once)."""

    def __init__(self, profiler: Any = None) -> None:
        self.stamps: list[float] = []
        self.profiler = profiler  # profiles the steady state only (from the first result)

    def on_candidate(self, c: Any) -> None: ...
    def on_result(self, c: Any, kept: bool) -> None:
        self.stamps.append(time.process_time())
        if self.profiler is not None and len(self.stamps) == 1:
            self.profiler.enable()
    def on_progress(self, snapshot: Any) -> None: ...


def measure(size: int, experiments: int, workers: int, islands: int,
            profile: str | None) -> dict[str, float]:
    engine = _engine()
    base = padded_source((TEMPLATE / "train_cpu.py").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        config = engine["config_from_dict"]({
            "name": "bench", "template": str(TEMPLATE), "profile": "cpu-micro",
            "population": {"size": 8, "islands": islands, "migration_interval": 10},
            "mutation": {"operators": [{"kind": "llm", "model": "stand-in",
                                        "base_url": "http://standin.invalid",
                                        "input_usd_per_mtok": 0.0,
                                        "output_usd_per_mtok": 0.0}]},
            "workers": {"count": workers}, "budget": {"max_experiments": size + experiments},
            "test": {"final": False}})
        with engine["Store"].open(Path(tmp) / "store.sqlite") as store:
            fill(engine, store, size, base, islands)
            profiler = None
            if profile:  # cProfile sees one thread: run the shell's thread work inline
                import cProfile

                async def inline(func: Any, /, *args: Any, **kwargs: Any) -> Any:
                    return func(*args, **kwargs)

                asyncio.to_thread = inline  # type: ignore[assignment]
                profiler = cProfile.Profile()
            recorder = Clocked(profiler)
            plan = engine["plan_run"](config) if engine["plan_run"] else config
            llm = make_llm(engine, config.mutation.operators[0])
            controller = engine["Controller"](
                plan, store, make_executor(engine, workers), {"llm": llm},
                recorder, work_root=Path(tmp) / "work", tick_s=3600)
            cpu, wall = time.process_time(), time.perf_counter()
            reason = asyncio.run(controller.run())
            started = cpu
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(profile)
            assert reason.startswith("max_experiments"), reason
            finished = store.count(engine["Status"].DONE) + store.count(engine["Status"].REJECTED)
            notebook_ms = notebook_rebuild_ms(store)
    stamps = recorder.stamps
    steady = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    return {"cpu_ms": 1000 * steady, "all_cpu_ms": 1000 * cpu / experiments,
            "notebook_ms": notebook_ms,
            "startup_cpu_ms": 1000 * (stamps[0] - started), "wall_ms": 1000 * wall / experiments,
            "finished": finished}


def notebook_rebuild_ms(store: Any) -> float:
    """CPU of one lab-notebook rebuild after a new result, as the controller's notebook does
    it (with the lineage steps it keeps, where the checkout has them), median of 5."""
    import inspect

    from evolve.mutate import notebook

    options: dict[str, Any] = {}
    if "steps" in inspect.signature(notebook.build_notebook).parameters:
        options["steps"] = notebook.Steps(store)
        notebook.build_notebook(store, **options)  # the first build reads the lineages once
    times = []
    for _ in range(5):
        started = time.process_time()
        notebook.build_notebook(store, **options)
        times.append(time.process_time() - started)
    return 1000 * statistics.median(times)


# ---------------------------------------------------------------------- driver (parent process)


def run_one(checkout: Path, size: int, args: argparse.Namespace) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(checkout), OMP_NUM_THREADS="1")
    command = [sys.executable, str(Path(__file__).resolve()), "--one", str(size),
               "--experiments", str(args.experiments), "--workers", str(args.workers),
               "--islands", str(args.islands)]
    done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"{checkout} at {size} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--islands", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkout", type=Path, action="append",
                        help="a tree to measure (repeatable; default: this one)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--profile", help="with --one: write a cProfile of the run here")
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one, args.experiments, args.workers, args.islands,
                                 args.profile)))
        return
    checkouts = [c.resolve() for c in args.checkout or [REPO]]
    runs: dict[tuple[Path, int], list[dict[str, float]]] = {}
    for repeat in range(args.repeats):
        for size in args.sizes:
            for checkout in checkouts:
                figures = run_one(checkout, size, args)
                runs.setdefault((checkout, size), []).append(figures)
                print(f"[{repeat + 1}/{args.repeats}] {checkout.name} {size:6d} stored: "
                      f"{figures['cpu_ms']:.1f} ms CPU/experiment in the steady state, "
                      f"{figures['all_cpu_ms']:.1f} with start-up "
                      f"({figures['startup_cpu_ms']:.0f} ms before the first result); "
                      f"wall {figures['wall_ms']:.1f} ms/experiment; one notebook rebuild "
                      f"{figures['notebook_ms']:.1f} ms", flush=True)
    print(f"\nmedians of {args.repeats} interleaved runs, {args.experiments} experiments each, "
          "25 KB sources, an llm prompt per proposal; ms of controller CPU per experiment, "
          "steady state (first to last result) / all (start-up included) / one lab-notebook "
          "rebuild:")
    print("| stored | " + " | ".join(c.name for c in checkouts) + " |")
    print("|---|" + "---|" * len(checkouts))
    for size in args.sizes:
        cells = []
        for c in checkouts:
            steady = statistics.median(r["cpu_ms"] for r in runs[(c, size)])
            every = statistics.median(r["all_cpu_ms"] for r in runs[(c, size)])
            book = statistics.median(r["notebook_ms"] for r in runs[(c, size)])
            cells.append(f"{steady:.1f} / {every:.1f} / {book:.1f}")
        print(f"| {size:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
