"""The shell's in-memory indexes answer exactly as the store would (real SQLite)."""

from __future__ import annotations

from evolve.controller.store_index import StoreIndex
from evolve.mutate.notebook import tried_with_outcomes as tried_on_parent
from population.candidate import Candidate, Status
from population.store import Store


def test_memory_matches_the_store(tmp_path):
    with Store.open(tmp_path / "s.sqlite") as store:
        memory = StoreIndex(store)

        def add(cid: str, parent: str | None, generation: int) -> None:
            c = Candidate(id=cid, parent_id=parent, island=0, generation=generation,
                          files={"train.py": f"X = {cid!r}\n"}, description=f"make {cid}")
            store.add(c)
            memory.note(store.get(cid))

        def finish(cid: str, status: Status, bpb: float | None = None) -> None:
            metrics = {"val_bpb": bpb} if bpb is not None else {}
            memory.note(store.record_result(cid, status=status, metrics=metrics, reason="boom"))

        add("root", None, 0)
        finish("root", Status.DONE, 1.5)
        add("a", "root", 1)
        root = store.get("root")
        assert memory.tried_on(root) == tried_on_parent(store, "root")  # read from the store once
        finish("a", Status.DONE, 1.4)
        add("b", "root", 1)
        add("c", "root", 1)
        finish("c", Status.CRASHED)
        add("a1", "a", 2)
        finish("a1", Status.DONE, 1.3)
        add("a2", "a1", 3)
        assert memory.tried_on(root) == tried_on_parent(store, "root")
        assert len(memory.tried_on(root)) == 3
        a2 = store.get("a2")
        assert [c.id for c in memory.lineage(a2)] == [c.id for c in store.lineage("a2")]
        assert memory.lineage(a2)[1].val_bpb == 1.4


def test_deep_lineages_from_kept_chains_match_the_store(tmp_path):
    """Chains kept per final parent (and extended from the nearest one kept) give the store's
    lineage for every candidate of a deep random tree, migration copies and children still
    running included; the generation shown counts the same edits as a walk would."""
    import random

    from evolve.controller import store_index
    from population.store import MIGRATION, edits_from_seed

    rng = random.Random(4)
    with Store.open(tmp_path / "s.sqlite") as store:
        memory = StoreIndex(store)
        ids = ["root"]
        store.add(Candidate(id="root", parent_id=None, island=0, generation=0,
                            files={"train.py": "X = 0\n"}, status=Status.DONE,
                            metrics={"val_bpb": 2.0}))
        for i in range(1, 400):
            parent = ids[-1] if rng.random() < 0.8 else rng.choice(ids)
            running = rng.random() < 0.1
            store.add(Candidate(
                id=f"c{i}", parent_id=parent, island=0, generation=0,
                files={"train.py": f"X = {i}\n"}, mutator=MIGRATION if i % 7 == 0 else "llm",
                status=Status.PROPOSED if running else Status.DONE,
                metrics={} if running else {"val_bpb": 2.0 - i / 1000}))
            ids.append(f"c{i}")
        for cid in rng.sample(ids, 150) + ids[-20:]:
            candidate = store.get(cid)
            found = memory.lineage(candidate)
            truth = store.lineage(cid)
            assert [c.id for c in found] == [c.id for c in truth]
            assert edits_from_seed(found) == sum(1 for c in truth[1:] if c.mutator != MIGRATION)
        assert 0 < len(memory._chains) <= store_index.CHAINS_KEPT
        assert all(c.status.is_final for chain in memory._chains.values() for c in chain)
