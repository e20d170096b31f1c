"""The held-out test score is scored in every run and stored, but the search never sees it:
not in the LLM's prompts, the lab notebook, the live display, or any candidate's metrics.

A real run: the stand-in harness (its test score moved far from any val score, so a leak in any
rounding shows), the real LLM operator streaming from the strict Messages-API stand-in on a real socket,
the real store. `evolve status --test` and export are where it appears, for the final lineage.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from evolve.config import config_from_dict
from evolve.controller.executor import LocalExecutor
from evolve.controller.shell import Controller
from evolve.controller.wiring import operator_names, plan_run
from evolve.inspect.export import export_run
from evolve.inspect.status import render_status
from evolve.mutate.notebook import build_notebook
from evolve.mutate.registry import OperatorFacts, build_mutators
from evolve.run.live import LiveDisplay
from evolve.run.rundir import RunDir
from population.candidate import Status
from population.store import Store

sys.path.insert(0, str(Path(__file__).parent))
from messages_standin import StandinServer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# 7.00x: far from every val_bpb (1.x to 3.x), so any rounding of a test score is recognisable.
TEST_SCORE = '    result["test_bpb"] = 7.0 + val_bpb / 1000\n'
LEAK = re.compile(r"test_bpb|7\.00\d")


def edit_a_constant(body: dict) -> str:
    """Each answer moves another constant of the parent (distinct ideas, so none is turned
    away as a variant of one already tried)."""
    name, factor = STEPS[len(ANSWERED) % len(STEPS)]
    ANSWERED.append(name)
    found = re.search(rf"^{name} = ([0-9.]+)(.*)$", body["messages"][0]["content"][0]["text"],
                      re.MULTILINE)
    old = f"{name} = {found.group(1)}{found.group(2)}"
    value = float(found.group(1)) * factor
    new = f"{name} = {int(value) if name in INTEGERS else round(value, 4)}{found.group(2)}"
    return (f"DESCRIPTION: {name} times {factor}\nRATIONALE: closer to a better setting.\n\n"
            f"train.py\n<<<<<<< SEARCH\n{old}\n=======\n{new}\n>>>>>>> REPLACE\n")


STEPS = [("MATRIX_LR", 0.75), ("EMBED_LR", 0.8), ("WARMDOWN_FRAC", 0.8), ("BATCH_SIZE", 2),
         ("UNEMBED_LR", 2), ("SCALAR_LR", 0.5), ("ADAM_BETA1", 1.1)]
INTEGERS = {"BATCH_SIZE"}
ANSWERED: list[str] = []


class Display:
    """The run directory's recorder role, played by the live display writing to a buffer."""

    def __init__(self) -> None:
        self.out = io.StringIO()
        self.live = LiveDisplay(Console(file=self.out, width=300), line_every_s=0.0)

    def on_candidate(self, c) -> None: ...

    def on_result(self, c, kept) -> None:
        self.live.on_result(c, kept)

    def on_progress(self, snapshot) -> None:
        self.live.on_progress(snapshot)


def test_the_test_score_is_stored_but_reaches_no_prompt_notebook_or_live_view(
        tmp_path, monkeypatch):
    monkeypatch.setenv("EVOLVE_TEST_KEY", "sk-test-hidden")
    template = tmp_path / "template"
    shutil.copytree(REPO / "tests" / "fixtures" / "sleep_template", template)
    prepare = template / "prepare.py"
    source = prepare.read_text()
    assert '    result["test_bpb"] = val_bpb + 0.01\n' in source
    prepare.write_text(source.replace('    result["test_bpb"] = val_bpb + 0.01\n', TEST_SCORE))
    train = template / "train_cpu.py"
    train.write_text(train.read_text().replace("SLEEP_S = 0.5 ", "SLEEP_S = 0.02 "))
    with StandinServer(edit_a_constant) as api:
        config = config_from_dict({
            "name": "hidden", "template": str(template), "profile": "cpu-micro", "seed": 1,
            "population": {"size": 2, "islands": 1}, "workers": {"count": 1},
            "mutation": {"operators": [{"kind": "llm", "model": "claude-sonnet-5-5",
                                        "base_url": api.base_url, "api_key_env": "EVOLVE_TEST_KEY",
                                        "max_tokens": 2000}], "lookahead": 0},
            "budget": {"max_experiments": 5}})
        run_dir = RunDir.create(tmp_path / "results", "hidden")
        run_dir.config_path.write_text(config.to_yaml())
        mutators = build_mutators(config.mutation.operators, operator_names(config),
                                  facts=OperatorFacts(template_dir=config.template_dir,
                                                      seed=config.seed))
        display = Display()
        store = Store.open(run_dir.store_path)
        controller = Controller(plan_run(config), store, LocalExecutor(1), mutators, display,
                                work_root=run_dir.work_dir, tick_s=0.1)
        asyncio.run(controller.run(None, None))
    bodies = [json.dumps(body) for body in api.requests]
    assert api.refused == []
    with store:
        done = [c for c in store.finished_in_order() if c.status is Status.DONE]
        everything = store.finished_in_order(include_rejected=True)
        assert len(done) == 5, [(c.id, c.status, c.reason) for c in everything]
        for c in done:  # scored in the same run, stored apart from the metrics
            assert c.test_bpb == pytest.approx(7.0 + c.val_bpb / 1000)
            assert not any(key.startswith("test") for key in c.metrics)
        notebook = build_notebook(store)
    assert len(bodies) >= 4 and "Lab notebook" in bodies[-1]
    assert "Best results so far" in notebook
    for text in [*bodies, notebook, display.out.getvalue()]:
        assert not LEAK.search(text), LEAK.search(text)

    console = Console(record=True, width=250, file=io.StringIO())
    render_status(run_dir, console, islands=1, population_size=2)
    assert not LEAK.search(console.export_text())  # held out unless asked for
    console = Console(record=True, width=250, file=io.StringIO())
    render_status(run_dir, console, islands=1, population_size=2, show_test=True)
    text = console.export_text()
    assert "test_bpb" in text and re.search(r"7\.00\d{4}", text)
    export_run(run_dir.path, tmp_path / "repo")
    log = subprocess.run(["git", "log", "--format=%B"], cwd=tmp_path / "repo",
                         capture_output=True, text=True, check=True).stdout
    assert re.search(r"test_bpb: 7\.00\d{4}", log)
