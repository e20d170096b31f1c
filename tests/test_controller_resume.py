"""Rebuilding the core's state from a store with history (real SQLite)."""

from __future__ import annotations

import random

from test_controller_shell import make_config, make_template

from evolve.controller.core import Run, Scheduler, WorkerJoined
from evolve.controller.recovery import RESUME_LOST, recover
from evolve.controller.wiring import operator_names, settings_from_config, store_population
from population.candidate import Candidate, Status
from population.store import Store


def child(cid: str, parent: str = "root", island: int = 0) -> Candidate:
    return Candidate(id=cid, parent_id=parent, island=island, generation=1,
                     files={"train.py": f"X = '{cid}'\n"}, created_at=1.0)


def test_recover_requeues_running_first_and_gives_up_on_the_lost_too_often(tmp_path):
    with Store.open(tmp_path / "s.sqlite") as store:
        store.add(Candidate(id="root", parent_id=None, island=0, generation=0,
                            files={"train.py": "X = 0\n"}))
        store.record_result("root", status=Status.DONE, metrics={"val_bpb": 1.5})
        for cid in ("waiting", "was_running", "cursed"):
            store.add(child(cid, island=1 if cid == "was_running" else 0))
        for cid in ("was_running", "cursed"):
            store.set_status(cid, Status.RUNNING)
        store.finish_attempt(store.start_attempt("was_running", worker="w0", node="n", device="cpu"),
                             outcome="lost", reason="node died")
        store.start_attempt("was_running", worker="w1", node="n", device="cpu")  # killed controller
        for _ in range(2):
            attempt = store.start_attempt("cursed", worker="w0", node="n", device="cpu")
            store.finish_attempt(attempt, outcome="lost", reason="OOM")
        store.start_attempt("cursed", worker="w0", node="n", device="cpu")
        store.set_meta("next_ticket", "40")
        store.set_meta("elapsed_s", "123.5")

        history = recover(store, "root", max_lost_attempts=2)

        assert [a.outcome for a in store.attempts("was_running")] == ["lost", "lost"]
        assert store.attempts("was_running")[-1].reason == RESUME_LOST
        cursed = store.get("cursed")
        assert cursed.status is Status.CRASHED and "3 times" in cursed.reason
        assert history.queued == [("was_running", 1), ("waiting", 0)]
        assert history.lost_counts == {"was_running": 2}
        assert history.attempts == {"was_running": 2}
        assert history.finished == 2 and history.root_done and history.best_val_bpb == 1.5
        assert history.proposals_made == 40 and history.elapsed_s == 123.5

        config = make_config(make_template(tmp_path, 0.1), population={"islands": 2})
        parents = store_population(store, config.selection, config.population)
        core = Scheduler(settings_from_config(config), parents, "root",
                         history=history)
        out = core.handle(WorkerJoined(worker_id="w9", now=0.0))
        assert [d for d in out if isinstance(d, Run)] == [Run("was_running", "w9", 3)]


def test_store_parents_fall_back_to_the_best_for_an_empty_island(tmp_path):
    config = make_config(make_template(tmp_path, 0.1), population={"islands": 2, "size": 2})
    with Store.open(tmp_path / "s.sqlite") as store:
        store.add(Candidate(id="root", parent_id=None, island=0, generation=0,
                            files={"train.py": "X = 0\n"}))
        store.record_result("root", status=Status.DONE, metrics={"val_bpb": 1.5})
        store.add(child("a"))
        store.record_result("a", status=Status.DONE, metrics={"val_bpb": 1.2})
        parents = store_population(store, config.selection, config.population)
        assert parents.choose_parent(1, random.Random(0)) == "a"
        assert parents.choose_parent(0, random.Random(0)) in ("a", "root")


def test_operator_names_number_repeated_kinds(tmp_path):
    config = make_config(make_template(tmp_path, 0.1), mutation={"operators": [
        {"kind": "heuristic", "weight": 1.0}, {"kind": "llm", "weight": 2.0, "model": "a", "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 5.0},
        {"kind": "llm", "weight": 0.5, "model": "b", "tokens_per_minute": 50000, "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 5.0}]})
    assert operator_names(config) == ["heuristic", "llm0", "llm1"]
    settings = settings_from_config(config)
    assert list(settings.operators) == [("heuristic", 1.0), ("llm0", 2.0), ("llm1", 0.5)]
    assert settings.tokens_per_minute == 50000
    assert settings.max_lost_attempts == 2 and settings.seed == 3


def test_recover_charges_only_lost_attempts_and_reruns_abandoned_ones_first(tmp_path):
    with Store.open(tmp_path / "s.sqlite") as store:
        store.add(Candidate(id="root", parent_id=None, island=0, generation=0,
                            files={"train.py": "X = 0\n"}))
        store.record_result("root", status=Status.DONE, metrics={"val_bpb": 1.5})
        for cid in ("waiting", "stopped_twice", "refused_often"):
            store.add(child(cid))
        # Three deliberate stops and one worker loss: within max_lost_attempts=1.
        store.set_status("stopped_twice", Status.RUNNING)
        for outcome in ("abandoned", "lost", "abandoned", "abandoned"):
            attempt = store.start_attempt("stopped_twice", worker="w0", node="n", device="cpu")
            store.finish_attempt(attempt, outcome=outcome, reason=outcome)
        store.requeue("stopped_twice", reason="abandoned")
        # Refused by three workers with another harness, then left running by a kill -9.
        store.set_status("refused_often", Status.RUNNING)
        for _ in range(3):
            attempt = store.start_attempt("refused_often", worker="w1", node="n", device="cpu")
            store.finish_attempt(attempt, outcome="refused", reason="refused: harness differs")
        store.start_attempt("refused_often", worker="w2", node="n", device="cpu")

        history = recover(store, "root", max_lost_attempts=1)

        assert store.get("stopped_twice").status is Status.PROPOSED
        assert store.get("refused_often").status is Status.RUNNING
        assert store.attempts("refused_often")[-1].outcome == "lost"  # the kill -9 still counts
        assert history.lost_counts == {"stopped_twice": 1, "refused_often": 1}
        # What had started runs again before what never did.
        assert history.queued == [("stopped_twice", 0), ("refused_often", 0), ("waiting", 0)]
        assert history.attempts == {"stopped_twice": 4, "refused_often": 4}
        assert [c.id for c in store.unfinished()] == ["waiting", "stopped_twice", "refused_often"]
