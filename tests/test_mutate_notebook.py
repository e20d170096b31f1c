"""The lab notebook and the prompt, built from a real SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from evolve.mutate.base import MutationContext
from evolve.mutate.notebook import (
    LabNotebook,
    build_notebook,
    tried_on_parent,
    tried_with_outcomes,
)
from evolve.mutate.prompt import PromptLimits, build_prompt
from population.candidate import Candidate, Status
from population.store import Store

SOURCE = "LR = 0.1\n\n\ndef train(ctx):\n    return None\n"


def done(cid: str, parent: str | None, bpb: float, island: int = 0, what: str = "",
         t: float = 0.0) -> Candidate:
    return Candidate(id=cid, parent_id=parent, island=island, generation=0 if parent is None else 1,
                     files={"train.py": SOURCE + f"ID = '{cid}'\n"}, status=Status.DONE,
                     metrics={"val_bpb": bpb}, description=what, created_at=t, finished_at=t)


@pytest.fixture
def store(tmp_path: Path):
    store = Store.open(tmp_path / "run.db")
    store.add(done("root", None, 1.50, what="seed", t=1))
    store.add(done("a", "root", 1.40, what="raise LR to 0.2", t=2))
    store.add(done("b", "a", 1.35, what="add warmup", t=3))
    store.add(done("c", "root", 1.55, island=1, what="halve depth", t=4))
    crashed = Candidate(id="x", parent_id="a", island=0, generation=2,
                        files={"train.py": "boom\n"}, description="fused attention",
                        created_at=5)
    store.add(crashed)
    store.set_status("x", Status.RUNNING)
    store.record_result("x", status=Status.CRASHED, metrics={}, reason="exit code 1",
                        log_tail="step 1\nTraceback (most recent call last):\n"
                                 "RuntimeError: CUDA out of memory\n", now=6)
    yield store
    store.close()


def test_notebook_has_best_path_and_failures_with_tails(store):
    text = build_notebook(store)
    assert "## Best results so far" in text
    lines = text.splitlines()
    best = lines.index("## Best results so far")
    assert "1.3500" in lines[best + 1] and "add warmup" in lines[best + 1]
    assert "Δ -0.0500 vs its parent" in lines[best + 1]
    assert "raise LR to 0.2" in lines[best + 2] and "halve depth" in text
    assert "raise LR to 0.2 -> Δ -0.1000" in text  # the steps that led to the best
    assert "crashed: fused attention" in text and "CUDA out of memory" in text
    assert "exit code 1" in text


def test_notebook_stays_bounded_as_the_run_grows(store):
    for k in range(300):
        store.add(done(f"n{k}", "root", 1.45 + k * 1e-4, island=k % 4,
                       what=f"idea number {k} " + "x" * 200, t=10 + k))
    text = build_notebook(store, max_chars=3000)
    assert len(text) <= 3000 + 40
    assert text.count("idea number") <= 6


def test_tried_on_parent_reports_outcomes(store):
    assert tried_on_parent(store, "a") == ["add warmup", "fused attention"]
    tried = tried_with_outcomes(store, "a")
    assert tried == ["add warmup -> val_bpb 1.3500 (Δ -0.0500, better)",
                     "fused attention -> crashed: exit code 1"]


def test_lab_notebook_rebuilds_only_on_new_results(store):
    notebook = LabNotebook(store)
    first = notebook.text()
    assert notebook.text() is first
    store.add(done("d", "b", 1.30, what="tie embeddings", t=20))
    assert "tie embeddings" in notebook.text()
    with_parent = notebook.text(parent_id="a")
    assert with_parent.startswith(notebook.text())
    assert "## Already tried on this parent\n- add warmup -> val_bpb 1.3500" in with_parent


def test_prompt_bounded_with_long_lineage_and_many_tried(store):
    parent = store.get("b")
    lineage = [parent.replace(id=f"g{k}", description=f"step {k}") for k in range(100)]
    tried = [f"attempt {k}" for k in range(500)]
    context = MutationContext(parent=parent, lineage=lineage, inspirations=[store.get("c")],
                              tried_on_parent=tried, notebook=build_notebook(store),
                              program_md="# brief", mutable_files=["train.py"], seed=1)
    prompt = build_prompt(context, PromptLimits(lineage_steps=5, tried_items=7))
    text = prompt.text()
    assert "(95 earlier steps not shown)" in text and "step 99" in text and "step 3 " not in text
    assert "(493 older ones not shown)" in text and "attempt 499" in text
    assert "attempt 10\n" not in text
    assert "CUDA out of memory" in text and "# brief" in text
    assert len(text) < 20_000


def test_prompt_shows_what_was_tried_on_the_parent_with_outcomes(store):
    context = MutationContext(parent=store.get("a"), lineage=store.lineage("a"), inspirations=[],
                              tried_on_parent=tried_with_outcomes(store, "a"),
                              notebook=LabNotebook(store).text(), program_md="",
                              mutable_files=["train.py"], seed=0)
    text = build_prompt(context).text()
    assert ("# Already tried on this parent, with what happened (do not repeat)\n"
            "- add warmup -> val_bpb 1.3500 (Δ -0.0500, better)\n"
            "- fused attention -> crashed: exit code 1") in text


def test_prompt_generations_count_edits_not_island_copies(store):
    # root -> a copy of root on island 1 (migration) -> an edit of that copy: one edit deep.
    copy = done("root@i1", "root", 1.50, island=1, what="copy", t=7).replace(
        mutator="migration", generation=1)
    store.add(copy)
    child = done("d", "root@i1", 1.45, island=1, what="wider MLP", t=8).replace(generation=2)
    store.add(child)
    context = MutationContext(parent=store.get("d"), lineage=store.lineage("d"), inspirations=[],
                              tried_on_parent=[], notebook="", program_md="",
                              mutable_files=["train.py"], seed=0)
    text = build_prompt(context).text()
    assert "(island 1, generation 1)" in text
    assert "- gen 0: copy" in text and "- gen 1: wider MLP" in text


def test_path_to_the_best_of_a_deep_lineage_counts_every_edit_and_skips_copies(tmp_path):
    with Store.open(tmp_path / "deep.db") as store:
        store.add(done("root", None, 2.0, what="seed", t=1))
        parent = "root"
        for k in range(1, 31):
            store.add(done(f"s{k}", parent, 2.0 - k / 1000, island=0 if k <= 10 else 1,
                           what=f"step {k}", t=1 + k))
            parent = f"s{k}"
            if k == 10:  # the line moves to island 1 by migration: a copy, not an edit
                store.add(done("s10@1", "s10", 2.0 - 10 / 1000, island=1, what="copy",
                               t=11.5).replace(mutator="migration"))
                parent = "s10@1"
        notebook = LabNotebook(store, path_steps=8)
        text = notebook.text()
        path = text.split("## The steps that led to the best\n", 1)[1].split("\n\n")[0]
        assert path.splitlines()[0] == "(22 earlier steps)"
        assert [line.split(" -> ")[0] for line in path.splitlines()[1:]] == [
            f"- step {k}" for k in range(23, 31)]
        assert all(line.endswith("-> Δ -0.0010") for line in path.splitlines()[1:])
        assert "copy" not in path
        child = done("s31", "s30", 1.95, island=1, what="step 31", t=40)
        store.add(child)
        notebook.note(child)
        again = notebook.text()
        assert "(23 earlier steps)" in again and "- step 31 -> Δ -0.0200" in again
        assert again == build_notebook(store, path_steps=8)
