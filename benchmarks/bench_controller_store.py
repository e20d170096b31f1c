"""Does the controller's cost per experiment grow with the store? 100 / 1,000 / 10,000 stored.

Each stored candidate carries 25 KB of source. The controller then runs `--experiments` more
with an executor that answers instantly and a mutator that answers instantly, so all CPU
measured is the engine's own: store writes, pre-flight (an ast parse of 25 KB), parent
selection, lineage, lab notebook, survival, migration.

    python benchmarks/bench_controller_store.py --sizes 100 1000 10000 --experiments 200
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from evolve.config import config_from_dict
from evolve.controller.executor import Emit, Finished, Joined
from evolve.controller.shell import Controller
from evolve.controller.wiring import plan_run
from evolve.mutate.base import MutationContext, Proposal
from evolve.mutate.notebook import build_notebook
from evolve.workers.runner import RunRequest, RunResult
from population.candidate import Candidate, Status
from population.store import Store

REPO = Path(__file__).resolve().parent.parent
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


class InstantExecutor:
    """Workers that finish every run at once with a made-up score."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.emit: Emit | None = None

    async def start(self, emit: Emit) -> None:
        self.emit = emit
        for i in range(self.count):
            emit(Joined(f"w{i}", "node", "cpu"))

    def submit(self, worker_id: str, request: RunRequest) -> None:
        now = time.time()
        bpb = 1.0 + random.Random(request.candidate_id).random()
        result = RunResult(candidate_id=request.candidate_id, outcome="done",
                           metrics={"val_bpb": bpb}, reason="", log_tail="", log_path="",
                           exit_code=0, started_at=now, ended_at=now, device="cpu")
        asyncio.get_running_loop().call_soon(self.emit, Finished(worker_id, result))

    async def close(self, *, abandon: bool = False) -> None:
        pass


class InstantMutator:
    """Adds one assignment to the parent's train.py: a real, distinct child, no latency."""

    name = "heuristic"

    async def propose(self, context: MutationContext) -> Proposal:
        files = dict(context.parent.files)
        files["train.py"] += f"\nBENCH_{context.seed} = {context.seed}\n"
        return Proposal(files=files, description=f"set BENCH_{context.seed}", rationale="",
                        mutator="heuristic")


class Quiet:
    def on_candidate(self, c) -> None: ...
    def on_result(self, c, kept) -> None: ...
    def on_progress(self, snapshot) -> None: ...


def fill(store: Store, count: int, base: str, islands: int) -> None:
    """`count` done candidates in lineages; parents drawn from the best so far (as selection
    would), so champions have many children."""
    rng = random.Random(0)
    now = time.time()
    root = Candidate(id="root", parent_id=None, island=0, generation=0, files={"train.py": base},
                     status=Status.DONE, metrics={"val_bpb": 2.0}, created_at=now, finished_at=now)
    store.add(root)
    best: list[list[tuple[float, str, int]]] = [[(2.0, "root", 0)] for _ in range(islands)]
    for i in range(1, count):
        island = i % islands
        pool = sorted(best[island])[:20]
        parent_bpb, parent, generation = rng.choice(pool)
        bpb = parent_bpb + rng.gauss(0.0, 0.01)
        cid = f"p{i:05d}"
        store.add(Candidate(
            id=cid, parent_id=parent, island=island, generation=generation + 1,
            files={"train.py": base + f"\nSTORED_{i} = {i}\n"}, description=f"stored {i}",
            mutator="heuristic", diff=f"+STORED_{i} = {i}\n", status=Status.DONE,
            metrics={"val_bpb": bpb}, created_at=now + i, finished_at=now + i))
        best[island].append((bpb, cid, generation + 1))


def measure(size: int, experiments: int, workers: int,
            islands: int) -> tuple[float, float, float]:
    base = padded_source((TEMPLATE / "train_cpu.py").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        config = config_from_dict({
            "name": "bench", "template": str(TEMPLATE), "profile": "cpu-micro",
            "population": {"size": 8, "islands": islands, "migration_interval": 10},
            "workers": {"count": workers}, "budget": {"max_experiments": size + experiments}})
        with Store.open(Path(tmp) / "store.sqlite") as store:
            fill(store, size, base, islands)
            controller = Controller(plan_run(config), store, InstantExecutor(workers),
                                    {"heuristic": InstantMutator()}, Quiet(),
                                    work_root=Path(tmp) / "work", tick_s=3600)
            cpu, wall = time.process_time(), time.perf_counter()
            reason = asyncio.run(controller.run())
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            assert reason.startswith("max_experiments"), reason
            assert store.count(Status.DONE) >= size + experiments
            started = time.process_time()  # the shell rebuilds it at most every 5 s
            build_notebook(store)
            notebook = time.process_time() - started
    return 1000 * cpu / experiments, 1000 * wall / experiments, 1000 * notebook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--islands", type=int, default=2)
    args = parser.parse_args()
    for size in args.sizes:
        cpu_ms, wall_ms, notebook_ms = measure(size, args.experiments, args.workers, args.islands)
        print(f"{size:6d} stored (25 KB each): controller CPU {cpu_ms:.1f} ms/experiment, "
              f"wall {wall_ms:.1f} ms/experiment ({args.experiments} experiments, "
              f"{args.workers} workers); one lab-notebook rebuild {notebook_ms:.1f} ms", flush=True)


if __name__ == "__main__":
    main()
