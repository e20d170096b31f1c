"""Islands: seeding, ring migration, re-seeding, and a seeded mini-evolution on a real store."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from population.candidate import Candidate, Status
from population.islands import (
    Copy,
    Reseed,
    child_island,
    least_busy_island,
    migration_due,
    plan_migration,
    plan_reseeds,
    plan_seeding,
)
from population.selection import make_selector, proposal_rng
from population.store import Store
from population.survival import verdict

REPO = Path(__file__).resolve().parent.parent


def scored(cid: str, bpb: float, island: int, source: str | None = None) -> Candidate:
    return Candidate(id=cid, parent_id=None, island=island, generation=0,
                     files={"train.py": source or f"X = '{cid}'\n"}, status=Status.DONE,
                     metrics={"val_bpb": bpb}, finished_at=1.0)


def test_children_stay_home_and_islands_share_workers() -> None:
    assert child_island(scored("p", 1.0, 3)) == 3
    assert least_busy_island([2, 1, 1, 3]) == 1
    assert least_busy_island([0]) == 0
    with pytest.raises(ValueError):
        least_busy_island([])


def test_seeding_copies_the_root_everywhere_else() -> None:
    root = scored("root", 3.0, 0)
    assert plan_seeding(root, 3) == [Copy("root", 0, 1, "seed"), Copy("root", 0, 2, "seed")]
    assert plan_seeding(root, 1) == []


def test_migration_is_due_every_interval() -> None:
    assert not migration_due(9, 0, 10) and migration_due(10, 0, 10)
    assert not migration_due(15, 10, 10) and migration_due(21, 10, 10)
    assert not migration_due(1000, 0, 0)


def test_ring_migration_moves_each_best_to_the_next_island() -> None:
    islands = [[scored("a0", 1.0, 0), scored("a1", 2.0, 0)],
               [scored("b0", 1.5, 1)],
               [scored("c0", 0.5, 2), scored("c1", 0.7, 2)]]
    assert plan_migration(islands, size=2) == [
        Copy("a0", 0, 1, "migration"),        # island 1 has room
        Copy("c0", 2, 0, "migration"),        # wraps around; beats a1
    ]  # b0 (1.5) would not survive on island 2 (0.5, 0.7)
    assert plan_migration(islands, size=3)[1] == Copy("b0", 1, 2, "migration")
    same = [[scored("x", 1.0, 0, "Y = 1\n")], [scored("y", 2.0, 1, "Y = 1\n")]]
    assert plan_migration(same, size=1) == []  # the same program is already there
    assert plan_migration(islands[:1], size=2) == []
    assert plan_migration([[], islands[1]], size=2) == [Copy("b0", 1, 0, "migration")]


def test_stagnant_islands_restart_from_the_best_island() -> None:
    islands = [[scored("a0", 1.0, 0)], [scored("b0", 0.5, 1), scored("b1", 0.6, 1)],
               [scored("c0", 2.0, 2)], []]
    assert plan_reseeds([5, 9, 1, 7], islands, patience=5) == [
        Reseed(0, 1, ("b0", "b1")), Reseed(3, 1, ("b0", "b1"))]  # never the leader itself
    assert plan_reseeds([5, 9, 1, 7], islands, patience=0) == []  # off
    tied = [[scored("a0", 1.0, 0)], [scored("b0", 1.0, 1)]]
    assert plan_reseeds([9, 9], tied, patience=1) == []  # no better island to learn from


def evolve(path: Path, seed: int, strategy: str,
           experiments: int = 36) -> tuple[list[tuple], list[tuple]]:
    """A miniature steady-state loop over the real store, with scores from a seeded RNG."""
    islands, interval, patience = 3, 9, 4
    selector = make_selector(strategy, tournament_size=2)
    size = selector.population_size(3)
    score_rng = random.Random(seed)
    verdicts = []
    with Store.open(path) as store:
        root = Candidate(id="root", parent_id=None, island=0, generation=0,
                         files={"train.py": "LR = 0\n"}, created_at=0.0)
        store.add(root)
        store.record_result("root", status=Status.DONE, metrics={"val_bpb": 3.0}, now=0.0)
        for number, copy in enumerate(plan_seeding(store.get("root"), islands)):
            store.add_copy(copy.source_id, copy.to_island, new_id=f"seed{number}", now=0.0)
        last_migration = 0
        for i in range(1, experiments + 1):
            rng = proposal_rng(seed, i)
            island = (i - 1) % islands
            parent = selector.select(store.survivors(island, size), rng)
            child = Candidate(id=f"c{i}", parent_id=parent.id, island=child_island(parent),
                              generation=parent.generation + 1,
                              files={"train.py": f"LR = {i}\n"}, created_at=float(i))
            store.add(child)
            before = store.survivors(child.island, size)
            result = store.record_result(
                child.id, status=Status.DONE, now=float(i),
                metrics={"val_bpb": parent.val_bpb - score_rng.uniform(-0.3, 0.1)})
            verdicts.append((child.id, parent.id, verdict(result, before, size)))
            if migration_due(i, last_migration, interval):
                last_migration = i
                snapshot = [store.survivors(k, size) for k in range(islands)]
                for copy in plan_migration(snapshot, size):
                    store.add_copy(copy.source_id, copy.to_island, now=float(i))
            stagnation = [store.finished_since_best(k) for k in range(islands)]
            snapshot = [store.survivors(k, size) for k in range(islands)]
            for plan in plan_reseeds(stagnation, snapshot, patience):
                store.reseed(plan.island, plan.source_ids, now=float(i))
                verdicts.append(("reseed", plan.island, plan.from_island))
        rows = [(c.id, c.parent_id, c.island, c.val_bpb) for c in
                store.finished_in_order(include_copies=True)]
        # every lineage walks back to the root, through any migrations
        for candidate in store.finished_in_order(include_copies=True):
            assert store.lineage(candidate.id)[0].id == "root"
    return verdicts, rows


@pytest.mark.parametrize("strategy", ["greedy", "tournament", "rank"])
def test_a_seeded_run_replays_exactly(tmp_path: Path, strategy: str) -> None:
    verdicts, rows = evolve(tmp_path / "a.sqlite", 3, strategy)
    assert evolve(tmp_path / "b.sqlite", 3, strategy) == (verdicts, rows)
    assert evolve(tmp_path / "c.sqlite", 4, strategy) != (verdicts, rows)
    assert {v[2] for v in verdicts if v[0] != "reseed"} == {"keep", "discard"}
    assert any(v[0] == "reseed" for v in verdicts)
    copies = [row for row in rows if "@" in row[0]]  # migrations and re-seeds happened
    assert copies and all(row[3] is not None for row in copies)


def test_importing_population_pulls_in_no_heavy_dependency() -> None:
    code = ("import sys, population, population.store, population.selection, "
            "population.survival, population.islands, population.candidate, population.port, "
            "population.budget, population.outcomes, population.result\n"
            "print(sorted(m for m in ('ray', 'torch', 'anthropic', 'httpx', 'numpy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
