"""Merges end to end: a real run (stand-in harness, heuristic + merge operators) makes merge
children, and `evolve export` / `evolve report` name the donor beside the parent."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml
from run_builder import build_run as build_demo_run
from run_builder import set_constant

from evolve.controller.executor import LocalExecutor
from evolve.inspect.export import export_run
from evolve.inspect.report import build_report
from evolve.mutate.merge import merge_files
from evolve.run.app import Run
from population.candidate import Candidate, Status
from population.store import Store

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "sleep_template"


def bowl_template(tmp_path: Path) -> Path:
    """The stand-in template with a bowl over more constants, so most heuristic moves either
    win or lose and both islands find wins worth carrying."""
    template = tmp_path / "template"
    shutil.copytree(FIXTURE, template)
    harness = template / "prepare.py"
    text = harness.read_text()
    old = 'OPTIMUM = {"MATRIX_LR": 0.03,'
    assert old in text
    harness.write_text(text.replace(old, 'OPTIMUM = {"WEIGHT_DECAY": 0.01, "ADAM_BETA1": 0.85, '
                                         '"ADAM_BETA2": 0.99, "SCALAR_LR": 0.25, "MLP_RATIO": 3, '
                                         '"UNEMBED_LR": 0.008, "ROPE_BASE": 2e4, "WARMUP_FRAC": '
                                         '0.02, "FINAL_LR_FRAC": 0.2, "LOGIT_SOFTCAP": 30.0, '
                                         '"MUON_MOMENTUM": 0.9, "MATRIX_LR": 0.03,'))
    return template


def test_a_tiny_run_makes_merge_children_that_carry_their_donors_edit(tmp_path):
    config = {
        "name": "merge-e2e", "template": str(bowl_template(tmp_path)), "profile": "cpu-micro", "seed": 3,
        "population": {"size": 3, "islands": 2, "migration_interval": 0},
        "selection": {"strategy": "tournament", "tournament_size": 2},
        "mutation": {"operators": [{"kind": "heuristic", "weight": 1.0},
                                   {"kind": "merge", "weight": 1.0}],
                     "lookahead": 0},
        "workers": {"count": 2, "network": "allow"}, "budget": {"max_experiments": 20},
        "test": {"final": False}, "output": {"results_dir": str(tmp_path / "results")}}
    path = tmp_path / "merge.yaml"
    path.write_text(yaml.safe_dump(config))
    run = Run.create(path)
    reason = run.execute(executor=LocalExecutor(2), install_signals=False)
    assert "max_experiments" in reason
    with Store.open(run.run_dir.store_path, readonly=True) as store:
        merges = [c for c in store.finished_in_order(include_rejected=True) if c.mutator == "merge"]
        assert merges, "no merge child in 20 experiments"
        clean = [c for c in merges if c.status is not Status.REJECTED]
        assert clean
        for child in clean:
            target, donor = store.get(child.parent_id), store.get(child.donor_id)
            base = store.get(donor.parent_id)
            assert child.description == (f"merge {donor.id} ({donor.description}) "
                                         f"into {target.id}")
            assert base.val_bpb > donor.val_bpb  # the donor was a win
            assert target.id not in [c.id for c in store.lineage(donor.id)]  # another line
            assert dict(child.files) == merge_files(base.files, target.files, donor.files).files
            assert child.diff and child.generation == target.generation + 1
    # the merge children appear in results.tsv like any other experiment
    assert any("merge c" in line for line in run.run_dir.tsv_path.read_text().splitlines())


def test_a_win_on_a_stale_parent_triggers_its_merge_onto_the_champion(tmp_path):
    """Parallel greedy (one champion, three workers): children of an old champion that beat
    it are carried onto the new one. The merge weight is 0, so every merge is triggered.
    Which children finish on a stale parent depends on the workers' timing: seed 1 with 18
    experiments made one such merge on an idle box and none in a loaded CI run; seed 2 with 24
    makes 3 (idle) and 2–3 (three CPU hogs beside it)."""
    config = {
        "name": "trigger-e2e", "template": str(bowl_template(tmp_path)), "profile": "cpu-micro",
        "seed": 2, "population": {"size": 1, "islands": 1, "migration_interval": 0},
        "selection": {"strategy": "greedy"},
        "mutation": {"operators": [{"kind": "heuristic", "weight": 1.0},
                                   {"kind": "merge", "weight": 0.0}], "lookahead": 1},
        "workers": {"count": 3, "network": "allow"}, "budget": {"max_experiments": 24},
        "test": {"final": False}, "output": {"results_dir": str(tmp_path / "results")}}
    path = tmp_path / "trigger.yaml"
    path.write_text(yaml.safe_dump(config))
    run = Run.create(path)
    run.execute(executor=LocalExecutor(3), install_signals=False)
    with Store.open(run.run_dir.store_path, readonly=True) as store:
        merges = [c for c in store.finished_in_order(include_rejected=True) if c.donor_id]
        assert merges, "no triggered merge in 24 experiments"
        for child in merges:
            donor, target = store.get(child.donor_id), store.get(child.parent_id)
            base = store.get(donor.parent_id)
            assert donor.val_bpb < base.val_bpb  # it carries a win ...
            assert base.source_hash != target.source_hash  # ... made on a stale line
            assert child.created_at >= donor.finished_at  # triggered by the donor's result


def test_export_and_report_name_the_donor(tmp_path):
    built, store = build_demo_run(tmp_path, keep_writer=True)
    assert store is not None
    best, side = store.get(built.ids["best"]), store.get(built.ids["side"])
    files = {"train.py": set_constant(best.files["train.py"], "MLP_RATIO", "3")}
    merged = Candidate(
        id="c099m1", parent_id=best.id, island=best.island, generation=best.generation + 1,
        files=files, description=f"merge {side.id} (Narrower MLP) into {best.id}",
        mutator="merge", donor_id=side.id, created_at=1_800_000_000.0)
    store.add(merged)
    store.set_status(merged.id, Status.RUNNING)
    store.record_result(merged.id, status=Status.DONE, now=1_800_000_060.0,
                        metrics={"val_bpb": 1.50, "entropy_floor_bpb": 1.25})
    store.close()

    out = tmp_path / "export"
    summary = export_run(built.path, out)
    assert summary.candidate_id == "c099m1"
    message = subprocess.run(["git", "log", "-1", "--format=%B"], cwd=out, check=True,
                             capture_output=True, text=True).stdout
    assert message.startswith(f"merge {side.id} (Narrower MLP) into {best.id}\n")
    assert f"candidate: c099m1 (parent {best.id}, donor {side.id}, island" in message
    assert f"merged from: {side.id}" in message
    assert (out / "train.py").read_text() == files["train.py"]

    paths = build_report(built.path, tmp_path / "report")
    html = paths.html.read_text()
    assert f"merge ← {side.id}" in html  # the table's mutator column
    assert f"donor <code>{side.id}</code>" in html  # the best lineage's last step
