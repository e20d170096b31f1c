"""Random search (selection.strategy: random): every child is made from the root."""

from __future__ import annotations

import random

from evolve.config import config_from_dict
from evolve.controller.wiring import store_population
from population.candidate import Candidate, Status
from population.selection import FromRoot, make_selector
from population.store import Store

FIXTURE = "tests/fixtures/sleep_template"


def done(cid: str, parent: str | None, bpb: float, generation: int) -> Candidate:
    return Candidate(id=cid, parent_id=parent, island=0, generation=generation,
                     files={"train.py": f"x = {cid!r}\n"}, status=Status.DONE,
                     metrics={"val_bpb": bpb}, created_at=1.0, finished_at=1.0)


def test_random_search_always_picks_the_root_even_when_it_left_the_population(tmp_path):
    config = config_from_dict({"name": "r", "template": FIXTURE, "profile": "cpu-micro",
                               "population": {"size": 2, "islands": 1},
                               "selection": {"strategy": "random"}})
    with Store.open(tmp_path / "store.sqlite") as store:
        store.add(done("root", None, 2.0, 0))
        store.add(done("c1", "root", 1.5, 1))
        store.add(done("c2", "c1", 1.4, 2))
        assert "root" not in [c.id for c in store.survivors(0, 2)]
        parents = store_population(store, config.selection, config.population)
        assert {parents.choose_parent(0, random.Random(i)) for i in range(20)} == {"root"}


def test_the_selector_prefers_the_lineage_start():
    selector = make_selector("random")
    assert isinstance(selector, FromRoot)
    survivors = [done("c2", "c1", 1.4, 2), done("root", None, 2.0, 0)]
    assert selector.select(survivors, random.Random(0)).id == "root"
