"""The SQLite store on a real file: round trips, forward-only status, attempts, queries."""

from __future__ import annotations

import sqlite3

import pytest

from population.candidate import Candidate, Status
from population.store import StatusError, Store, StoreError


def make(cid: str, parent: str | None = None, island: int = 0, *, source: str | None = None,
         **kw) -> Candidate:
    return Candidate(id=cid, parent_id=parent, island=island, generation=kw.pop("generation", 0),
                     files={"train.py": source if source is not None else f"X = '{cid}'\n"},
                     **kw)


def done(store: Store, cid: str, bpb: float, *, now: float, parent: str | None = None,
         island: int = 0) -> Candidate:
    store.add(make(cid, parent, island, created_at=now - 1))
    store.set_status(cid, Status.RUNNING)
    return store.record_result(cid, status=Status.DONE, metrics={"val_bpb": bpb}, now=now)


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "store.sqlite") as opened:
        yield opened


def test_round_trip_keeps_every_field(store: Store) -> None:
    original = make("a", description="wider MLP", rationale="more capacity", mutator="llm",
                    model="m", raw_answer="raw", applied_edit="edit", diff="--- a\n+++ b\n",
                    usage={"input_tokens": 10}, cost_usd=0.25, seed=7, created_at=5.0)
    store.add(original)
    assert store.get("a") == original
    assert store.get_meta("schema_version") == str(Store.SCHEMA_VERSION)
    with pytest.raises(KeyError, match="nope"):
        store.get("nope")
    with pytest.raises(StoreError, match="already in the store"):
        store.add(original)


def test_status_only_moves_forward(store: Store) -> None:
    store.add(make("a"))
    store.set_status("a", Status.RUNNING)
    store.set_status("a", Status.RUNNING)  # a requeued (lost) run stays running
    with pytest.raises(StatusError, match="only moves forward"):
        store.set_status("a", Status.PROPOSED)
    final = store.record_result("a", status=Status.CRASHED, metrics={}, reason="boom",
                                log_tail="Traceback", now=9.0)
    assert (final.status, final.reason, final.log_tail, final.finished_at) == (
        Status.CRASHED, "boom", "Traceback", 9.0)
    for status in (Status.DONE, Status.RUNNING, Status.REJECTED):
        with pytest.raises(StatusError):
            store.set_status("a", status)
    store.add(make("b"))
    assert store.set_status("b", Status.REJECTED, reason="duplicate").status is Status.REJECTED
    store.add(make("c"))
    with pytest.raises(ValueError, match="val_bpb"):
        store.record_result("c", status=Status.DONE, metrics={"val_bpb": float("nan")})
    with pytest.raises(StatusError):
        store.record_result("c", status=Status.RUNNING, metrics={})
    assert store.get("c").status is Status.PROPOSED


def test_attempts_are_history(store: Store) -> None:
    store.add(make("a"))
    first = store.start_attempt("a", worker="w1", node="n1", device="cpu", now=1.0)
    store.finish_attempt(first, outcome="lost", reason="node died", now=2.0)
    second = store.start_attempt("a", worker="w2", node="n2", device="H100", now=3.0)
    assert store.lost_count("a") == 1
    store.finish_attempt(second, outcome="done", now=4.0)
    attempts = store.attempts("a")
    assert [(a.worker, a.outcome, a.started_at, a.ended_at) for a in attempts] == [
        ("w1", "lost", 1.0, 2.0), ("w2", "done", 3.0, 4.0)]
    with pytest.raises(StatusError, match="already finished"):
        store.finish_attempt(second, outcome="crashed")
    with pytest.raises(ValueError, match="outcome"):
        store.finish_attempt(first, outcome="exploded")
    with pytest.raises(KeyError):
        store.start_attempt("ghost", worker="w", node="n", device="cpu")


def test_lineage_walks_to_the_root_through_migration(store: Store) -> None:
    done(store, "root", 3.0, now=1.0)
    done(store, "c1", 2.5, now=2.0, parent="root")
    copy = store.add_copy("c1", 1, now=3.0)
    store.add(make("c2", copy.id, island=1, generation=2))
    assert [c.id for c in store.lineage("c2")] == ["root", "c1", copy.id, "c2"]
    assert copy.mutator == "migration" and copy.files == store.get("c1").files
    assert copy.val_bpb == 2.5 and copy.status is Status.DONE and copy.island == 1
    assert [c.id for c in store.children_of("c1")] == [copy.id]


def test_survivors_best_and_ties(store: Store) -> None:
    done(store, "a", 3.0, now=1.0)
    done(store, "b", 2.0, now=2.0)
    done(store, "tie", 2.0, now=3.0)  # equal to b but later: b keeps its place
    done(store, "c", 2.5, now=4.0)
    done(store, "other", 1.0, now=5.0, island=1)
    store.add(make("running"))
    store.set_status("running", Status.RUNNING)
    assert [c.id for c in store.survivors(0, 2)] == ["b", "tie"]
    assert [c.id for c in store.island_members(0)] == ["b", "tie", "c", "a"]
    assert store.best(0).id == "b"
    assert store.best().id == "other"
    assert store.best(7) is None
    assert store.islands() == [0, 1]


