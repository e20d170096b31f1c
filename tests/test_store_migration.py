"""Stores and run directories from before the sandbox mark and the in-run test score (store
schema 1): read as they are, brought up to date by a writer, resumed; a newer one is refused
with both versions named.

The old store is a real SQLite file built from schema 1's DDL (tests/fixtures/store_v1.sql, as
evolve wrote it then) with rows as a version-1 run left them; the resume is a real one, on the
stand-in harness, through `Run.resume(...).execute(...)`.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from evolve.controller.executor import LocalExecutor
from evolve.inspect.export import export_run
from evolve.inspect.status import render_status
from evolve.run.app import Run
from evolve.run.rundir import RunDir
from population.candidate import Status
from population.migrations import BEFORE_SANDBOX, LATEST
from population.store import Store, StoreError

sys.path.insert(0, str(Path(__file__).parent))
from test_controller_shell import make_config, make_template  # noqa: E402

V1_DDL = (Path(__file__).parent / "fixtures" / "store_v1.sql").read_text()
V1_COLUMNS = ("id, parent_id, island, generation, source_hash, files, diff, description, "
              "rationale, mutator, model, raw_answer, applied_edit, usage, cost_usd, status, "
              "metrics, val_bpb, reason, log_tail, seed, created_at, finished_at")


def _candidate(conn, cid, parent, source, status, bpb, when, **metrics) -> None:
    row = (cid, parent, 0, 0 if parent is None else 1, f"hash-{cid}",
           json.dumps({"train.py": source}), "", f"step {cid}", "", "heuristic", "", "", "",
           "{}", 0.0, status, json.dumps({"val_bpb": bpb, **metrics} if bpb else metrics), bpb,
           "" if bpb else "boom", "", 3, when, when + 1)
    conn.execute(f"INSERT INTO candidates ({V1_COLUMNS}) VALUES ({', '.join('?' * 23)})", row)
    conn.execute("INSERT INTO attempts (candidate_id, worker, node, device, started_at, ended_at, "
                 "outcome, reason) VALUES (?, 'w0', 'n0', 'cpu', ?, ?, ?, '')",
                 (cid, when, when + 1, "done" if bpb else "crashed"))


def write_v1_store(path: Path, seed_source: str) -> None:
    """A stopped version-1 run: root and a better child done, one crash, a test extra run."""
    conn = sqlite3.connect(path)
    try:
        conn.executescript(V1_DDL)
        for key, value in (("schema_version", "1"), ("seed", "3"), ("status", "stopped"),
                           ("stop_reason", "stopped"), ("next_ticket", "2")):
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
        child = seed_source.replace("MATRIX_LR = 0.04 ", "MATRIX_LR = 0.03 ")
        _candidate(conn, "root", None, seed_source, "done", 1.6, 10.0, kept=True)
        _candidate(conn, "c00000", "root", child, "done", 1.55, 20.0, kept=True)
        _candidate(conn, "c00001", "root", seed_source + "\nboom()\n", "crashed", None, 30.0,
                   kept=False)
        conn.execute("INSERT INTO extra_runs (candidate_id, purpose, seed, splits, "
                     "budget_fraction, worker, queued_at, started_at, ended_at, outcome, val_bpb, "
                     "test_bpb, metrics, reason) VALUES ('c00000', 'test', 3, 'val,test', 1.0, "
                     "'w0', 40, 41, 42, 'done', 1.55, 1.56, '{}', '')")
        conn.commit()
    finally:
        conn.close()


def old_run(tmp_path: Path, max_experiments: int = 4) -> RunDir:
    template = make_template(tmp_path, 0.05)
    config = make_config(template, budget={"max_experiments": max_experiments},
                         workers={"count": 1},
                         mutation={"operators": [{"kind": "heuristic", "weight": 1.0}],
                                   "lookahead": 1})
    run_dir = RunDir.create(tmp_path / "results", "old")
    run_dir.config_path.write_text(config.to_yaml())
    write_v1_store(run_dir.store_path, (template / "train_cpu.py").read_text())
    return run_dir


def version(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])


def test_a_reader_sees_a_version_1_store_with_its_scores_marked_and_writes_nothing(tmp_path):
    run_dir = old_run(tmp_path)
    with Store.open(run_dir.store_path, readonly=True) as store:
        root, child, crash = store.get("root"), store.get("c00000"), store.get("c00001")
        assert [c.sandbox_problem for c in (root, child, crash)] == [BEFORE_SANDBOX] * 2 + [None]
        assert child.unsandboxed and child.test_bpb is None and child.val_bpb == 1.55
        assert store.best().id == "c00000"
    assert version(run_dir.store_path) == 1  # a reader never migrates
    console = Console(file=io.StringIO(), width=300, record=True)
    render_status(run_dir, console, islands=1, population_size=4, show_test=True)
    text = console.export_text()
    assert "unsandboxed scores: 2 of 2" in text and BEFORE_SANDBOX in text
    assert "1.560000" in text  # the old test extra run, shown for the final lineage


def test_a_writer_brings_a_version_1_store_up_to_date_keeping_every_row(tmp_path):
    run_dir = old_run(tmp_path)
    with Store.open(run_dir.store_path, readonly=True) as reader:
        before = {c.id: c for c in reader.finished_in_order()}
    with Store.open(run_dir.store_path) as store:
        assert store.get_meta("schema_version") == str(LATEST) == str(Store.SCHEMA_VERSION)
        after = {c.id: c for c in store.finished_in_order()}
        assert after == before  # what the reader derived is what the migration wrote
        assert [a.outcome for a in store.attempts("c00001")] == ["crashed"]
        assert [r.test_bpb for r in store.extra_runs("c00000")] == [1.56]
    assert version(run_dir.store_path) == LATEST
    with sqlite3.connect(run_dir.store_path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(candidates)")}
    assert {"sandbox_problem", "test_bpb"} <= columns


def _indexes(path: Path) -> set[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='candidates'")}


def test_a_writer_gives_an_old_store_the_indexes_it_lacks_and_the_answers_stay(tmp_path):
    """The recent-results index is not versioned: a reader of an old store answers from the
    table, a writer's open adds the index, and the answers are the same either way."""
    run_dir = old_run(tmp_path)
    assert "candidates_recent" not in _indexes(run_dir.store_path)
    with Store.open(run_dir.store_path, readonly=True) as reader:
        before = [c.id for c in reader.recent_finished(10)]
    assert before == ["c00001", "c00000", "root"]  # newest first
    with Store.open(run_dir.store_path) as store:
        assert [c.id for c in store.recent_finished(10)] == before
        assert [c.id for c in store.recent_finished(2)] == before[:2]
    assert "candidates_recent" in _indexes(run_dir.store_path)
    with sqlite3.connect(run_dir.store_path) as conn:  # read newest first, stopped at the limit
        plan = " ".join(row[-1] for row in conn.execute(
            "EXPLAIN QUERY PLAN SELECT seq FROM candidates WHERE +status IN ('done', 'crashed', "
            "'timed_out', 'rejected') AND mutator != 'migration' "
            "ORDER BY finished_at DESC, seq DESC LIMIT 48"))
    assert "candidates_recent" in plan and "TEMP B-TREE" not in plan
    with Store.open(run_dir.store_path) as store:  # and opening again changes nothing
        assert [c.id for c in store.recent_finished(10)] == before


