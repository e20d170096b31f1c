"""A store of schema 3 (before the triggered mark): its repair children are marked triggered
(a repair is never drawn), read so without writing and written so by a writer's open; a
resume keeps them out of the operator statistics, finished or still to run."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from evolve.controller.core import History, Scheduler, Settings
from evolve.controller.recovery import judge, recover
from population.candidate import Status
from population.migrations import LATEST
from population.schema import SCHEMA
from population.store import Store

V3_DDL = SCHEMA.replace(",\n    triggered_by TEXT\n", "\n")
V3_COLUMNS = ("id, parent_id, island, generation, source_hash, files, diff, description, "
              "rationale, mutator, model, raw_answer, applied_edit, usage, cost_usd, status, "
              "metrics, val_bpb, reason, log_tail, seed, created_at, finished_at, "
              "sandbox_problem, test_bpb, donor_id")


class Root:
    """A population whose only parent is the root (the statistics are what is tested)."""

    size = 4

    def choose_parent(self, island, rng) -> str:
        return "root"


def _row(conn, cid, parent, mutator, status, bpb, when, donor=None) -> None:
    metrics = {"val_bpb": bpb} if bpb is not None else {}
    finished = when + 1 if status in ("done", "crashed") else None
    conn.execute(f"INSERT INTO candidates ({V3_COLUMNS}) VALUES ({', '.join('?' * 26)})",
                 (cid, parent, 0, 0 if parent is None else 1, f"hash-{cid}",
                  json.dumps({"train.py": f"X = {cid!r}\n"}), "", f"step {cid}", "", mutator,
                  "", "", "", "{}", 0.0, status, json.dumps(metrics), bpb,
                  "" if status != "crashed" else "boom", "", 3, when, finished,
                  "" if status == "done" else None, None, donor))


def write_v3_store(path: Path) -> None:
    """A killed schema-3 run: a drawn llm child and a merge done, a crash repaired (done), a
    second repair still to run."""
    conn = sqlite3.connect(path)
    try:
        assert "triggered_by" not in V3_DDL
        conn.executescript(V3_DDL)
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                         [("schema_version", "3"), ("seed", "3"), ("status", "running")])
        _row(conn, "root", None, "template", "done", 1.6, 10.0)
        _row(conn, "c1", "root", "llm", "done", 1.5, 20.0)
        _row(conn, "c2", "root", "llm", "crashed", None, 30.0)
        _row(conn, "c3", "c2", "repair", "done", 1.4, 40.0)       # a fix that ran: improved
        _row(conn, "c4", "c1", "merge", "done", 1.45, 50.0, donor="c3")
        _row(conn, "c5", "c2", "repair", "proposed", None, 60.0)  # still to run at the kill
        conn.commit()
    finally:
        conn.close()


def version(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])


def test_a_reader_derives_the_mark_and_a_writer_stores_it(tmp_path):
    path = tmp_path / "store.db"
    write_v3_store(path)
    with Store.open(path, readonly=True) as reader:
        derived = {c.id: c.triggered_by for c in (reader.get(f"c{i}") for i in range(1, 6))}
    assert derived == {"c1": None, "c2": None, "c3": "repair", "c4": None, "c5": "repair"}
    assert version(path) == 3  # a reader never migrates
    with Store.open(path) as store:
        assert store.get_meta("schema_version") == str(LATEST)
        assert {c.id: c.triggered_by for c in (store.get(f"c{i}") for i in range(1, 6))} == derived
    assert version(path) == LATEST


def test_a_resumed_v3_run_keeps_its_repairs_out_of_the_statistics(tmp_path):
    path = tmp_path / "store.db"
    write_v3_store(path)
    with Store.open(path) as store:
        history = recover(store, "root", max_lost_attempts=3, now=100.0)
        # drawn: the llm child improved, its crash did not; the merge improved on c1
        assert {label: (s.trials, s.improved) for label, s in history.operator_stats.items()} \
            == {"llm": (2, 1), "merge": (1, 1)}
        assert history.triggered_children == frozenset({"c5"})
        core = Scheduler(Settings(operators=(("llm", 1.0), ("repair", 0.0)),
                                  adaptive_operators=True), Root(), "root",
                         history=History(root_done=True, operator_stats=history.operator_stats,
                                         triggered_children=history.triggered_children))
        before = core.operator_stats()
        store.set_status("c5", Status.RUNNING)
        fixed = store.record_result("c5", status=Status.DONE, metrics={"val_bpb": 1.3}, now=101.0)
        core.learn(*judge(store, fixed), candidate_id=fixed.id)  # the shell's path
        assert core.operator_stats() == before
