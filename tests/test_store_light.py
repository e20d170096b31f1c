"""A resume reads what its statistics need, not every source: light candidates and one query
for the islands' first devices, checked against the whole rows on real SQLite files (a current
store, and a version-1 store opened read-only, whose newer columns are derived)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from evolve.controller.devices import first_types
from population.candidate import Candidate, Status
from population.store import Store

sys.path.insert(0, str(Path(__file__).parent))
from test_store_migration import old_run  # noqa: E402

LONG = ("files", "diff", "raw_answer", "applied_edit", "log_tail")


def _store(tmp_path: Path) -> Store:
    """Root, children on two islands (done, crashed, rejected, still running), a migration
    copy; attempts on devices of three types, the first on island 1 refused (on an L4)."""
    store = Store.open(tmp_path / "store.sqlite")
    source = "x = 1\n" * 500
    store.add(Candidate(id="root", parent_id=None, island=0, generation=0,
                        files={"train.py": source}))
    attempt = store.start_attempt("root", worker="w0", node="n0", device="H100", now=1.0)
    store.finish_attempt(attempt, outcome="done", now=2.0)
    store.record_result("root", status=Status.DONE, metrics={"val_bpb": 1.5}, now=2.0)
    plan = [("c1", 1, Status.DONE, {"val_bpb": 1.4}, "A100"),
            ("c2", 0, Status.CRASHED, {}, "H100"),
            ("c3", 1, Status.DONE, {"val_bpb": 1.45}, "A100"),
            ("c4", 0, Status.RUNNING, {}, "H100")]
    for n, (cid, island, status, metrics, gpu) in enumerate(plan):
        store.add(Candidate(id=cid, parent_id="root", island=island, generation=1,
                            files={"train.py": source + f"y = {n}\n"}, diff=f"+y = {n}\n",
                            raw_answer="answer " * 200, applied_edit="edit", mutator="llm",
                            model="m", description=f"try {n}"))
        if cid == "c1":  # a refused attempt first: it still binds the island (first attempt)
            first = store.start_attempt(cid, worker="w9", node="n9", device="L4", now=3.0)
            store.finish_attempt(first, outcome="refused", now=3.5)
        attempt = store.start_attempt(cid, worker="w1", node="n1", device=gpu,
                                      now=4.0 + n)
        if status is not Status.RUNNING:
            store.finish_attempt(attempt, outcome=status.value, now=5.0 + n)
            store.record_result(cid, status=status, metrics=metrics, log_tail="tail " * 100,
                                now=5.0 + n)
    store.add(Candidate(id="c5", parent_id="root", island=0, generation=1,
                        files={"train.py": "def train(:\n"}, status=Status.REJECTED,
                        reason="syntax"))
    store.add_copy("c1", 0, now=20.0)
    return store


def _whole_minus_long(candidate: Candidate) -> Candidate:
    return dataclasses.replace(candidate, files={}, diff="", raw_answer="", applied_edit="",
                               log_tail="")


def test_light_candidates_are_the_whole_rows_without_their_long_columns(tmp_path: Path) -> None:
    with _store(tmp_path) as store:
        for options in ({}, {"include_copies": True}, {"include_rejected": True}):
            whole = store.finished_in_order(**options)
            light = store.finished_in_order(**options, sources=False)
            assert [c.id for c in light] == [c.id for c in whole] and light
            assert light == [_whole_minus_long(c) for c in whole]
            assert all(not getattr(c, field) for c in light for field in LONG)
        assert any(c.raw_answer and c.log_tail for c in store.finished_in_order())
        # a light copy is the caller's: changing it changes nothing the store keeps
        store.finished_in_order(sources=False)[0].metrics["val_bpb"] = -1.0
        assert store.finished_in_order()[0].metrics["val_bpb"] == 1.5


def test_attempt_islands_is_every_experiments_attempts_in_one_query(tmp_path: Path) -> None:
    with _store(tmp_path) as store:
        everyone = [*store.finished_in_order(include_copies=True, include_rejected=True),
                    *store.unfinished()]
        per_candidate = sorted((a.id, c.island, a.device) for c in everyone
                               if c.mutator != "migration" for a in store.attempts(c.id))
        assert store.attempt_islands() == per_candidate
        assert len(per_candidate) == 6  # the copy never ran; the refused attempt is there
        assert first_types(store.attempt_islands()) == {0: "H100", 1: "L4"}


def test_an_old_store_read_only_gives_light_candidates_too(tmp_path: Path) -> None:
    run_dir = old_run(tmp_path)
    with Store.open(run_dir.store_path, readonly=True) as store:
        whole = store.finished_in_order(include_copies=True)
        light = store.finished_in_order(include_copies=True, sources=False)
        assert light == [_whole_minus_long(c) for c in whole] and len(light) == 3
        assert [c.sandbox_problem for c in light] == [c.sandbox_problem for c in whole]
        assert first_types(store.attempt_islands()) == {0: "cpu"}
