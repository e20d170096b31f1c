"""StorePopulation on a real store: the greedy keep/revert loop, seeding, migration, resume."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from population.candidate import Candidate, Status
from population.store import Store
from population.store_population import IslandRules, StorePopulation


def child(store: Store, cid: str, parent_id: str, now: float) -> Candidate:
    parent = store.get(parent_id)
    candidate = Candidate(id=cid, parent_id=parent_id, island=parent.island,
                          generation=parent.generation + 1,
                          files={"train.py": f"X = '{cid}'\n"}, created_at=now)
    store.add(candidate)
    store.set_status(cid, Status.RUNNING)
    return candidate


def root(store: Store) -> None:
    store.add(Candidate(id="root", parent_id=None, island=0, generation=0,
                        files={"train.py": "X = 0\n"}, created_at=0.0))
    store.record_result("root", status=Status.DONE, metrics={"val_bpb": 2.0}, now=1.0)


def test_greedy_is_the_one_agent_keep_revert_loop(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite") as store:
        pop = StorePopulation(store, IslandRules(strategy="greedy", size=8))
        assert pop.size == 1
        with pytest.raises(LookupError, match="root"):
            pop.choose_parent(0, random.Random(0))
        root(store)
        rng = random.Random(0)
        assert pop.choose_parent(0, rng) == "root"
        # two children of the root are in flight at once
        child(store, "a", "root", 2.0)
        child(store, "b", "root", 2.0)
        _, kept = pop.record("a", status=Status.DONE, metrics={"val_bpb": 1.8}, now=3.0)
        assert kept == "keep" and pop.choose_parent(0, rng) == "a"
        # b beats the root it came from but not the champion when it arrives: reverted
        _, kept = pop.record("b", status=Status.DONE, metrics={"val_bpb": 1.9}, now=4.0)
        assert kept == "discard" and pop.choose_parent(0, rng) == "a"
        child(store, "tie", "a", 5.0)
        assert pop.record("tie", status=Status.DONE, metrics={"val_bpb": 1.8}, now=6.0)[1] == \
            "discard"
        child(store, "boom", "a", 7.0)
        result, kept = pop.record("boom", status=Status.CRASHED, metrics={}, reason="oom", now=8.0)
        assert kept == "crash" and result.reason == "oom"
        assert pop.choose_parent(0, rng) == "a"


def test_islands_seed_migrate_and_keep_the_rhythm_across_resume(tmp_path: Path) -> None:
    rules = IslandRules(strategy="rank", size=2, islands=3, migration_interval=3)
    path = tmp_path / "s.sqlite"
    with Store.open(path) as store:
        pop = StorePopulation(store, rules)
        root(store)
        seeded = pop.seed_islands("root", now=1.0)
        assert sorted(c.island for c in seeded) == [1, 2]
        assert pop.seed_islands("root", now=1.5) == []  # idempotent on resume
        for island in range(3):
            assert store.get(pop.choose_parent(island, random.Random(island))).island == island
        child(store, "i1", seeded[0].id, 2.0)
        pop.record("i1", status=Status.DONE, metrics={"val_bpb": 1.0}, now=2.0)
        assert pop.upkeep(1, now=2.0) == [] and pop.upkeep(2, now=2.0) == []
        migrants = pop.upkeep(3, now=3.0)
        # i1 moves on to island 2; the root copies of islands 0 and 2 are skipped: the same
        # program already lives on the next island
        assert [(m.parent_id, m.island, m.mutator) for m in migrants] == [("i1", 2, "migration")]
        assert migrants[0].val_bpb == 1.0 and migrants[0].files == store.get("i1").files
    with Store.open(path) as store:  # resumed: the last migration is remembered
        pop = StorePopulation(store, rules)
        assert pop.upkeep(4, now=4.0) == [] and pop.upkeep(5, now=4.0) == []
        assert [m.island for m in pop.upkeep(6, now=5.0)] == [0]  # i1 wraps on to island 0
        assert store.best(0).val_bpb == 1.0
        assert store.count() == 2  # copies are not experiments


def test_stagnant_island_is_reseeded_from_the_best(tmp_path: Path) -> None:
    rules = IslandRules(strategy="tournament", size=2, islands=2, migration_interval=0,
                        stagnation_reseed_after=2)
    with Store.open(tmp_path / "s.sqlite") as store:
        pop = StorePopulation(store, rules)
        root(store)
        seed = pop.seed_islands("root", now=1.0)[0]
        child(store, "good", "root", 2.0)
        pop.record("good", status=Status.DONE, metrics={"val_bpb": 1.0}, now=2.0)
        assert pop.upkeep(1, now=2.0) == []
        for i, t in enumerate((3.0, 4.0)):
            child(store, f"bad{i}", seed.id, t)
            pop.record(f"bad{i}", status=Status.DONE, metrics={"val_bpb": 3.0}, now=t)
        copies = pop.upkeep(3, now=5.0)
        assert sorted(c.parent_id for c in copies) == ["good", "root"]
        assert {c.island for c in copies} == {1}
        assert [c.val_bpb for c in store.survivors(1, 2)] == [1.0, 2.0]
        assert pop.upkeep(4, now=6.0) == []  # the new population has not stagnated yet


def test_rules_from_the_config_sections() -> None:
    from evolve.config import PopulationConfig, SelectionConfig

    rules = IslandRules.of(
        PopulationConfig(size=6, islands=3, migration_interval=5, stagnation_reseed_after=7),
        SelectionConfig(strategy="rank", tournament_size=2, rank_power=1.5))
    assert rules == IslandRules("rank", 6, 3, 5, 7, 2, 1.5)