def test_reset_island_starts_a_new_population(store: Store) -> None:
    done(store, "old", 2.0, now=1.0, island=1)
    done(store, "best", 1.0, now=2.0, island=0)
    store.add(make("in-flight", "old", island=1))  # a child of the old population
    store.set_status("in-flight", Status.RUNNING)
    done(store, "stale", 3.0, now=2.5, parent="old", island=1)
    assert store.finished_since_best(1) == 1
    copies = store.reseed(1, ["best"], now=3.0)
    assert [c.id for c in store.survivors(1, 4)] == [copies[0].id]
    assert store.finished_since_best(1) == 0
    assert copies[0].mutator == "migration" and copies[0].parent_id == "best"
    assert store.get("old").island == 1  # nothing deleted
    late = store.record_result("in-flight", status=Status.DONE, metrics={"val_bpb": 0.5}, now=4.0)
    assert [c.id for c in store.survivors(1, 4)] == [late.id, copies[0].id]
    store.add(make("queued", island=1))
    with pytest.raises(StatusError, match="only done"):
        store.reseed(0, ["old", "queued"])  # all or nothing
    assert store.get_meta("island_reset.0") is None
    assert [c.id for c in store.survivors(0, 4)] == ["best"]


def test_failures_unfinished_counts_and_order(store: Store) -> None:
    done(store, "root", 3.0, now=1.0)
    store.add(make("rej", "root", status=Status.REJECTED, reason="dup", created_at=2.0))
    store.add(make("crash", "root"))
    store.record_result("crash", status=Status.CRASHED, metrics={}, reason="oom", now=3.0)
    store.add(make("slow", "root"))
    store.record_result("slow", status=Status.TIMED_OUT, metrics={}, now=4.0)
    store.add(make("queued", "root"))
    store.add(make("busy", "root"))
    store.set_status("busy", Status.RUNNING)
    store.add_copy("root", 1, now=5.0)
    assert [c.id for c in store.recent_failures(2)] == ["slow", "crash"]
    assert [c.id for c in store.unfinished()] == ["queued", "busy"]
    assert store.count() == 6
    assert store.count(include_copies=True) == 7
    assert store.count(Status.DONE) == 1
    assert store.count(Status.CRASHED, Status.TIMED_OUT) == 2
    assert [c.id for c in store.finished_in_order()] == ["root", "crash", "slow"]
    assert [c.id for c in store.finished_in_order(include_rejected=True)] == [
        "root", "rej", "crash", "slow"]
    assert store.has_hash(store.get("crash").source_hash)
    assert not store.has_hash("0" * 64)
    assert store.get("crash").source_hash in store.hashes()
    assert len(store.hashes()) == 6  # the copy shares root's hash


def test_stagnation_counts_experiments_since_the_best(store: Store) -> None:
    done(store, "a", 2.0, now=1.0)
    assert store.finished_since_best(0) == 0
    done(store, "b", 2.5, now=2.0, parent="a")
    store.add(make("c", "a"))
    store.record_result("c", status=Status.CRASHED, metrics={}, now=3.0)
    assert store.finished_since_best(0) == 2
    done(store, "d", 1.5, now=4.0, parent="a")
    assert store.finished_since_best(0) == 0


def test_meta(store: Store) -> None:
    assert store.get_meta("seed") is None
    assert store.get_meta("seed", "0") == "0"
    store.set_meta("seed", "42")
    store.set_meta("seed", "43")
    assert store.get_meta("seed") == "43"


def test_newer_schema_is_refused(tmp_path) -> None:
    path = tmp_path / "store.sqlite"
    Store.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    for readonly in (False, True):
        with pytest.raises(StoreError, match="newer"):
            Store.open(path, readonly=readonly)


def test_one_writer_and_live_readers(tmp_path) -> None:
    path = tmp_path / "store.sqlite"
    with pytest.raises(FileNotFoundError):
        Store.open(path, readonly=True)
    writer = Store.open(path)
    with pytest.raises(StoreError, match="already open for writing"):
        Store.open(path)
    reader = Store.open(path, readonly=True)
    writer.add(make("a"))
    assert reader.get("a").status is Status.PROPOSED
    writer.set_status("a", Status.RUNNING)
    assert reader.unfinished()[0].status is Status.RUNNING
    with pytest.raises(StoreError, match="read-only"):
        reader.add(make("b"))
    writer.close()
    assert reader.count() == 1
    reader.close()
    Store.open(path).close()  # the lock went with the writer


