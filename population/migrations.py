"""Store schema versions and the steps between them: each step adds columns (never drops or
renames), with the SQL expression an older row's value is derived from.

A writer's open brings an older store up to date in one transaction; a reader of an older store
(a live run of an older evolve) sees the same derived values without writing. Add a step as a
new row of STEPS, keyed by the version it brings a store to.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

BEFORE_SANDBOX = "scored before the sandbox existed (store schema 1): the candidate could reach its score"


@dataclass(frozen=True)
class Column:
    """A column a step adds: its table, name, SQL type and an older row's value (SQL)."""

    table: str
    name: str
    sql_type: str
    backfill: str = "NULL"


@dataclass(frozen=True)
class Step:
    version: int                 # the schema version this step brings a store to
    columns: tuple[Column, ...]
    why: str


STEPS: tuple[Step, ...] = (
    Step(2, (
        # "" sandboxed, text: why not, NULL: never scored. Every score before the jail is marked.
        Column("candidates", "sandbox_problem", "TEXT",
               f"CASE WHEN status = 'done' THEN '{BEFORE_SANDBOX}' END"),
        Column("candidates", "test_bpb", "REAL"),  # held-out test score, shown only at the end
    ), "the sandbox mark of every score and the held-out test score scored in the same run"),
    Step(3, (
        Column("candidates", "donor_id", "TEXT"),  # NULL: no donor (not a merge)
    ), "a merge records its donor, the candidate whose winning edit it carries"),
    Step(4, (
        # NULL: drawn by weight. A repair is never drawn (its weight must be 0), so an older
        # repair child is marked; an older merge may have been drawn or carried: left drawn.
        Column("candidates", "triggered_by", "TEXT",
               "CASE WHEN mutator = 'repair' THEN 'repair' END"),
    ), "a triggered proposal's child says why it was made: it stays out of the operator "
       "statistics after a resume"),
)
LATEST = max(step.version for step in STEPS)


def pending(found: int) -> list[Step]:
    """The steps a store of version `found` still needs, oldest first."""
    return sorted((step for step in STEPS if step.version > found), key=lambda step: step.version)


def migrate(conn: sqlite3.Connection, found: int) -> None:
    """Bring a store of version `found` to LATEST (inside the caller's transaction)."""
    for step in pending(found):
        for column in step.columns:
            conn.execute(f"ALTER TABLE {column.table} ADD COLUMN {column.name} {column.sql_type}")
            if column.backfill != "NULL":
                conn.execute(f"UPDATE {column.table} SET {column.name} = {column.backfill}")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(LATEST),))


def select_list(table: str, columns: str, found: int) -> str:
    """`columns` (comma-separated) for reading a store of version `found`: a column a later
    step adds is read as its backfill expression, so readers need not write."""
    added = {c.name: c.backfill for step in pending(found) for c in step.columns
             if c.table == table}
    names = [name.strip() for name in columns.split(",")]
    return ", ".join(f"{added[name]} AS {name}" if name in added else name for name in names)
