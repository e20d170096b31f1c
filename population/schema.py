"""The store's tables: one row per candidate (full sources as JSON, plus the diff) and one
per attempt to run one. Bump `Store.SCHEMA_VERSION` when this changes, and add the step
that brings an older store up to it to `MIGRATIONS`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
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
    donor_id TEXT
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
    "reason, log_tail, seed, created_at, finished_at, donor_id"
)
# A version-1 store has no donor column: read-only opens of one select NULL in its place.
COLUMNS_V1 = COLUMNS.replace(", donor_id", ", NULL AS donor_id")


def has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in conn.execute(f"PRAGMA table_info({table})"))


def _add_donor(conn: sqlite3.Connection) -> None:
    """Version 2: merges record their donor (the candidate whose winning edit they carry).
    Additive and idempotent: a column every old row reads as NULL (no donor)."""
    if not has_column(conn, "candidates", "donor_id"):
        conn.execute("ALTER TABLE candidates ADD COLUMN donor_id TEXT")


# version -> the step that brings a store of version - 1 up to it (run in order, each in the
# writer's transaction; a read-only open of an older store reads it as it is)
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {2: _add_donor}


def candidate_from_row(row: Any) -> Candidate:
    """A stored row (in COLUMNS order) back as a frozen Candidate."""
    (cid, parent_id, island, generation, _hash, files, diff, description, rationale, mutator,
     model, raw_answer, applied_edit, usage, cost_usd, status, metrics, _bpb, reason, log_tail,
     seed, created_at, finished_at, donor_id) = tuple(row)
    return Candidate(
        id=cid, parent_id=parent_id, island=island, generation=generation,
        files=json.loads(files), description=description, rationale=rationale, mutator=mutator,
        model=model, raw_answer=raw_answer, applied_edit=applied_edit, diff=diff,
        usage=json.loads(usage), cost_usd=cost_usd, status=Status(status),
        metrics=json.loads(metrics), reason=reason, log_tail=log_tail, seed=seed,
        created_at=created_at, finished_at=finished_at, donor_id=donor_id)
