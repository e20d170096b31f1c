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
