"""The population port (population/port.py) on both backends — the SQLite store the shell
uses and the memory one the simulator uses — held to one contract: the greedy keep/revert
loop, seeding, migration and re-seeding."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from population.candidate import Candidate, Status
from population.port import MemoryPopulation, StorePopulation
from population.result import Result
from population.selection import make_selector
from population.store import Store


class Backend:
    """One backend behind the port, with the two writes the controller makes around it:
    adding a proposed child, and (once) the root."""

    def __init__(self, kind: str, tmp_path: Path, strategy: str, size: int, islands: int,
                 patience: int = 0) -> None:
        selector = make_selector(strategy)
        self.kind = kind
        if kind == "store":
            self.store = Store.open(tmp_path / "s.sqlite")
            self.pop = StorePopulation(self.store, selector, size=size, islands=islands,
                                       stagnation_reseed_after=patience)
        else:
            self.pop = MemoryPopulation(selector, size=size, islands=islands,
                                        stagnation_reseed_after=patience)
        self.made: dict[str, Candidate] = {}

    def add(self, cid: str, parent_id: str | None, island: int, now: float) -> None:
        candidate = Candidate(id=cid, parent_id=parent_id, island=island,
                              generation=0 if parent_id is None else 1,
                              files={"train.py": f"X = '{cid}'\n"}, created_at=now)
        self.made[cid] = candidate
        if self.kind == "store":
            self.store.add(candidate)
            self.store.set_status(cid, Status.RUNNING)
        else:
            self.pop.add(candidate)

    def record(self, cid: str, bpb: float | None, now: float, status: Status = Status.DONE,
               reason: str = "") -> tuple[Candidate, str]:
        metrics = {} if bpb is None else {"val_bpb": bpb}
        return self.pop.record(Result(cid, status, metrics, reason), now)

    def root(self) -> Candidate:
        self.add("root", None, 0, 0.0)
        return self.record("root", 2.0, 1.0)[0]

    def island_of(self, cid: str) -> int:
        if self.kind == "store":
            return self.store.get(cid).island
        return next(i for i, s in enumerate(self.pop.survivors) if any(c.id == cid for c in s))

    def survivor_scores(self, island: int) -> list[float]:
        if self.kind == "store":
            return [c.val_bpb for c in self.store.survivors(island, self.pop.size)]
        return [c.val_bpb for c in self.pop.survivors[island]]

    def close(self) -> None:
        if self.kind == "store":
            self.store.close()


@pytest.fixture(params=["store", "memory"])
def backend(request, tmp_path):
    made: list[Backend] = []

    def make(strategy: str, size: int, islands: int, patience: int = 0) -> Backend:
        made.append(Backend(request.param, tmp_path, strategy, size, islands, patience))
        return made[-1]

    yield make
    for b in made:
        b.close()


def test_greedy_is_the_one_agent_keep_revert_loop(backend) -> None:
    b = backend("greedy", size=8, islands=1)
    assert b.pop.size == 1
    # before the root's result is recorded (held for its noise re-runs, say) children come
    # from the root itself
    assert b.pop.choose_parent(0, random.Random(0)) == "root"
    b.root()
    rng = random.Random(0)
    assert b.pop.choose_parent(0, rng) == "root"
    # two children of the root are in flight at once
    b.add("a", "root", 0, 2.0)
    b.add("b", "root", 0, 2.0)
    stored, kept = b.record("a", 1.8, 3.0)
    assert kept == "keep" and stored.metrics["kept"] is True and b.pop.choose_parent(0, rng) == "a"
    # b beats the root it came from but not the champion when it arrives: reverted
    stored, kept = b.record("b", 1.9, 4.0)
    assert kept == "discard" and stored.metrics["kept"] is False
    assert b.pop.choose_parent(0, rng) == "a"
    b.add("tie", "a", 0, 5.0)
    assert b.record("tie", 1.8, 6.0)[1] == "discard"
    b.add("boom", "a", 0, 7.0)
    result, kept = b.record("boom", None, 8.0, Status.CRASHED, reason="oom")
    assert kept == "crash" and result.reason == "oom" and result.status is Status.CRASHED
    assert b.pop.choose_parent(0, rng) == "a"


def test_islands_seed_then_migrate_inside_their_group(backend) -> None:
    b = backend("rank", size=2, islands=3)
    root = b.root()
    seeded = b.pop.seed(root, 1.0)
    assert sorted(c.island for c in seeded) == [1, 2]
    assert all(c.mutator == "migration" and c.parent_id == "root" for c in seeded)
    assert b.pop.seed(root, 1.5) == []  # idempotent on resume
    for island in range(3):
        assert b.island_of(b.pop.choose_parent(island, random.Random(island))) == island
    b.add("i1", seeded[0].id, 1, 2.0)
    b.record("i1", 1.0, 2.0)
    migrants = b.pop.migrate([[0, 1, 2]], 3.0)
    # i1 moves on to island 2; the root copies of islands 0 and 2 are skipped: the same
    # program already lives on the next island
    assert [(m.parent_id, m.island, m.mutator) for m in migrants] == [("i1", 2, "migration")]
    assert migrants[0].val_bpb == 1.0 and migrants[0].files == b.made["i1"].files
    assert b.survivor_scores(2)[0] == 1.0
    # groups: copies move only between islands of one group (device types)
    assert b.pop.migrate([[0], [1], [2]], 4.0) == []


def test_stagnant_island_is_reseeded_from_the_best(backend) -> None:
    b = backend("tournament", size=2, islands=2, patience=2)
    root = b.root()
    (seed,) = b.pop.seed(root, 1.0)
    b.add("good", "root", 0, 2.0)
    b.record("good", 1.0, 2.0)
    assert b.pop.reseed([[0, 1]], 2.0) == []
    for i, t in enumerate((3.0, 4.0)):
        b.add(f"bad{i}", seed.id, 1, t)
        b.record(f"bad{i}", 3.0, t)
    copies = b.pop.reseed([[0, 1]], 5.0)
    assert sorted(c.parent_id for c in copies) == ["good", "root"]
    assert {c.island for c in copies} == {1}
    assert b.survivor_scores(1) == [1.0, 2.0]
    assert b.pop.reseed([[0, 1]], 6.0) == []  # the new population has not stagnated yet
    assert b.pop.reseed([[0], [1]], 6.0) == []  # a group of one is never re-seeded


def test_the_shell_builds_its_port_from_the_config(tmp_path: Path) -> None:
    from test_controller_shell import make_config, make_template

    from evolve.controller.wiring import store_population

    config = make_config(make_template(tmp_path, 0.1),
                         population={"size": 6, "islands": 3, "stagnation_reseed_after": 7},
                         selection={"strategy": "rank", "tournament_size": 2, "rank_power": 1.5})
    with Store.open(tmp_path / "s.sqlite") as store:
        pop = store_population(store, config.selection, config.population)
        assert (pop.size, pop.islands, pop.patience, pop.root_id) == (6, 3, 7, "root")
        assert pop.selector.name == "rank" and pop.selector.power == 1.5
