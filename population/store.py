"""The candidate store: SQLite in WAL mode, one writer, nothing ever deleted.

Every write is its own committed transaction, so a kill -9 of the writer loses at most the
write in progress. Ranking queries read light indexed columns and load full candidates
(with their sources) only for the few rows they return.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from population import extra_runs, migrations
from population.candidate import Candidate, Status, split_marks
from population.extra_runs import ExtraRun
from population.outcomes import Outcome
from population.schema import COLUMNS, FILES, PLACEHOLDERS, SCHEMA, candidate_from_row
from population.wins import Win

_RANK = {
    Status.PROPOSED: 0,
    Status.RUNNING: 1,
    Status.DONE: 2,
    Status.CRASHED: 2,
    Status.TIMED_OUT: 2,
    Status.REJECTED: 2,
}
# `lost`: the worker went away (counts against workers.max_lost_attempts). `refused`: the
# worker would not score it (another harness or data on its node) and `abandoned`: the
# controller stopped on purpose with it in flight; neither is the candidate's doing, so
# neither counts as lost. The column is free text: older stores need no migration.
ATTEMPT_OUTCOMES = tuple(o.value for o in Outcome if o is not Outcome.QUEUED)
FAILED = (Status.CRASHED, Status.TIMED_OUT, Status.REJECTED)
RAN = (Status.DONE, Status.CRASHED, Status.TIMED_OUT)
MIGRATION = "migration"
WRITER_LOCK_WAIT_S = 5.0  # see _take_writer_lock
_MUTATOR = operator.attrgetter("mutator")
FILES_KEPT = 512  # decoded sources kept per open store (survivors, parents, lineages)


def is_copy(candidate: Candidate) -> bool:
    """A migration copy: the same experiment moved to another island, not a new edit."""
    return candidate.mutator == MIGRATION


def edits_from_seed(chain: Sequence[Candidate]) -> int:
    """The generation every output shows: edits from the seed along `chain` (root first,
    ending at the candidate). A migration or island-seeding copy has its source's code, so
    it adds none; the store's `generation` field counts copies too and is not shown."""
    mutators = list(map(_MUTATOR, chain[1:]))  # C-speed: lineages run hundreds deep
    return len(mutators) - mutators.count(MIGRATION)


class StoreError(Exception):
    """A store that cannot be used as asked: the message says why and what to do."""


class StatusError(StoreError, ValueError):
    """A status change that would move a candidate backwards."""


@dataclass(frozen=True)
class Attempt:
    """One try at running a candidate on one worker; a lost attempt stays as history."""

    id: int
    candidate_id: str
    worker: str
    node: str
    device: str
    started_at: float
    ended_at: float | None
    outcome: Outcome
    reason: str


