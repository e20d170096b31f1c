"""Multi-fidelity stages through the real controller: short first runs, asynchronous
promotion by rank within the stage, early stops recorded with their stage, and only
full-budget results in the population."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from evolve.config import config_from_dict
from evolve.controller.executor import LocalExecutor
from evolve.controller.shell import Controller
from evolve.controller.wiring import plan_run
from evolve.mutate.heuristic import HeuristicMutator
from population.candidate import Status
from population.fidelity import promote
from population.store import Store

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "sleep_template"


class Quiet:
    def on_candidate(self, c) -> None:
        pass

    def on_result(self, c, kept) -> None:
        pass

    def on_progress(self, snapshot) -> None:
        pass


def test_children_climb_stages_and_only_full_budget_results_compete(tmp_path):
    template = tmp_path / "template"
    shutil.copytree(FIXTURE, template)
    for name in ("train.py", "train_cpu.py"):
        path = template / name
        path.write_text(path.read_text().replace("SLEEP_S = 0.5 ", "SLEEP_S = 0.05 "))
    config = config_from_dict({
        "name": "stages", "template": str(template), "profile": "cpu-micro", "seed": 1,
        "population": {"size": 3, "islands": 1}, "workers": {"count": 2},
        "budget": {"max_experiments": 12},
        "fidelity": {"stages": [{"budget_fraction": 0.25, "promote_top": 0.4}]}})
    with Store.open(tmp_path / "store.sqlite") as store:
        controller = Controller(plan_run(config), store, LocalExecutor(2), {"heuristic": HeuristicMutator()},
                                Quiet(), work_root=tmp_path / "work", tick_s=0.2)
        reason = asyncio.run(controller.run())
        assert "max_experiments" in reason
        children = [c for c in store.finished_in_order(include_rejected=True)
                    if c.id != "root" and c.mutator != "migration"
                    and (c.status is not Status.REJECTED or "not promoted" in c.reason)]
        assert store.get("root").metrics["budget_fraction"] == 1.0  # the baseline runs in full
        promoted = [c for c in children if c.status is Status.DONE]
        stopped = [c for c in children if c.status is Status.REJECTED]
        assert promoted and stopped, [(c.id, c.status, c.reason) for c in children]
        for c in promoted:
            # recorded from its full-budget run, its short stage kept in the history
            assert c.metrics["budget_fraction"] == 1.0 and c.metrics["stage"] == 1
            assert [s["budget_fraction"] for s in c.metrics["stages"]] == [0.25, 1.0]
            (run,) = store.extra_runs(c.id, purpose="stage")
            assert run.outcome == "done" and run.budget_fraction == 1.0
            # its held-out score came with that full-budget run: never a retraining for it
            assert c.test_bpb == run.test_bpb is not None and "test_bpb" not in c.metrics
            assert not store.extra_runs(c.id, purpose="test")
        for c in stopped:
            assert c.metrics["budget_fraction"] == 0.25 and c.metrics["stage"] == 0
            assert "not promoted past stage 1 of 2 (25% budget)" in c.reason
            assert not store.extra_runs(c.id, purpose="stage")
        # the population holds full-budget results only
        for survivor in store.survivors(0, 3):
            assert survivor.metrics["budget_fraction"] == 1.0
        # promotion was judged among the stage-1 scores seen so far, in arrival order
        arrival = sorted(children, key=lambda c: store.attempts(c.id)[-1].ended_at)
        seen: list[float] = []
        for c in arrival:
            score = c.metrics["stages"][0]["val_bpb"]
            if score is None:  # crashed at stage 1: seconds lost, never compared
                assert c.status is Status.CRASHED and "stage 1 of 2" in c.reason
                continue
            seen.append(score)
            assert promote(score, seen, 0.4) == (c.status is Status.DONE), c.id
