"""The run directory: layout, results.tsv rows, atomic rewrites."""

from __future__ import annotations

from pathlib import Path

import pytest

from evolve.run.rundir import TSV_COLUMNS, RunDir, RunDirError
from population.candidate import Candidate, Status


def _candidate(cid: str, status: Status, val_bpb: float | None = None, **extra) -> Candidate:
    metrics = {} if val_bpb is None else {"val_bpb": val_bpb, "peak_vram_mb": 2048.0}
    return Candidate(id=cid, parent_id="root0000", island=1, generation=1,
                     files={"train.py": "X = 1\n"}, status=status, metrics=metrics, seed=3, **extra)


def test_create_makes_layout_and_tsv_header(tmp_path):
    run_dir = RunDir.create(tmp_path, "my demo!")
    assert run_dir.path.name.startswith("my-demo-")
    assert run_dir.candidates_dir.is_dir() and run_dir.work_dir.is_dir()
    assert run_dir.tsv_path.read_text() == "\t".join(TSV_COLUMNS) + "\n"
    second = RunDir.create(tmp_path, "my demo!")
    assert second.path != run_dir.path


def test_tsv_rows_keep_discard_crash(tmp_path):
    run_dir = RunDir.create(tmp_path, "t")
    run_dir.on_result(_candidate("a1", Status.DONE, 1.234567891, description="x\ty\nz",
                                 cost_usd=0.5), kept=True)
    run_dir.on_result(_candidate("a2", Status.DONE, 1.3), kept=False)
    run_dir.on_result(_candidate("a3", Status.CRASHED, reason="boom"), kept=False)
    gpu = _candidate("a4", Status.DONE, 1.1)
    gpu = Candidate(**{**gpu.__dict__, "metrics": {**gpu.metrics, "device": "NVIDIA H100 80GB HBM3"}})
    run_dir.on_result(gpu, kept=False)
    lines = run_dir.tsv_path.read_text().splitlines()
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(row) == len(TSV_COLUMNS) for row in rows)
    assert rows[0][:5] == ["a1", "1.234568", "2.0", "keep", "x y z"]
    assert rows[0][5:] == ["root0000", "1", "3", "0.5000", ""]
    assert rows[3][-1] == "NVIDIA H100 80GB HBM3"
    assert rows[1][3] == "discard"
    assert rows[2][1:5] == ["0.000000", "0.0", "crash", "boom"]


def test_rewrite_replaces_rows(tmp_path):
    run_dir = RunDir.create(tmp_path, "t")
    run_dir.on_result(_candidate("a1", Status.DONE, 1.0), kept=True)
    run_dir.on_result(_candidate("a1", Status.DONE, 1.0), kept=True)
    run_dir.rewrite_tsv([(_candidate("a1", Status.DONE, 1.0), True)])
    assert len(run_dir.tsv_path.read_text().splitlines()) == 2


def test_candidate_files_and_diff_written(tmp_path):
    run_dir = RunDir.create(tmp_path, "t")
    run_dir.on_candidate(_candidate("c9", Status.REJECTED, diff="--- a\n+++ b\n", reason="no"))
    folder = run_dir.candidate_dir("c9")
    assert (folder / "train.py").read_text() == "X = 1\n"
    assert (folder / "diff.patch").read_text().startswith("--- a")
    assert (folder / "reason.txt").read_text() == "no\n"


def test_open_refuses_non_run_dir(tmp_path):
    with pytest.raises(RunDirError, match="config.yaml is missing"):
        RunDir.open(tmp_path)
    with pytest.raises(RunDirError, match="no such run directory"):
        RunDir.open(tmp_path / "nope")


def test_open_writes_nothing_and_ensure_layout_restores_scratch_folders(tmp_path):
    run_dir = RunDir.create(tmp_path, "t")
    run_dir.config_path.write_text("name: t\n")
    run_dir.store_path.write_text("")
    run_dir.candidates_dir.rmdir()
    run_dir.work_dir.rmdir()
    opened = RunDir.open(run_dir.path)  # readers (status, export, report) of a live run
    assert not opened.candidates_dir.exists() and not opened.work_dir.exists()
    opened.ensure_layout()  # the writer, on resume
    assert opened.candidates_dir.is_dir() and opened.work_dir.is_dir()


def test_result_leaves_the_log_tail_with_a_header_naming_the_full_log(tmp_path):
    """candidates/<id>/run.log: the tail the controller got, under a line naming the node and
    the work folder of the last attempt (from the store's attempts table)."""
    from population.store import Store

    run_dir = RunDir.create(tmp_path, "t")
    done = _candidate("a1/x", Status.PROPOSED, 1.0)
    with Store.open(run_dir.store_path) as store:
        store.add(done.replace(status=Status.PROPOSED, metrics={}))
        store.set_status("a1/x", Status.RUNNING)
        for _ in range(2):  # the first attempt was lost with its node
            store.finish_attempt(store.start_attempt("a1/x", worker="w0", node="node-7",
                                                     device="cpu"), outcome="lost")
        store.record_result("a1/x", status=Status.DONE, metrics={"val_bpb": 1.0},
                            log_tail="step 9\nval_bpb: 1.0\n")
        run_dir.on_result(store.get("a1/x"), kept=True)  # the writer is open, as in a run
    text = (run_dir.candidate_dir("a1/x") / "run.log").read_text()
    assert text == (f"# the last lines of attempt 2's log, as the controller received them; the "
                    f"full log is {run_dir.work_dir / 'a1_x-a2' / 'run.log'} on node node-7\n"
                    "step 9\nval_bpb: 1.0\n")

    run_dir.on_result(_candidate("c3", Status.CRASHED, reason="gave up after 3 lost attempts"),
                      kept=False)
    text = (run_dir.candidate_dir("c3") / "run.log").read_text()
    assert text.splitlines() == [
        "# the last lines of the log, as the controller received them; the full log is under "
        f"{run_dir.work_dir}/ on the node that ran it",
        "(no log reached the controller: gave up after 3 lost attempts)"]


def test_paths_are_absolute_whatever_the_working_directory(tmp_path, monkeypatch):
    # Workers on other nodes lay experiments out under work/ by this path, from their own cwd.
    monkeypatch.chdir(tmp_path)
    created = RunDir.create("results", "rel")
    assert created.path.is_absolute() and created.work_dir.parent == tmp_path / "results" / created.path.name
    created.config_path.write_text("name: rel\n")
    created.store_path.write_text("")
    opened = RunDir.open(Path("results") / created.path.name)
    assert opened.path == created.path and opened.work_dir.is_absolute()