def _finite_bpb(metrics: Mapping[str, Any]) -> float | None:
    value = metrics.get("val_bpb")
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class Store:
    """The population's memory: every candidate and every attempt of a run."""

    SCHEMA_VERSION: int = migrations.LATEST

    def __init__(self, conn: sqlite3.Connection, path: Path, readonly: bool,
                 lock_fd: int | None) -> None:
        self._conn = conn
        self.path = path
        self.readonly = readonly
        self._lock_fd = lock_fd
        self._columns = COLUMNS  # a reader of an older store derives the newer columns
        # seq -> the candidate's files, decoded: a row's sources never change once stored,
        # and the same survivors are read several times an experiment (25 KB of JSON each)
        self._files: dict[int, dict[str, str]] = {}
        self._final: dict[int, Candidate] = {}  # seq -> a candidate whose row is final
        self._final_ids: dict[str, int] = {}
        self._files_lock = threading.Lock()

    # ---- opening and closing -------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False) -> Store:
        """Open (creating if needed) the store at `path`; `readonly` reads a live run safely."""
        path = Path(path)
        if readonly:
            if not path.exists():
                raise FileNotFoundError(f"no store at {path}: is this a run directory?")
            conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            store = cls(conn, path, True, None)
            try:
                store._check_version(creating=False)
            except BaseException:
                store.close()
                raise
            return store
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = cls._take_writer_lock(path)
        try:
            conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        except BaseException:
            os.close(lock_fd)
            raise
        store = cls(conn, path, False, lock_fd)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL survives a killed process (each commit is in the WAL); only an OS
            # crash could lose the last commits.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            store._check_version(creating=True)
            with store._write():
                extra_runs.create(conn)  # stores older than extra runs gain the table
                migrations.add_indexes(conn)  # and older stores the indexes they lack
        except BaseException:
            store.close()
            raise
        return store

    @staticmethod
    def _take_writer_lock(path: Path) -> int:
        lock_path = path.with_name(path.name + ".writer-lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        # A writer that was just killed can hold the lock a moment longer through a child
        # caught between fork and exec; wait briefly before calling the store busy.
        deadline = time.monotonic() + WRITER_LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                os.close(fd)
                raise StoreError(
                    f"{path} is already open for writing by another process (one writer per "
                    "store); open it with readonly=True to read a live run"
                ) from None

    def _check_version(self, *, creating: bool) -> None:
        has_meta = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        found = None
        if has_meta:
            row = self._conn.execute(
                "SELECT value FROM meta WHERE key='schema_version'").fetchone()
            found = None if row is None else int(row[0])
        if found is not None and found > self.SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has store schema version {found}, newer than this evolve "
                f"understands ({self.SCHEMA_VERSION}); upgrade evolve to read it"
            )
        if found is None:
            if not creating:
                raise StoreError(f"{self.path} is not an evolve store (no schema version)")
            with self._write():
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(self.SCHEMA_VERSION),))
        elif found < self.SCHEMA_VERSION and self.readonly:
            self._columns = migrations.select_list("candidates", COLUMNS, found)
        elif found < self.SCHEMA_VERSION:
            try:
                with self._write():
                    migrations.migrate(self._conn, found)
            except sqlite3.Error as exc:
                raise StoreError(
                    f"{self.path} has store schema version {found}; bringing it to "
                    f"{self.SCHEMA_VERSION} failed: {exc}") from exc

    def close(self) -> None:
        """Close the connection and release the writer lock (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None  # type: ignore[assignment]
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- writes --------------------------------------------------------------------------

    def _write(self) -> _Transaction:
        if self.readonly:
            raise StoreError(f"{self.path} was opened read-only; only the run's controller writes")
        return _Transaction(self._conn)

    def add(self, candidate: Candidate) -> None:
        """Store a new candidate (proposed, or rejected by pre-flight; done for copies)."""
        if candidate.status not in (Status.PROPOSED, Status.REJECTED, Status.DONE):
            raise StatusError(
                f"candidate {candidate.id} must be added as proposed, rejected or done, "
                f"not {candidate.status.value}")
        metrics, problem, test_bpb = split_marks(candidate.metrics)
        candidate = candidate.replace(
            metrics=metrics,
            sandbox_problem=candidate.sandbox_problem if problem is None else problem,
            test_bpb=candidate.test_bpb if test_bpb is None else test_bpb)
        bpb = _finite_bpb(candidate.metrics)
        if candidate.status is Status.DONE and bpb is None:
            raise ValueError(f"candidate {candidate.id} is done but has no finite val_bpb")
        created = candidate.created_at or time.time()
        finished = candidate.finished_at
        if candidate.status.is_final and finished is None:
            finished = created
        with self._write():
            self._insert(candidate, bpb, created, finished)

    def _insert(self, candidate: Candidate, bpb: float | None, created: float,
                finished: float | None) -> None:
        try:
            self._conn.execute(
                f"INSERT INTO candidates ({COLUMNS}) VALUES ({PLACEHOLDERS})",
                (candidate.id, candidate.parent_id, candidate.island, candidate.generation,
                 candidate.source_hash, json.dumps(dict(candidate.files)), candidate.diff,
                 candidate.description, candidate.rationale, candidate.mutator,
                 candidate.model, candidate.raw_answer, candidate.applied_edit,
                 json.dumps(dict(candidate.usage)), float(candidate.cost_usd),
                 Status(candidate.status).value, json.dumps(dict(candidate.metrics)), bpb,
                 candidate.reason, candidate.log_tail, int(candidate.seed), created,
                 finished, candidate.sandbox_problem, candidate.test_bpb, candidate.donor_id,
                 candidate.triggered_by))
        except sqlite3.IntegrityError:
            raise StoreError(f"candidate id {candidate.id!r} is already in the store") from None

    def set_status(self, candidate_id: str, status: Status, *, reason: str = "",
                   now: float | None = None) -> Candidate:
        """Move a candidate forward; a final status also stamps finished_at."""
        status = Status(status)
        with self._write():
            self._check_move(candidate_id, status)
            if status.is_final:
                self._conn.execute(
                    "UPDATE candidates SET status=?, reason=?, finished_at=? WHERE id=?",
                    (status.value, reason, time.time() if now is None else now, candidate_id))
            else:
                self._conn.execute(
                    "UPDATE candidates SET status=?, reason=? WHERE id=?",
                    (status.value, reason, candidate_id))
        return self.get(candidate_id)

    def record_result(self, candidate_id: str, *, status: Status, metrics: Mapping,
                      reason: str = "", log_tail: str = "",
                      now: float | None = None) -> Candidate:
        """The final word on a candidate: its status, metrics and finish time. The run's
        held-out test score and sandbox mark leave `metrics` for columns of their own."""
        status = Status(status)
        if not status.is_final:
            raise StatusError(f"record_result needs a final status, not {status.value}")
        metrics, problem, test_bpb = split_marks(metrics)
        if status is Status.DONE and not problem:
            problem = self._extra_run_problem(candidate_id) or problem
        bpb = _finite_bpb(metrics)
        if status is Status.DONE and bpb is None:
            raise ValueError(
                f"candidate {candidate_id} cannot be done without a finite val_bpb "
                f"(metrics: {dict(metrics)!r:.200})")
        with self._write():
            self._check_move(candidate_id, status)
            self._conn.execute(
                "UPDATE candidates SET status=?, metrics=?, val_bpb=?, reason=?, log_tail=?, "
                "finished_at=?, sandbox_problem=?, test_bpb=? WHERE id=?",
                (status.value, json.dumps(dict(metrics)), bpb if status is Status.DONE else None,
                 reason, log_tail, time.time() if now is None else now,
                 problem if status is Status.DONE else None,
                 test_bpb if status is Status.DONE else None, candidate_id))
        return self.get(candidate_id)

    def _extra_run_problem(self, candidate_id: str) -> str | None:
        """Why one of the candidate's finished re-runs (its score's evidence) was not
        sandboxed, if one was not."""
        for run in extra_runs.select(self._conn, candidate_id):
            if run.outcome == "done" and run.metrics.get("sandboxed") is False:
                return str(run.metrics.get("sandbox_problem") or "a re-run was not sandboxed")
        return None

    def _check_move(self, candidate_id: str, new: Status) -> None:
        row = self._conn.execute(
            "SELECT status FROM candidates WHERE id=?", (candidate_id,)).fetchone()
        if row is None:
            raise KeyError(f"no candidate {candidate_id!r} in the store")
        old = Status(row[0])
        if old.is_final or _RANK[new] < _RANK[old]:
            raise StatusError(
                f"candidate {candidate_id} is {old.value}; it cannot move to {new.value} "
                "(status only moves forward: proposed -> running -> done|crashed|timed_out|rejected)")

    def start_attempt(self, candidate_id: str, *, worker: str, node: str, device: str,
                      now: float | None = None) -> int:
        """Record that a worker started running the candidate; returns the attempt id."""
        with self._write():
            if self._conn.execute(
                    "SELECT 1 FROM candidates WHERE id=?", (candidate_id,)).fetchone() is None:
                raise KeyError(f"no candidate {candidate_id!r} in the store")
            cursor = self._conn.execute(
                "INSERT INTO attempts (candidate_id, worker, node, device, started_at, ended_at, "
                "outcome, reason) VALUES (?, ?, ?, ?, ?, NULL, 'running', '')",
                (candidate_id, worker, node, device, time.time() if now is None else now))
            return int(cursor.lastrowid)

    def finish_attempt(self, attempt_id: int, *, outcome: str, reason: str = "",
                       now: float | None = None) -> None:
        """Close an attempt with its outcome (done, crashed, timed_out, invalid, lost,
        refused, abandoned)."""
        if outcome not in ATTEMPT_OUTCOMES or outcome == Outcome.RUNNING:
            raise ValueError(f"attempt outcome must be one of {ATTEMPT_OUTCOMES[1:]}, "
                             f"not {outcome!r}")
        with self._write():
            row = self._conn.execute(
                "SELECT outcome FROM attempts WHERE id=?", (attempt_id,)).fetchone()
            if row is None:
                raise KeyError(f"no attempt {attempt_id} in the store")
            if row[0] != Outcome.RUNNING:
                raise StatusError(f"attempt {attempt_id} already finished as {row[0]}")
            self._conn.execute(
                "UPDATE attempts SET outcome=?, reason=?, ended_at=? WHERE id=?",
                (outcome, reason, time.time() if now is None else now, attempt_id))

    def requeue(self, candidate_id: str, *, reason: str = "") -> Candidate:
        """Move a running candidate back to proposed: the controller stopped on purpose
        before its result was recorded, and a resume runs it again. The one backward move,
        allowed only while none of its attempts is still open."""
        with self._write():
            row = self._conn.execute(
                "SELECT status FROM candidates WHERE id=?", (candidate_id,)).fetchone()
            if row is None:
                raise KeyError(f"no candidate {candidate_id!r} in the store")
            if row[0] != Status.RUNNING.value:
                raise StatusError(f"only a running candidate is requeued; {candidate_id} is "
                                  f"{row[0]}")
            if self._conn.execute(
                    "SELECT 1 FROM attempts WHERE candidate_id=? AND outcome='running'",
                    (candidate_id,)).fetchone() is not None:
                raise StatusError(f"candidate {candidate_id} still has a running attempt; "
                                  "close it before requeueing")
            self._conn.execute("UPDATE candidates SET status=?, reason=? WHERE id=?",
                               (Status.PROPOSED.value, reason, candidate_id))
        return self.get(candidate_id)

    def set_meta(self, key: str, value: str) -> None:
        """Remember a run-level fact (seed, counters) across restarts."""
        with self._write():
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value=excluded.value", (key, str(value)))

    def add_copy(self, source_id: str, island: int, *, new_id: str | None = None,
                 description: str = "", now: float | None = None) -> Candidate:
        """Copy a done candidate into another island (migration, re-seeding): new id, same
        files and metrics, status done, `mutator="migration"`, its source as parent."""
        with self._write():
            return self._copy(source_id, island, new_id, description,
                              time.time() if now is None else now)

    def _copy(self, source_id: str, island: int, new_id: str | None, description: str,
              stamp: float) -> Candidate:
        source = self.get(source_id)
        if source.status is not Status.DONE:
            raise StatusError(f"only done candidates migrate; {source_id} is {source.status.value}")
        copy = source.replace(
            id=new_id or f"{source_id}@i{island}.{self._next_seq()}",
            parent_id=source_id, island=island, generation=source.generation + 1,
            description=description or f"copy of {source_id} from island {source.island}",
            rationale="", mutator=MIGRATION, model="", raw_answer="", applied_edit="", diff="",
            usage={}, cost_usd=0.0, created_at=stamp, finished_at=stamp, donor_id=None,
            triggered_by=None)
        self._insert(copy, source.val_bpb, stamp, stamp)
        return self.get(copy.id)

    def reseed(self, island: int, source_ids: Iterable[str], *,
               now: float | None = None) -> list[Candidate]:
        """Restart an island from copies of `source_ids`, in one transaction: its members so
        far stop counting as its population (nothing is deleted)."""
        stamp = time.time() if now is None else now
        with self._write():
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                (f"island_reset.{island}", repr(stamp)))
            return [self._copy(source_id, island, None, f"re-seed of island {island} from "
                               f"{source_id}", stamp) for source_id in source_ids]

    def _next_seq(self) -> int:
        row = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM candidates").fetchone()
        return int(row[0]) + 1

    def add_extra_run(self, candidate_id: str, *, purpose: str, seed: int,
                      splits: Iterable[str] = ("val",), budget_fraction: float = 1.0,
                      now: float | None = None) -> ExtraRun:
        """Queue a run of a candidate that is not an experiment (noise, confirm, test)."""
        with self._write():
            if self._conn.execute(
                    "SELECT 1 FROM candidates WHERE id=?", (candidate_id,)).fetchone() is None:
                raise KeyError(f"no candidate {candidate_id!r} in the store")
            run_id = extra_runs.add(self._conn, candidate_id, purpose=purpose, seed=seed,
                                    splits=tuple(splits), budget_fraction=budget_fraction,
                                    now=now)
        return self.extra_run(run_id)

    def start_extra_run(self, run_id: int, *, worker: str, now: float | None = None) -> None:
        with self._write():
            extra_runs.start(self._conn, run_id, worker=worker, now=now)

    def finish_extra_run(self, run_id: int, *, outcome: str, metrics: Mapping | None = None,
                         reason: str = "", now: float | None = None) -> ExtraRun:
        """Close an extra run with its outcome; a lost one stays as history."""
        with self._write():
            extra_runs.finish(self._conn, run_id, outcome=outcome, metrics=metrics or {},
                              reason=reason, now=now)
        return self.extra_run(run_id)

    def extra_run(self, run_id: int) -> ExtraRun:
        found = extra_runs.select(self._conn, run_id=run_id)
        if not found:
            raise KeyError(f"no extra run {run_id} in the store")
        return found[0]

    def extra_runs(self, candidate_id: str | None = None, *,
                   purpose: str | None = None) -> list[ExtraRun]:
        """Extra runs, oldest first (empty for a store made before they existed)."""
        return extra_runs.select(self._conn, candidate_id, purpose)

    # ---- reads ---------------------------------------------------------------------------

    def get(self, candidate_id: str) -> Candidate:
        with self._files_lock:
            seq = self._final_ids.get(candidate_id)
            kept = self._final.get(seq) if seq is not None else None
        if kept is not None:
            return _fresh(kept)
        row = self._conn.execute(
            f"SELECT seq, {self._columns} FROM candidates WHERE id=?",
            (candidate_id,)).fetchone()
        if row is None:
            raise KeyError(f"no candidate {candidate_id!r} in the store")
        return self._candidate(row)

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else str(row[0])

    def attempts(self, candidate_id: str) -> list[Attempt]:
        rows = self._conn.execute(
            "SELECT id, candidate_id, worker, node, device, started_at, ended_at, outcome, reason "
            "FROM attempts WHERE candidate_id=? ORDER BY id", (candidate_id,)).fetchall()
        return [Attempt(*row[:7], Outcome(row[7]), row[8]) for row in rows]

    def lost_count(self, candidate_id: str) -> int:
        """How many attempts at this candidate were lost with their worker (refused and
        abandoned attempts are not the candidate's doing and do not count)."""
        row = self._conn.execute(
            "SELECT COUNT(*) FROM attempts WHERE candidate_id=? AND outcome='lost'",
            (candidate_id,)).fetchone()
        return int(row[0])

    def lineage(self, candidate_id: str) -> list[Candidate]:
        """The candidate and its ancestors, root first."""
        chain = [self.get(candidate_id)]
        seen = {candidate_id}
        while chain[-1].parent_id is not None:
            parent_id = chain[-1].parent_id
            if parent_id in seen:
                raise StoreError(f"lineage of {candidate_id} loops at {parent_id}")
            seen.add(parent_id)
            chain.append(self.get(parent_id))
        return chain[::-1]

    def _island_floor(self, island: int) -> float:
        """When the island was last re-seeded: only results since then are its population
        (children of the old population that finish later still count)."""
        value = self.get_meta(f"island_reset.{island}")
        return -math.inf if value is None else float(value)

    def island_members(self, island: int) -> list[Candidate]:
        """The island's done candidates (since its last reset), best first."""
        return self.survivors(island, -1)

    def survivors(self, island: int, size: int) -> list[Candidate]:
        """The best `size` done candidates of the island; ties go to the earlier finisher."""
        seqs = [row[0] for row in self._conn.execute(
            "SELECT seq FROM candidates WHERE island=? AND status='done' AND finished_at>=? "
            "ORDER BY val_bpb, finished_at, seq LIMIT ?",
            (island, self._island_floor(island), size))]
        return self._load(seqs)

    def best(self, island: int | None = None) -> Candidate | None:
        """The best done candidate of an island, or of the whole run."""
        if island is not None:
            found = self.survivors(island, 1)
            return found[0] if found else None
        row = self._conn.execute(
            "SELECT seq FROM candidates WHERE status='done' "
            "ORDER BY val_bpb, finished_at, seq LIMIT 1").fetchone()
        return None if row is None else self._load([row[0]])[0]

    def recent_failures(self, limit: int) -> list[Candidate]:
        """Crashed, timed-out and rejected candidates, newest first (for mutator prompts)."""
        seqs = [row[0] for row in self._conn.execute(
            "SELECT seq FROM candidates WHERE status IN ('crashed', 'timed_out', 'rejected') "
            "ORDER BY finished_at DESC, seq DESC LIMIT ?", (limit,))]
        return self._load(seqs)

    def recent_finished(self, limit: int) -> list[Candidate]:
        """The last `limit` experiments to finish (done, crashed, timed out, rejected; copies
        left out), newest first: a bounded read for the prompt's table of recent results.
        (`+status`: walk the finish-time index newest first and stop at the limit, never
        the status index, which would read and sort every finished row.)"""
        seqs = [row[0] for row in self._conn.execute(
            "SELECT seq FROM candidates WHERE +status IN ('done', 'crashed', 'timed_out', "
            "'rejected') AND mutator != ? ORDER BY finished_at DESC, seq DESC LIMIT ?",
            (MIGRATION, limit))]
        return self._load(seqs)

    def children_of(self, parent_id: str) -> list[Candidate]:
        """Every candidate made from this parent (migration copies included), oldest first."""
        seqs = [row[0] for row in self._conn.execute(
            "SELECT seq FROM candidates WHERE parent_id=? ORDER BY seq", (parent_id,))]
        return self._load(seqs)

    def wins(self, limit: int = 50) -> list[Win]:
        """Children that beat their parent (both done; migration copies are not edits),
        largest gain first: the edits the merge operator may carry to other lines."""
        rows = self._conn.execute(
            "SELECT c.seq, p.seq FROM candidates c JOIN candidates p ON p.id = c.parent_id "
            "WHERE c.status='done' AND p.status='done' AND c.mutator != ? "
            "AND c.val_bpb < p.val_bpb ORDER BY p.val_bpb - c.val_bpb DESC, c.seq LIMIT ?",
            (MIGRATION, limit)).fetchall()
        loaded = self._load([seq for row in rows for seq in row])
        return [Win(donor=loaded[2 * i], base=loaded[2 * i + 1]) for i in range(len(rows))]

    def donors_into(self, target_id: str) -> list[str]:
        """The donors already carried into `target_id` (its merge children, any status)."""
        return [row[0] for row in self._conn.execute(
            "SELECT donor_id FROM candidates WHERE parent_id=? AND donor_id IS NOT NULL "
            "ORDER BY seq", (target_id,))]

    def has_hash(self, source_hash: str) -> bool:
        return self._conn.execute(
            "SELECT 1 FROM candidates WHERE source_hash=? LIMIT 1", (source_hash,)
        ).fetchone() is not None

    def hashes(self) -> set[str]:
        """Every source hash stored (read from the index alone; no sources loaded)."""
        return {row[0] for row in self._conn.execute(
            "SELECT DISTINCT source_hash FROM candidates")}

    def unfinished(self) -> list[Candidate]:
        """Candidates proposed or running: what a resumed run must run (again)."""
        seqs = [row[0] for row in self._conn.execute(
            "SELECT seq FROM candidates WHERE status IN ('proposed', 'running') ORDER BY seq")]
        return self._load(seqs)

    def in_flight(self, limit: int) -> list[tuple[str, str, str, str]]:
        """(id, parent id, status, description) of the newest `limit` children queued or
        running, oldest first; no sources are loaded (a prompt needs only what they try)."""
        rows = self._conn.execute(
            "SELECT id, parent_id, status, description FROM candidates WHERE status IN "
            "('proposed', 'running') AND mutator != ? AND description != '' "
            "ORDER BY seq DESC LIMIT ?", (MIGRATION, limit)).fetchall()
        return [tuple(row) for row in reversed(rows)]

    def count(self, *statuses: Status, include_copies: bool = False) -> int:
        """Candidates in any of `statuses` (all when none); migration copies are not
        experiments and are left out unless asked for."""
        sql = "SELECT COUNT(*) FROM candidates WHERE 1=1"
        params: list[Any] = []
        if statuses:
            sql += f" AND status IN ({', '.join('?' * len(statuses))})"
            params += [Status(s).value for s in statuses]
        if not include_copies:
            sql += " AND mutator != ?"
            params.append(MIGRATION)
        return int(self._conn.execute(sql, params).fetchone()[0])

    def finished_in_order(self, *, include_rejected: bool = False, include_copies: bool = False,
                          sources: bool = True) -> list[Candidate]:
        """Experiments that ran to a final status, by finish time (results.tsv, reports).
        `sources=False`: without their files and long texts (see `_load_light`) — what a
        resume's statistics need from 10,000 candidates is their ids, scores and operators,
        not 250 MB of decoded source."""
        statuses = [s.value for s in (*RAN, *((Status.REJECTED,) if include_rejected else ()))]
        sql = (f"SELECT seq FROM candidates WHERE status IN ({', '.join('?' * len(statuses))})")
        params: list[Any] = list(statuses)
        if not include_copies:
            sql += " AND mutator != ?"
            params.append(MIGRATION)
        seqs = [row[0] for row in self._conn.execute(sql + " ORDER BY finished_at, seq", params)]
        return self._load(seqs) if sources else self._load_light(seqs)

    def attempt_islands(self) -> list[tuple[int, int, str]]:
        """(attempt id, island, device) of every attempt at an experiment (migration copies
        never run), in one query: a resume binds each island to its first attempt's device."""
        rows = self._conn.execute(
            "SELECT a.id, c.island, a.device FROM attempts a JOIN candidates c "
            "ON c.id = a.candidate_id WHERE c.mutator != ? ORDER BY a.id", (MIGRATION,))
        return [(int(i), int(island), device) for i, island, device in rows]

    def finished_since_best(self, island: int) -> int:
        """Experiments that ran on the island since its best arrived (stagnation measure)."""
        best = self.best(island)
        since = best.finished_at if best is not None and best.finished_at is not None else -1.0
        row = self._conn.execute(
            "SELECT COUNT(*) FROM candidates WHERE island=? AND finished_at>? AND finished_at>=? "
            "AND status IN ('done', 'crashed', 'timed_out') AND mutator != ?",
            (island, since, self._island_floor(island), MIGRATION)).fetchone()
        return int(row[0])

    def islands(self) -> list[int]:
        """Island numbers that hold at least one candidate."""
        return [row[0] for row in self._conn.execute(
            "SELECT DISTINCT island FROM candidates ORDER BY island")]

    def _load(self, seqs: Iterable[int]) -> list[Candidate]:
        seqs = list(seqs)
        if not seqs:
            return []
        with self._files_lock:
            by_seq = {seq: self._final[seq] for seq in seqs if seq in self._final}
        missing = [seq for seq in seqs if seq not in by_seq]
        if missing:
            rows = self._conn.execute(
                f"SELECT seq, {self._columns} FROM candidates "
                f"WHERE seq IN ({', '.join('?' * len(missing))})", missing).fetchall()
            by_seq.update((row[0], self._candidate(row, copy=False)) for row in rows)
        return [_fresh(by_seq[seq]) for seq in seqs]

    def _load_light(self, seqs: list[int]) -> list[Candidate]:
        """Candidates whose files, diff, raw answer, applied edit and log tail are left empty
        (for statistics and counts; never a parent): SQLite does not read those columns'
        overflow pages, and nothing is decoded or kept."""
        if not seqs:
            return []
        with self._files_lock:
            known = {seq: self._final[seq] for seq in seqs if seq in self._final}
        missing = [seq for seq in seqs if seq not in known]
        found = {seq: _light(c) for seq, c in known.items()}
        columns = self._light_columns()
        for start in range(0, len(missing), 900):  # SQLite's bound-parameter limit
            part = missing[start:start + 900]
            rows = self._conn.execute(
                f"SELECT seq, {columns} FROM candidates "
                f"WHERE seq IN ({', '.join('?' * len(part))})", part).fetchall()
            found.update((row[0], candidate_from_row(tuple(row)[1:], files={})) for row in rows)
        return [found[seq] for seq in seqs]

    def _light_columns(self) -> str:
        """This store's column list with the long columns read as empty constants."""
        picked = []
        for item in self._columns.split(", "):
            name = item.rsplit(" ", 1)[-1]
            picked.append(f"{LIGHT_EMPTY[name]} AS {name}" if name in LIGHT_EMPTY else item)
        return ", ".join(picked)

    def _candidate(self, row: Any, *, copy: bool = True) -> Candidate:
        """A (seq, COLUMNS...) row as a Candidate. Its sources are decoded once per
        FILES_KEPT (they never change once stored), and a final candidate is kept whole:
        its row never changes again (status only moves forward, and a final status is the
        last word), so the survivors read several times an experiment are read once."""
        seq, fields = row[0], tuple(row)[1:]
        with self._files_lock:
            files = self._files.get(seq)
        if files is None:
            files = json.loads(fields[FILES])
            with self._files_lock:
                self._files[seq] = files
                if len(self._files) > FILES_KEPT:  # the oldest entry goes
                    self._files.pop(next(iter(self._files)), None)
        candidate = candidate_from_row(fields, files=files)
        if candidate.status.is_final:
            with self._files_lock:
                self._final[seq] = candidate
                self._final_ids[candidate.id] = seq
                if len(self._final) > FILES_KEPT:
                    gone = self._final.pop(next(iter(self._final)))
                    self._final_ids.pop(gone.id, None)
        return _fresh(candidate) if copy else candidate


# The long columns a light candidate leaves empty, and the SQL constant each is read as.
LIGHT_EMPTY = {"files": "'{}'", "diff": "''", "raw_answer": "''", "applied_edit": "''",
               "log_tail": "''"}


def _light(candidate: Candidate) -> Candidate:
    """A kept candidate as `_load_light` reads it: the LIGHT_EMPTY columns empty."""
    empty = {name: {} if name == "files" else "" for name in LIGHT_EMPTY}
    return dataclasses.replace(candidate, **empty, metrics=dict(candidate.metrics),
                               usage=dict(candidate.usage))


def _fresh(candidate: Candidate) -> Candidate:
    """A copy whose dicts are the caller's own (the store keeps the original)."""
    return dataclasses.replace(candidate, files=dict(candidate.files),
                               metrics=dict(candidate.metrics), usage=dict(candidate.usage))


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT around one logical write (autocommit connection)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
