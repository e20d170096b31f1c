"""Extra runs: trainings of a candidate that are not new experiments — the root under K seeds
(the noise floor), re-runs that confirm a gain, held-out test scoring. Each is its own row,
lost ones included, so every piece of evidence behind a decision stays in the store.

The table lives in the candidate store; it is created on a writer's open, so stores made
before it existed gain it on resume (readers of such stores see no extra runs).
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from population.outcomes import Outcome, Purpose

SCHEMA = """
CREATE TABLE IF NOT EXISTS extra_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    candidate_id TEXT NOT NULL REFERENCES candidates (id),
    purpose TEXT NOT NULL,
    seed INTEGER NOT NULL,
    splits TEXT NOT NULL,
    budget_fraction REAL NOT NULL,
    worker TEXT NOT NULL,
    queued_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    outcome TEXT NOT NULL,
    val_bpb REAL,
    test_bpb REAL,
    metrics TEXT NOT NULL,
    reason TEXT NOT NULL
)"""
INDEX = "CREATE INDEX IF NOT EXISTS extra_runs_candidate ON extra_runs (candidate_id, purpose)"
PURPOSES = tuple(p.value for p in Purpose)
OUTCOMES = tuple(o.value for o in (Outcome.QUEUED, Outcome.RUNNING, Outcome.DONE, Outcome.CRASHED,
                                    Outcome.TIMED_OUT, Outcome.INVALID, Outcome.LOST))
_COLUMNS = ("id, candidate_id, purpose, seed, splits, budget_fraction, worker, queued_at, "
            "started_at, ended_at, outcome, val_bpb, test_bpb, metrics, reason")


@dataclass(frozen=True)
class ExtraRun:
    id: int
    candidate_id: str
    purpose: Purpose             # noise | confirm | test | stage (a promotion, multi-fidelity)
    seed: int
    splits: tuple[str, ...]
    budget_fraction: float
    worker: str
    queued_at: float
    started_at: float | None
    ended_at: float | None
    outcome: Outcome             # queued | running | done | crashed | timed_out | invalid | lost
    val_bpb: float | None
    test_bpb: float | None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    reason: str = ""

    @property
    def job_id(self) -> str:
        """The name the scheduler core knows this run by."""
        return job_id(self.candidate_id, self.id)


def job_id(candidate_id: str, run_id: int) -> str:
    return f"{candidate_id}@x{run_id}"


def parse_job_id(job: str) -> int | None:
    """The extra run id in a scheduler job name, or None for a candidate's own run."""
    head, sep, tail = job.rpartition("@x")
    return int(tail) if sep and head and tail.isdigit() else None


def job_candidate(job: str) -> str:
    """The candidate a scheduler job trains: its own id, or the one an extra run re-scores."""
    return job.rpartition("@x")[0] if parse_job_id(job) is not None else job


def create(conn: sqlite3.Connection) -> None:
    conn.execute(SCHEMA)
    conn.execute(INDEX)


def add(conn: sqlite3.Connection, candidate_id: str, *, purpose: str, seed: int,
        splits: Sequence[str], budget_fraction: float, now: float | None) -> int:
    if purpose not in PURPOSES:
        raise ValueError(f"extra run purpose must be one of {PURPOSES}, not {purpose!r}")
    cursor = conn.execute(
        "INSERT INTO extra_runs (candidate_id, purpose, seed, splits, budget_fraction, worker, "
        "queued_at, outcome, metrics, reason) VALUES (?, ?, ?, ?, ?, '', ?, 'queued', '{}', '')",
        (candidate_id, purpose, int(seed), ",".join(splits), float(budget_fraction),
         time.time() if now is None else now))
    return int(cursor.lastrowid)


def start(conn: sqlite3.Connection, run_id: int, *, worker: str, now: float | None) -> None:
    conn.execute("UPDATE extra_runs SET worker=?, started_at=?, outcome='running' WHERE id=?",
                 (worker, time.time() if now is None else now, run_id))


def finish(conn: sqlite3.Connection, run_id: int, *, outcome: str, metrics: Mapping[str, Any],
           reason: str, now: float | None) -> None:
    if outcome not in OUTCOMES[2:]:
        raise ValueError(f"extra run outcome must be one of {OUTCOMES[2:]}, not {outcome!r}")
    conn.execute(
        "UPDATE extra_runs SET outcome=?, val_bpb=?, test_bpb=?, metrics=?, reason=?, "
        "ended_at=? WHERE id=?",
        (outcome, _finite(metrics.get("val_bpb")) if outcome == Outcome.DONE else None,
         _finite(metrics.get("test_bpb")) if outcome == Outcome.DONE else None,
         json.dumps(dict(metrics)), reason, time.time() if now is None else now, run_id))


def select(conn: sqlite3.Connection, candidate_id: str | None = None,
           purpose: str | None = None, run_id: int | None = None) -> list[ExtraRun]:
    sql, params = f"SELECT {_COLUMNS} FROM extra_runs WHERE 1=1", []
    for column, value in (("candidate_id", candidate_id), ("purpose", purpose), ("id", run_id)):
        if value is not None:
            sql += f" AND {column}=?"
            params.append(value)
    try:
        rows = conn.execute(sql + " ORDER BY id", params).fetchall()
    except sqlite3.OperationalError as exc:  # a store from before extra runs, read-only
        if "no such table" in str(exc):
            return []
        raise
    return [_from_row(row) for row in rows]


def _from_row(row: Any) -> ExtraRun:
    (rid, cid, purpose, seed, splits, fraction, worker, queued, started, ended, outcome, val,
     test, metrics, reason) = tuple(row)
    return ExtraRun(rid, cid, Purpose(purpose), seed, tuple(s for s in splits.split(",") if s),
                    fraction, worker, queued, started, ended, Outcome(outcome), val, test, json.loads(metrics),
                    reason)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
