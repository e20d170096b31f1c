"""What a first-time user reads off a real run: one generation number everywhere, status lines
that break between phrases, the log tail in candidates/<id>/, a runnable export that says
how to reproduce its score, and what keep means."""

from __future__ import annotations

import asyncio
import json
import platform
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
from evolve.controller.wiring import plan_run
from evolve.inspect.export import RUN_NOTE, export_run
from evolve.inspect.report import build_report
from evolve.inspect.report_charts import lineage_chart
from evolve.inspect.report_data import read_run
from evolve.inspect.status import render_status
from evolve.mutate.base import MutationContext, Proposal
from evolve.run.app import RunRecorder
from evolve.run.rundir import RunDir
from population.candidate import Candidate, Status
from population.store import MIGRATION, Store

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "sleep_template"
# The first two (made while the root runs, from the root itself) are worse than the root, so
# each island's best is still the root or its seeding copy when the next children are made.
LEARNING_RATES = ["0.05", "0.045", "0.03", "0.035", "0.06", "0.025"]


class LearningRates:
    """Each child sets MATRIX_LR to the next value: some beat their parent, some do not."""

    name = "heuristic"

    def __init__(self) -> None:
        self.made = 0

    async def propose(self, context: MutationContext) -> Proposal:
        value = LEARNING_RATES[self.made % len(LEARNING_RATES)]
        self.made += 1
        source = re.sub(r"^MATRIX_LR = \S+", f"MATRIX_LR = {value}",
                        context.parent.files["train.py"], flags=re.M)
        return Proposal(files={"train.py": source}, description=f"MATRIX_LR -> {value}",
                        rationale="", mutator="heuristic")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> RunDir:
    base = tmp_path_factory.mktemp("clarity")
    template = base / "template"
    shutil.copytree(FIXTURE, template)
    for name in ("train.py", "train_cpu.py"):
        path = template / name
        path.write_text(path.read_text().replace("SLEEP_S = 0.5 ", "SLEEP_S = 0.05 "))
    config = config_from_dict({
        "name": "clarity", "template": str(template), "profile": "cpu-micro", "seed": 3,
        "population": {"size": 4, "islands": 2}, "selection": {"strategy": "tournament"},
        "workers": {"count": 1}, "budget": {"max_experiments": 6}})
    run_dir = RunDir.create(base / "results", "clarity")
    run_dir.config_path.write_text(config.to_yaml())
    with Store.open(run_dir.store_path) as store:
        controller = Controller(plan_run(config), store, LocalExecutor(1), {"heuristic": LearningRates()},
                                RunRecorder(run_dir), work_root=run_dir.work_dir, tick_s=0.1)
        asyncio.run(controller.run(None, None))
        # the share status prints as a sentence (set here so the line is always there)
        store.set_meta("early_failure_share", "0.123")
    return run_dir


def _candidates(run_dir: RunDir) -> list[Candidate]:
    with Store.open(run_dir.store_path, readonly=True) as store:
        return store.finished_in_order(include_copies=True)


def _children_of_seeding_copies(run_dir: RunDir) -> list[Candidate]:
    everything = {c.id: c for c in _candidates(run_dir)}
    children = [c for c in everything.values() if c.mutator != MIGRATION and c.parent_id
                and everything[c.parent_id].mutator == MIGRATION
                and everything[c.parent_id].parent_id == "root"]
    assert children, "the run made no child of an island-seeding copy of the root"
    return children


def _status_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells and cells[0]:
            rows.setdefault(cells[0], cells)
    return rows


