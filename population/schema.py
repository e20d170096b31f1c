"""The store's tables: one row per candidate (full sources as JSON, plus the diff) and one
per attempt to run one. A change here is a new step in population/migrations.py, which also
brings older stores up to it."""

from __future__ import annotations

import json
from typing import Any

from population.candidate import Candidate, Status

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    parent_id TEXT,
    island INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    source_hash TEXT NOT NULL,
    files TEXT NOT NULL,
    diff TEXT NOT NULL,
    description TEXT NOT NULL,
    rationale TEXT NOT NULL,
    mutator TEXT NOT NULL,
    model TEXT NOT NULL,
    raw_answer TEXT NOT NULL,
    applied_edit TEXT NOT NULL,
    usage TEXT NOT NULL,
    cost_usd REAL NOT NULL,
    status TEXT NOT NULL,
    metrics TEXT NOT NULL,
    val_bpb REAL,
    reason TEXT NOT NULL,
    log_tail TEXT NOT NULL,
    seed INTEGER NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL,
    sandbox_problem TEXT,
    test_bpb REAL,
    donor_id TEXT,
    triggered_by TEXT
);
CREATE INDEX IF NOT EXISTS candidates_rank
    ON candidates (island, status, val_bpb, finished_at, seq);
CREATE INDEX IF NOT EXISTS candidates_global_rank
    ON candidates (status, val_bpb, finished_at, seq);
CREATE INDEX IF NOT EXISTS candidates_finished ON candidates (status, finished_at, seq);
CREATE INDEX IF NOT EXISTS candidates_kind ON candidates (status, mutator);
CREATE INDEX IF NOT EXISTS candidates_island_finished
    ON candidates (island, finished_at, status, mutator);
CREATE INDEX IF NOT EXISTS candidates_parent ON candidates (parent_id);
CREATE INDEX IF NOT EXISTS candidates_hash ON candidates (source_hash);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    candidate_id TEXT NOT NULL REFERENCES candidates (id),
    worker TEXT NOT NULL,
    node TEXT NOT NULL,
    device TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_candidate ON attempts (candidate_id, outcome);
"""

COLUMNS = (
    "id, parent_id, island, generation, source_hash, files, diff, description, rationale, "
    "mutator, model, raw_answer, applied_edit, usage, cost_usd, status, metrics, val_bpb, "
    "reason, log_tail, seed, created_at, finished_at, sandbox_problem, test_bpb, donor_id, "
    "triggered_by"
)
PLACEHOLDERS = ", ".join("?" * len(COLUMNS.split(",")))


def candidate_from_row(row: Any) -> Candidate:
    """A stored row (in COLUMNS order) back as a frozen Candidate."""
    (cid, parent_id, island, generation, _hash, files, diff, description, rationale, mutator,
     model, raw_answer, applied_edit, usage, cost_usd, status, metrics, _bpb, reason, log_tail,
     seed, created_at, finished_at, sandbox_problem, test_bpb, donor_id, triggered_by) = tuple(row)
    return Candidate(
        id=cid, parent_id=parent_id, island=island, generation=generation,
        files=json.loads(files), description=description, rationale=rationale, mutator=mutator,
        model=model, raw_answer=raw_answer, applied_edit=applied_edit, diff=diff,
        usage=json.loads(usage), cost_usd=cost_usd, status=Status(status),
        metrics=json.loads(metrics), reason=reason, log_tail=log_tail, seed=seed,
        created_at=created_at, finished_at=finished_at, sandbox_problem=sandbox_problem,
        test_bpb=test_bpb, donor_id=donor_id, triggered_by=triggered_by)
