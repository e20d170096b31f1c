"""Export and report on a run directory made by the real engine (stand-in harness, real
subprocesses, the heuristic mutator): whatever the engine writes, both read back exactly."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

from evolve.config import config_from_dict
from evolve.controller.executor import LocalExecutor
from evolve.controller.shell import Controller
from evolve.controller.wiring import plan_run
from evolve.inspect.export import export_run
from evolve.inspect.report import build_report
from evolve.mutate.heuristic import HeuristicMutator
from evolve.run.app import RunRecorder
from evolve.run.rundir import RunDir
from population.store import Store

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "sleep_template"
OPTIMUM = {"MATRIX_LR": 0.03, "EMBED_LR": 0.5, "WARMDOWN_FRAC": 0.4, "DEPTH": 4, "BATCH_SIZE": 16,
           "SCALAR_LR": 1.0, "FINAL_LR_FRAC": 0.2, "ADAM_BETA1": 0.85, "GRAD_CLIP": 1.0,
           "WEIGHT_DECAY": 0.01, "UNEMBED_LR": 0.008, "LOGIT_SOFTCAP": 7.5}


def test_export_and_report_on_an_engine_run(tmp_path):
    template = tmp_path / "template"
    shutil.copytree(FIXTURE, template)
    # the stand-in scores more of the constants, so most heuristic moves change val_bpb
    harness = template / "prepare.py"
    lines = [line for line in harness.read_text().splitlines() if line.startswith("OPTIMUM = ")]
    assert len(lines) == 1
    harness.write_text(harness.read_text().replace(lines[0], f"OPTIMUM = {OPTIMUM!r}"))
    for name in ("train.py", "train_cpu.py"):
        path = template / name
        source = path.read_text().replace("SLEEP_S = 0.5 ", "SLEEP_S = 0.05 ")
        # a seed far from the stand-in's optimum, so the heuristic's moves make progress
        for old, new in (("MATRIX_LR = 0.04 ", "MATRIX_LR = 0.4  "), ("EMBED_LR = 0.6 ", "EMBED_LR = 6.0 "),
                         ("BATCH_SIZE = 8 ", "BATCH_SIZE = 1 ")):
            assert old in source
            source = source.replace(old, new)
        path.write_text(source)
    config = config_from_dict({
        "name": "engine", "template": str(template), "profile": "cpu-micro", "seed": 5,
        "population": {"size": 1, "islands": 2, "migration_interval": 4},
        "selection": {"strategy": "greedy"},
        "workers": {"count": 2}, "budget": {"max_experiments": 12}})
    run_dir = RunDir.create(tmp_path / "results", "engine")
    run_dir.config_path.write_text(config.to_yaml())
    with Store.open(run_dir.store_path) as store:
        controller = Controller(plan_run(config), store, LocalExecutor(2),
                                {"heuristic": HeuristicMutator()}, RunRecorder(run_dir),
                                work_root=run_dir.work_dir, tick_s=0.2)
        asyncio.run(controller.run(None, None))
        best = store.best()
        assert best is not None
        lineage = [c for c in store.lineage(best.id) if c.mutator != "migration"]
        assert len(lineage) >= 3, [c.description for c in lineage]

    summary = export_run(run_dir.path, tmp_path / "repo")
    assert summary.candidate_id == best.id
    repo = tmp_path / "repo"
    assert (repo / "train.py").read_bytes() == best.files["train.py"].encode()
    commits = subprocess.run(["git", "rev-list", "--count", "HEAD"], cwd=repo, check=True,
                             capture_output=True, text=True).stdout
    assert int(commits) == len(lineage)  # the template (with the seed), then one per edit

    paths = build_report(run_dir.path)
    page = paths.html.read_text()
    assert page.count("data:image/png;base64,") == 3
    for step in lineage[1:]:
        assert step.id in page and step.description.split()[0] in page
    assert "max_experiments: 12" in page
