"""Status, report and export show the seed noise, the re-run decisions and val beside
held-out test, on a run made by the real controller."""

from __future__ import annotations

import asyncio
import subprocess

from rich.console import Console
from test_confirmation_e2e import make_config, make_template

from evolve.controller.executor import LocalExecutor
from evolve.controller.shell import Controller
from evolve.controller.wiring import plan_run
from evolve.inspect.export import export_run
from evolve.inspect.report import build_report
from evolve.inspect.report_data import read_run
from evolve.inspect.status import render_status
from evolve.mutate.base import MutationContext, Proposal
from evolve.run.app import RunRecorder
from evolve.run.live import LiveDisplay
from evolve.run.rundir import RunDir
from population.store import Store


class TowardsOptimum:
    """A real gain first (two constants to the stand-in's optimum), then a seed-only change."""

    name = "heuristic"

    def __init__(self) -> None:
        self.made = 0

    async def propose(self, context: MutationContext) -> Proposal:
        self.made += 1
        source = context.parent.files["train.py"]
        if "MATRIX_LR = 0.04 " in source:
            source = source.replace("MATRIX_LR = 0.04 ", "MATRIX_LR = 0.03 ").replace(
                "WARMDOWN_FRAC = 0.5 ", "WARMDOWN_FRAC = 0.4 ")
            return Proposal(files={"train.py": source}, description="learning rate and warmdown",
                            rationale="", mutator="heuristic")
        source = source.replace("SEED_SALT = 0", f"SEED_SALT = {self.made}")
        return Proposal(files={"train.py": source}, description=f"SEED_SALT -> {self.made}",
                        rationale="", mutator="heuristic")


def test_status_report_and_export_show_noise_decisions_and_test(tmp_path):
    template = make_template(tmp_path, sd=0.001)
    config = make_config(template, budget={"max_experiments": 4}, workers={"count": 1},
                         test={"every_new_best": True})
    run_dir = RunDir.create(tmp_path / "results", "trust")
    run_dir.config_path.write_text(config.to_yaml())
    recorder = RunRecorder(run_dir)
    with Store.open(run_dir.store_path) as store:
        controller = Controller(plan_run(config), store, LocalExecutor(1), {"heuristic": TowardsOptimum()},
                                recorder, work_root=run_dir.work_dir, tick_s=0.2)
        asyncio.run(controller.run(None, None))
        best = store.best()
        assert best is not None and best.metrics["confirm"]["accepted"] is True
        # test.every_new_best is accepted and free: the test score came with each run
        assert best.test_bpb is not None and not store.extra_runs(purpose="test")

    console = Console(record=True, width=200)
    render_status(run_dir, console, islands=1, population_size=4)
    assert "test_bpb" not in console.export_text()  # held out unless asked for
    console = Console(record=True, width=200)
    render_status(run_dir, console, islands=1, population_size=4, show_test=True)
    text = console.export_text()
    assert "seed noise: σ" in text and "root under 3 seeds" in text
    assert "test_bpb" in text and "confirmed" in text
    assert "confirmations:" in text

    live = Console(record=True, width=200)
    display = LiveDisplay(live)
    display.on_progress(recorder.last)
    assert "σ 0.00" in display._line()

    run = read_run(run_dir.path)
    assert run.trust.sigma is not None and run.trust.test_of(best) is not None
    assert run.best is not None and run.best.test_bpb is not None
    assert "test_bpb" not in run.best.metrics  # its own column: nothing reading metrics sees it
    html = build_report(run_dir.path).html.read_text()
    assert "seed noise σ" in html and "held-out test" in html

    export_run(run_dir.path, tmp_path / "repo")
    log = subprocess.run(["git", "log", "--format=%B"], cwd=tmp_path / "repo",
                         capture_output=True, text=True, check=True).stdout
    assert "test_bpb:" in log and "evidence: confirmed" in log