def test_generation_counts_edits_not_copies_in_status_report_export_and_chart(run, tmp_path):
    children = _children_of_seeding_copies(run)
    console = Console(record=True, width=200)
    render_status(run, console, islands=2, population_size=4)
    rows = _status_rows(console.export_text())
    for child in children:  # root -> root@i1.N (a copy) -> child: one edit
        assert rows[child.id][2] == "1", rows[child.id]
    copy = next(c for c in _candidates(run) if c.mutator == MIGRATION and c.parent_id == "root")
    assert rows[copy.id][2] == "0"  # a copy of the seed is the seed's code

    paths = build_report(run.path, tmp_path / "report")
    page = paths.html.read_text()
    for child in children:
        row = re.search(rf"<code>{re.escape(child.id)}</code></td><td class=num>\d+</td>"
                        r"<td class=num>(\d+)</td>", page)
        assert row is not None and row.group(1) == "1"
    snapshot = read_run(run.path)
    axes = lineage_chart(snapshot).axes[0]
    assert axes.get_ylabel() == "generation (edits from the seed)"
    best_depth = len(snapshot.best_lineage) - 1
    label = next(t for t in axes.texts if snapshot.best.id in t.get_text() and "·" in t.get_text())
    assert round(label.get_position()[1]) == best_depth

    child = children[0]
    export_run(run.path, tmp_path / "repo", candidate=child.id)
    log = subprocess.run(["git", "log", "-1", "--format=%B"], cwd=tmp_path / "repo",
                         capture_output=True, text=True, check=True).stdout
    assert f"candidate: {child.id} (parent {child.parent_id}, island 1, generation 1:" in log


def test_status_lines_break_between_phrases_not_inside_them(run):
    for width in (40, 60, 200):
        console = Console(record=True, width=width)
        render_status(run, console, islands=2, population_size=4)
        lines = console.export_text().splitlines()
        for phrase in ("early failures: 12.3% of worker time",
                       "(children that failed in their first seconds:",
                       "waste that pre-flight should catch)"):
            assert any(phrase in line for line in lines), (width, phrase)
        assert any(re.search(r"\(done \d+, crashed \d+, timed out \d+\)", line)
                   for line in lines), width


def test_candidate_folders_hold_the_log_tail_and_name_the_full_log(run):
    experiments = [c for c in _candidates(run) if c.mutator != MIGRATION]
    assert len(experiments) >= 5
    for candidate in experiments:
        text = (run.candidate_dir(candidate.id) / "run.log").read_text()
        header, _, body = text.partition("\n")
        full = run.work_dir / f"{candidate.id}-a1" / "run.log"
        assert header == (f"# the last lines of attempt 1's log, as the controller received "
                          f"them; the full log is {full} on node {platform.node()}")
        assert body.rstrip("\n") == candidate.log_tail.rstrip("\n") and "val_bpb:" in body
        # the tail is the end of the full log the header names
        assert full.read_text().rstrip("\n").endswith(body.rstrip("\n"))


def test_dir_export_says_how_to_reproduce_its_score_and_the_command_does(run, tmp_path):
    best = read_run(run.path).best
    out = tmp_path / "best"
    summary = export_run(run.path, out, candidate=best.id, fmt="dir")
    assert RUN_NOTE in summary.describe()
    note = (out / RUN_NOTE).read_text()
    command = next(line.strip() for line in note.splitlines()
                   if line.strip().startswith("python prepare.py run"))
    assert command == (f"python prepare.py run --profile cpu-micro --data synthetic "
                       f"--seed {best.metrics['seed']} --result result.json")
    assert f"val_bpb: {best.val_bpb:.6f}" in note and "device: cpu" in note
    argv = [sys.executable, *command.split()[1:]]
    subprocess.run(argv, cwd=out, check=True, capture_output=True, timeout=120)
    result = json.loads((out / "result.json").read_text())
    assert result["val_bpb"] == pytest.approx(best.val_bpb, abs=5e-7)


def test_keep_is_explained_and_improved_marks_a_child_that_beat_its_parent(run, tmp_path):
    page = build_report(run.path, tmp_path / "r").html.read_text()
    assert "entered its island&#x27;s population" in page or "entered its island's population" \
        in page
    assert "need not beat the run" in page and "<th>improved</th>" in page
    snapshot = read_run(run.path)
    beat = [c for c in snapshot.top if (p := snapshot.parent(c)) is not None
            and c.val_bpb < p.val_bpb]
    assert beat and len(beat) < len(snapshot.top)
    assert page.count('<td class="better">✓</td>') == len(beat)
    assert all(c.status is Status.DONE for c in snapshot.top)