def test_per_experiment_queries_read_only_indexes(store: Store) -> None:
    """The queries the controller runs per experiment search covering indexes; full rows
    (with their sources) are read by primary key for the few candidates returned only."""
    done(store, "root", 3.0, now=1.0)
    for i in range(20):
        done(store, f"c{i}", 2.0 + i / 100, now=2.0 + i, parent="root", island=i % 2)
    store.reseed(1, ["root"], now=30.0)
    traced: list[str] = []
    store._conn.set_trace_callback(traced.append)
    store.survivors(1, 4)
    store.best()
    store.best(0)
    store.has_hash("0" * 64)
    store.children_of("root")
    store.count(Status.DONE)
    store.count()
    store.recent_failures(3)
    store.recent_finished(48)
    store.finished_since_best(0)
    store.lost_count("c1")
    store.hashes()
    store._conn.set_trace_callback(None)
    selects = [sql for sql in traced if sql.startswith("SELECT") and "candidates" in sql]
    assert len(selects) >= 12
    for sql in selects:
        sql = sql.replace("-Inf", "-1e999")  # the trace prints an unbound -inf this way
        plan = [row[-1] for row in store._conn.execute("EXPLAIN QUERY PLAN " + sql)]
        touching = [step for step in plan if "candidates" in step]
        full_load = sql.startswith("SELECT seq, id, parent_id")
        for step in touching:
            if full_load:
                assert "PRIMARY KEY" in step, (sql, plan)
            else:
                assert "COVERING INDEX" in step, (sql, plan)


def test_sources_decoded_once_are_handed_out_as_copies(store: Store) -> None:
    """A candidate's sources never change once stored, so the store decodes them once; what
    it hands out is still each caller's own (editing one answer changes no other)."""
    done(store, "root", 3.0, now=1.0)
    first = store.get("root")
    first.files["train.py"] = "edited by a caller\n"  # type: ignore[index]
    again, best = store.get("root"), store.best()
    assert again.files == {"train.py": "X = 'root'\n"} and best is not None
    assert best.files == again.files and best.files is not again.files
    for i in range(600):  # more than the store keeps: the oldest are read again, unchanged
        store.add(make(f"c{i}", "root", source=f"Y = {i}\n"))
    assert [c.files["train.py"] for c in store.children_of("root")][::199] == \
        ["Y = 0\n", "Y = 199\n", "Y = 398\n", "Y = 597\n"]
    assert store.get("root").files == {"train.py": "X = 'root'\n"}


def test_final_candidates_are_read_once_and_the_rest_every_time(store: Store) -> None:
    """A final row never changes, so the store keeps final candidates and reads only the
    others again; what it hands out stays each caller's own."""
    for i in range(5):
        done(store, f"d{i}", 2.0 - i / 10, now=float(i + 1))
    store.add(make("p", "d0"))
    with Store.open(store.path, readonly=True) as reader:  # a live run's reader, fresh
        traced: list[str] = []
        reader._conn.set_trace_callback(traced.append)
        first = reader.survivors(0, 3)
        assert [c.id for c in first] == ["d4", "d3", "d2"]
        assert len([sql for sql in traced if sql.startswith("SELECT seq, id, parent_id")]) == 1
        traced.clear()
        again = reader.survivors(0, 3)
        assert again == first and not [sql for sql in traced if sql.startswith("SELECT seq, id")]
        again[0].metrics["val_bpb"] = 9.0  # type: ignore[index]
        assert reader.get("d4").val_bpb == 1.6 and reader.best().id == "d4"
        assert reader.get("p").status is Status.PROPOSED
        store.set_status("p", Status.RUNNING)  # the writer moves it on
        assert reader.get("p").status is Status.RUNNING  # not final: read again
        store.record_result("p", status=Status.DONE, metrics={"val_bpb": 1.0}, now=9.0)
        assert reader.get("p").val_bpb == 1.0 and reader.best().id == "p"
        reader._conn.set_trace_callback(None)
    assert store.get("p").val_bpb == 1.0 and store.best().id == "p"


def test_refused_and_abandoned_attempts_are_history_but_not_lost(store: Store) -> None:
    store.add(make("a"))
    store.set_status("a", Status.RUNNING)
    for outcome in ("refused", "abandoned", "lost"):
        attempt = store.start_attempt("a", worker="w", node="n", device="cpu", now=1.0)
        store.finish_attempt(attempt, outcome=outcome, reason=outcome, now=2.0)
    assert [a.outcome for a in store.attempts("a")] == ["refused", "abandoned", "lost"]
    assert store.lost_count("a") == 1
    with pytest.raises(ValueError, match="outcome must be one of"):
        store.finish_attempt(store.start_attempt("a", worker="w", node="n", device="cpu"),
                             outcome="vanished")


def test_requeue_puts_a_stopped_running_candidate_back_to_proposed(store: Store) -> None:
    store.add(make("a"))
    with pytest.raises(StatusError, match="only a running candidate"):
        store.requeue("a")
    store.set_status("a", Status.RUNNING)
    attempt = store.start_attempt("a", worker="w", node="n", device="cpu")
    with pytest.raises(StatusError, match="still has a running attempt"):
        store.requeue("a")
    store.finish_attempt(attempt, outcome="abandoned", reason="second stop")
    again = store.requeue("a", reason="second stop")
    assert again.status is Status.PROPOSED and again.reason == "second stop"
    assert [c.id for c in store.unfinished()] == ["a"] and store.count(Status.RUNNING) == 0
    store.set_status("a", Status.RUNNING)
    store.record_result("a", status=Status.CRASHED, metrics={})
    with pytest.raises(StatusError):
        store.requeue("a")
    with pytest.raises(KeyError, match="nope"):
        store.requeue("nope")
