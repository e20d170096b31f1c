"""Extra runs in the real SQLite store: queued, started, finished, lost ones kept."""

from __future__ import annotations

import sqlite3

import pytest

from population.candidate import Candidate
from population.extra_runs import job_candidate, job_id, parse_job_id
from population.store import Store


def test_extra_runs_round_trip_and_survive_reopen(tmp_path):
    path = tmp_path / "store.sqlite"
    with Store.open(path) as store:
        store.add(Candidate(id="root", parent_id=None, island=0, generation=0,
                            files={"train.py": "x = 1\n"}))
        run = store.add_extra_run("root", purpose="noise", seed=7, now=1.0)
        assert run.outcome == "queued" and run.splits == ("val",)
        store.start_extra_run(run.id, worker="w0", now=2.0)
        lost = store.finish_extra_run(run.id, outcome="lost", reason="node died", now=3.0)
        assert lost.val_bpb is None and lost.reason == "node died"
        again = store.add_extra_run("root", purpose="test", seed=7, splits=("val", "test"))
        store.start_extra_run(again.id, worker="w1")
        store.finish_extra_run(again.id, outcome="done",
                               metrics={"val_bpb": 1.5, "test_bpb": 1.6})
        with pytest.raises(KeyError, match="nope"):
            store.add_extra_run("nope", purpose="noise", seed=0)
        with pytest.raises(ValueError, match="purpose"):
            store.add_extra_run("root", purpose="other", seed=0)
    with Store.open(path, readonly=True) as store:
        runs = store.extra_runs("root")
        assert [(r.purpose, r.outcome) for r in runs] == [("noise", "lost"), ("test", "done")]
        assert runs[1].test_bpb == 1.6 and runs[1].splits == ("val", "test")
        assert store.extra_runs(purpose="test") == runs[1:]


def test_a_store_from_before_extra_runs_reads_empty_and_gains_the_table(tmp_path):
    path = tmp_path / "store.sqlite"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE extra_runs")
    conn.commit()
    conn.close()
    with Store.open(path, readonly=True) as store:
        assert store.extra_runs() == []
    with Store.open(path) as store:
        assert store.extra_runs() == []


def test_job_ids_name_the_run():
    assert parse_job_id(job_id("c00001", 12)) == 12
    assert parse_job_id("c00001") is None
    assert parse_job_id("root") is None
    assert job_candidate(job_id("root@i1.2", 3)) == "root@i1.2"
    assert job_candidate("c00001") == "c00001" and job_candidate("c@xy") == "c@xy"
