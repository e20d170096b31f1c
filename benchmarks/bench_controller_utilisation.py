"""Do workers wait on the engine? Real runs of the sleep template, a stand-in LLM with latency L.

Each evaluation sleeps E seconds inside the real harness subprocess; the stand-in mutator
answers after L seconds (L:E = 1:10, like a 30 s LLM call against a 300 s training run).
Utilisation = sum of attempt seconds / (workers x span from first start to last end),
read from the store's attempt rows.

    python benchmarks/bench_controller_utilisation.py --workers 4 --eval-s 5 --llm-s 0.5 --experiments 60
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from pathlib import Path

from evolve.config import config_from_dict
from evolve.controller.executor import LocalExecutor
from evolve.controller.shell import Controller
from evolve.controller.wiring import plan_run
from evolve.mutate.base import MutationContext, Proposal
from evolve.mutate.heuristic import HeuristicMutator
from population.store import Store

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "sleep_template"


class SlowMutator:
    """The heuristic mutator behind a fixed latency: an LLM that answers after `latency_s`."""

    name = "heuristic"

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.inner = HeuristicMutator()

    async def propose(self, context: MutationContext) -> Proposal:
        await asyncio.sleep(self.latency_s)
        return self.inner.propose_now(context)


class Quiet:
    def on_candidate(self, c) -> None: ...
    def on_result(self, c, kept) -> None: ...
    def on_progress(self, snapshot) -> None: ...


def utilisation(store: Store, workers: int) -> tuple[float, float, int]:
    attempts = [a for c in store.finished_in_order() for a in store.attempts(c.id)]
    start = min(a.started_at for a in attempts)
    end = max(a.ended_at for a in attempts)
    busy = sum(a.ended_at - a.started_at for a in attempts)
    return busy / (workers * (end - start)), end - start, len(attempts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--eval-s", type=float, default=5.0)
    parser.add_argument("--llm-s", type=float, default=0.5)
    parser.add_argument("--experiments", type=int, default=60)
    parser.add_argument("--lookahead", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "template"
        shutil.copytree(FIXTURE, template)
        for name in ("train.py", "train_cpu.py"):
            path = template / name
            path.write_text(path.read_text().replace("SLEEP_S = 0.5 ", f"SLEEP_S = {args.eval_s} "))
        config = config_from_dict({
            "name": "bench", "template": str(template), "profile": "cpu-micro",
            "population": {"size": 8, "islands": 2},
            "mutation": {"lookahead": args.lookahead},
            "workers": {"count": args.workers}, "budget": {"max_experiments": args.experiments}})
        with Store.open(Path(tmp) / "store.sqlite") as store:
            controller = Controller(plan_run(config), store, LocalExecutor(args.workers),
                                    {"heuristic": SlowMutator(args.llm_s)}, Quiet(),
                                    work_root=Path(tmp) / "work")
            reason = asyncio.run(controller.run())
            util, span, attempts = utilisation(store, args.workers)
            # The baseline runs alone by design; the steady state starts when it ends.
            root_end = store.attempts("root")[0].ended_at
            rest = [a for c in store.finished_in_order() for a in store.attempts(c.id)
                    if c.id != "root"]
            busy = sum(a.ended_at - a.started_at for a in rest)
            steady = busy / (args.workers * (max(a.ended_at for a in rest) - root_end))
    print(f"workers={args.workers} E={args.eval_s:g}s L={args.llm_s:g}s lookahead={args.lookahead}: "
          f"{attempts} attempts in {span:.1f} s, utilisation {util:.4f} "
          f"(after the baseline: {steady:.4f}); stop: {reason}")


if __name__ == "__main__":
    main()