def test_resuming_a_version_1_run_directory_continues_it(tmp_path):
    run_dir = old_run(tmp_path, max_experiments=5)  # the root counts: two more to run
    reason = Run.resume(run_dir.path).execute(executor=LocalExecutor(1), install_signals=False)
    assert reason == "max_experiments reached (5)"
    with Store.open(run_dir.store_path, readonly=True) as store:
        finished = store.finished_in_order()
        assert [c.id for c in finished][:3] == ["root", "c00000", "c00001"]
        assert len(finished) == 5
        new = [c for c in finished if c.id not in ("root", "c00000", "c00001")]
        assert all(c.status is Status.DONE and c.test_bpb is not None for c in new)
        assert all(c.sandbox_problem and c.sandbox_problem != BEFORE_SANDBOX for c in new)
        assert store.get("c00000").sandbox_problem == BEFORE_SANDBOX
    export_run(run_dir.path, tmp_path / "out", candidate="c00000", fmt="dir")
    note = (tmp_path / "out" / "RUN.md").read_text()
    assert f"val_bpb: 1.550000 (unsandboxed: {BEFORE_SANDBOX})" in note


def test_the_command_line_reads_an_old_run_and_refuses_a_newer_one_in_one_line(tmp_path):
    run_dir = old_run(tmp_path)
    env = {**os.environ, "COLUMNS": "250"}
    status = subprocess.run([sys.executable, "-m", "evolve.run.cli", "status", "--test",
                             str(run_dir.path)], capture_output=True, text=True, env=env,
                            timeout=120)
    assert status.returncode == 0, status.stderr
    assert "test_bpb" in status.stdout and "unsandboxed scores: 2 of 2" in status.stdout
    with sqlite3.connect(run_dir.store_path) as conn:
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(LATEST + 1),))
    for command in (["status"], ["resume"]):
        done = subprocess.run([sys.executable, "-m", "evolve.run.cli", *command,
                               str(run_dir.path)], capture_output=True, text=True, env=env,
                              timeout=120)
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("error: ")
        assert f"has store schema version {LATEST + 1}, newer than this evolve understands " \
               f"({LATEST})" in done.stderr


def test_a_store_of_a_newer_schema_is_refused_naming_both_versions(tmp_path):
    run_dir = old_run(tmp_path)
    with sqlite3.connect(run_dir.store_path) as conn:
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(LATEST + 1),))
    for readonly in (False, True):
        with pytest.raises(StoreError) as refused:
            Store.open(run_dir.store_path, readonly=readonly)
        assert (f"has store schema version {LATEST + 1}, newer than this evolve understands "
                f"({LATEST})") in str(refused.value)
    with pytest.raises(StoreError, match="newer"):
        Run.resume(run_dir.path).execute(executor=LocalExecutor(1), install_signals=False)
