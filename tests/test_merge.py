"""The merge operator: a win carried onto another line by a three-way merge (merge3), the donor
recorded in a real SQLite store, and the conflict paths (dropped, or crossover with an LLM)."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from pathlib import Path

import pytest
from test_llm_mutator import FakeAPI as LLMApi
from test_llm_mutator import message
from test_llm_mutator import mutator as llm_mutator

from evolve.mutate.base import MutationContext
from evolve.mutate.crossover import CrossoverMutator
from evolve.mutate.heuristic import HeuristicMutator
from evolve.mutate.merge import MergeMutator, describe, merge_files, merge_text
from population.candidate import Candidate, Status
from population.store import Store, StoreError
from population.wins import Win, carry_after, carryable

REPO = Path(__file__).resolve().parent.parent
SEED = (REPO / "train_template" / "train_cpu.py").read_text()


def setc(source: str, name: str, value: str) -> str:
    new, count = re.subn(rf"^{name} = [^ #\n]+", f"{name} = {value}", source, flags=re.M)
    assert count == 1, name
    return new


def line_of(source: str, name: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if line.startswith(name + " "))


# ---------------------------------------------------------------- the three-way merge


def test_non_overlapping_hunks_both_apply():
    donor = setc(setc(SEED, "DEPTH", "4"), "ROPE_BASE", "20000.0")  # two hunks, far apart
    target = setc(SEED, "WARMDOWN_FRAC", "0.5")
    merged, conflicts = merge_text(SEED, target, donor, "train.py")
    assert conflicts == []
    assert merged == setc(setc(setc(SEED, "DEPTH", "4"), "ROPE_BASE", "20000.0"),
                          "WARMDOWN_FRAC", "0.5")


def test_neighbouring_constants_merge_line_by_line():
    # DEPTH and MODEL_DIM are adjacent lines: diff3 calls that one conflicting region
    assert line_of(SEED, "MODEL_DIM") == line_of(SEED, "DEPTH") + 1
    merged, conflicts = merge_text(SEED, setc(SEED, "MODEL_DIM", "128"), setc(SEED, "DEPTH", "4"))
    assert conflicts == [] and merged == setc(setc(SEED, "MODEL_DIM", "128"), "DEPTH", "4")


def test_the_same_line_changed_two_ways_is_a_conflict_that_names_the_line():
    merged, conflicts = merge_text(SEED, setc(SEED, "DEPTH", "2"), setc(SEED, "DEPTH", "4"),
                                   "train.py")
    assert conflicts == [f"train.py line {line_of(SEED, 'DEPTH')}"]
    assert merged == setc(SEED, "DEPTH", "2")  # ours kept; the caller drops it
    # the same change on both sides is no conflict: the target already has it
    same = merge_files({"train.py": SEED}, {"train.py": setc(SEED, "DEPTH", "4")},
                       {"train.py": setc(SEED, "DEPTH", "4")})
    assert same.clean and same.files == {"train.py": setc(SEED, "DEPTH", "4")}


def test_a_file_the_edit_adds_is_added_and_one_both_changed_conflicts():
    base = {"train.py": SEED}
    donor = {"train.py": SEED, "model.py": "WIDTH = 3\n"}
    assert merge_files(base, {"train.py": setc(SEED, "DEPTH", "2")}, donor).files["model.py"] \
        == "WIDTH = 3\n"
    clash = merge_files(base, {"train.py": SEED, "model.py": "WIDTH = 5\n"}, donor)
    assert not clash.clean and "model.py" in clash.conflicts[0]


# ---------------------------------------------------------------- the operator


def cand(cid: str, parent: Candidate | None, source: str, val: float, *, island: int = 0,
         description: str = "", donor: str | None = None) -> Candidate:
    return Candidate(id=cid, parent_id=parent.id if parent else None, island=island,
                     generation=parent.generation + 1 if parent else 0,
                     files={"train.py": source}, description=description, mutator="heuristic",
                     status=Status.DONE, metrics={"val_bpb": val}, donor_id=donor)


def lines():
    """root -> c00004 (DEPTH 3 -> 4, a win on island 1); root -> c00002 -> c00014 (the best)."""
    root = cand("root", None, SEED, 3.70)
    deeper = cand("c00004", root, setc(SEED, "DEPTH", "4"), 3.62, island=1,
                  description="DEPTH 3 -> 4")
    worse = cand("c00006", root, setc(SEED, "ROPE_BASE", "5000.0"), 3.75, island=1,
                 description="ROPE_BASE 10000.0 -> 5000.0")
    a = cand("c00002", root, setc(SEED, "FINAL_LR_FRAC", "0.5"), 3.60,
             description="FINAL_LR_FRAC 0.0 -> 0.5")
    best = cand("c00014", a, setc(a.files["train.py"], "MATRIX_LR", "0.028"), 3.50,
                description="MATRIX_LR 0.02 -> 0.028")
    return root, deeper, worse, a, best


def context_for(target: Candidate, lineage: list[Candidate], wins: list[Win],
                carried: tuple[str, ...] = (), inspirations: tuple = ()) -> MutationContext:
    return MutationContext(parent=target, lineage=lineage, inspirations=inspirations,
                           tried_on_parent=[], notebook="", program_md="", seed=5,
                           mutable_files=["train.py"], wins=wins, carried=carried)


def test_a_clean_merge_carries_the_win_and_names_it():
    root, deeper, worse, a, best = lines()
    wins = [Win(deeper, root), Win(a, root), Win(best, a)]  # the last two are on best's line
    proposal = asyncio.run(MergeMutator().propose(context_for(best, [root, a, best], wins)))
    assert proposal.error == "" and proposal.mutator == "merge"
    assert proposal.description == "merge c00004 (DEPTH 3 -> 4) into c00014"
    assert proposal.donor_id == "c00004"
    assert proposal.files["train.py"] == setc(best.files["train.py"], "DEPTH", "4")
    assert "0.080000" in proposal.rationale  # the donor's gain over its own parent


def test_carryable_skips_the_targets_own_line_its_children_and_what_was_carried():
    root, deeper, worse, a, best = lines()
    child_of_best = cand("c00020", best, setc(best.files["train.py"], "DEPTH", "5"), 3.4)
    wins = [Win(deeper, root), Win(a, root), Win(child_of_best, best)]
    assert [w.donor.id for w in carryable(wins, best, ["root", "c00002", "c00014"], [])] \
        == ["c00004"]
    assert carryable(wins, best, ["root", "c00002", "c00014"], ["c00004"]) == []
    # a merge that won is not carried on: its edit is c00004's, which stays carryable
    relay = cand("c00030", worse, setc(worse.files["train.py"], "DEPTH", "4"), 3.70,
                 donor="c00004")
    assert [w.donor.id for w in carryable([Win(relay, worse), Win(deeper, root)], best,
                                          ["root", "c00002", "c00014"], [])] == ["c00004"]


def test_a_conflict_is_dropped_and_keeps_its_donor():
    root, deeper, worse, a, best = lines()
    target = cand("c00015", best, setc(best.files["train.py"], "DEPTH", "2"), 3.45)
    proposal = asyncio.run(MergeMutator().propose(
        context_for(target, [root, a, best, target], [Win(deeper, root)])))
    assert proposal.error.startswith("merge conflict: merge c00004 (DEPTH 3 -> 4) into c00015")
    assert f"train.py line {line_of(SEED, 'DEPTH')}" in proposal.error
    assert proposal.donor_id == "c00004" and proposal.files == {}


def test_with_nothing_to_carry_the_other_operator_makes_the_child():
    root, deeper, worse, a, best = lines()
    merge = MergeMutator(otherwise=HeuristicMutator())
    proposal = asyncio.run(merge.propose(context_for(best, [root, a, best], [Win(deeper, root)],
                                                     carried=("c00004",))))
    assert proposal.error == "" and proposal.mutator == "heuristic" and not proposal.donor_id
    alone = asyncio.run(MergeMutator().propose(context_for(best, [root, a, best], [])))
    assert "no win to carry into c00014" in alone.error


def test_a_conflict_goes_to_crossover_when_an_llm_is_configured():
    root, deeper, worse, a, best = lines()
    target = cand("c00015", best, setc(best.files["train.py"], "DEPTH", "2"), 3.45)
    depth_line = next(li for li in SEED.splitlines() if li.startswith("DEPTH "))
    api = LLMApi(message("DESCRIPTION: meet in the middle at depth 3\nRATIONALE: both lines won.\n\n"
                         f"train.py\n<<<<<<< SEARCH\n{depth_line.replace('3', '2', 1)}\n=======\n"
                         f"{depth_line}\n>>>>>>> REPLACE\n"))
    llm = llm_mutator(api)
    merge = MergeMutator(crossover=CrossoverMutator(llm))
    proposal = asyncio.run(merge.propose(
        context_for(target, [root, a, best, target], [Win(deeper, root)])))
    assert proposal.error == "" and proposal.mutator == "crossover"
    assert proposal.donor_id == "c00004" and "conflicted" in proposal.rationale
    assert proposal.files["train.py"] == setc(target.files["train.py"], "DEPTH", "3")
    sent = json.dumps(api.requests[0])
    assert "c00004" in sent and "second parent" in sent  # both parents went to the model


def test_describe_quotes_a_long_description_briefly():
    root, deeper, *_, best = lines()
    long = deeper.replace(description="scale " * 40)
    text = describe(long, best)
    assert text.startswith("merge c00004 (scale scale") and text.endswith("…) into c00014")


# ---------------------------------------------------------------- the store


def add_done(store: Store, c: Candidate, at: float) -> None:
    store.add(c.replace(status=Status.PROPOSED, metrics={}, created_at=at))
    store.set_status(c.id, Status.RUNNING)
    store.record_result(c.id, status=Status.DONE, metrics=dict(c.metrics), now=at + 1)


def test_the_store_records_the_donor_and_finds_the_wins(tmp_path):
    root, deeper, worse, a, best = lines()
    merged = cand("c00016", best, setc(best.files["train.py"], "DEPTH", "4"), 3.44,
                  description="merge c00004 (DEPTH 3 -> 4) into c00014", donor="c00004")
    with Store.open(tmp_path / "store.db") as store:
        for i, c in enumerate([root, deeper, worse, a, best, merged]):
            add_done(store, c, 100.0 + 10 * i)
        assert [(w.donor.id, w.base.id) for w in store.wins()] == [
            ("c00002", "root"), ("c00014", "c00002"), ("c00004", "root"), ("c00016", "c00014")]
        assert store.donors_into("c00014") == ["c00004"]
    with Store.open(tmp_path / "store.db", readonly=True) as store:
        assert store.get("c00016").donor_id == "c00004"
        assert store.get("c00014").donor_id is None
        assert store.best().donor_id == "c00004"  # survivors and bests carry it too


def make_version_2_store(path: Path) -> None:
    """A store as evolve wrote it before donors: schema version 2, no donor column (nor the
    later triggered mark)."""
    root, deeper, *_ = lines()
    with Store.open(path) as store:
        add_done(store, root, 100.0)
        add_done(store, deeper, 110.0)
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE candidates DROP COLUMN donor_id")
    conn.execute("ALTER TABLE candidates DROP COLUMN triggered_by")
    conn.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    conn.commit()
    conn.close()


def test_an_old_store_is_read_as_it_is_and_migrated_by_its_writer(tmp_path):
    path = tmp_path / "old.db"
    make_version_2_store(path)
    with Store.open(path, readonly=True) as old:  # a live run of an older evolve may write it
        assert old.get("c00004").donor_id is None and old.best().id == "c00004"
        assert old.get_meta("schema_version") == "2"
    with Store.open(path) as store:
        assert store.get_meta("schema_version") == str(Store.SCHEMA_VERSION) == "4"
        assert [w.donor.id for w in store.wins()] == ["c00004"]
        root, deeper, *_ = lines()
        add_done(store, cand("c00009", root, setc(SEED, "DEPTH", "5"), 3.65, donor="c00004"),
                 200.0)
    with Store.open(path, readonly=True) as store:
        assert store.get("c00009").donor_id == "c00004" and store.get("root").donor_id is None
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this evolve understands"):
        Store.open(path, readonly=True)


# ---------------------------------------------------------------- the asynchronous-greedy trigger


def test_a_win_on_a_stale_parent_triggers_its_merge_onto_the_best():
    root, deeper, worse, a, best = lines()
    # deeper beat root, but the best is now c00014 (a different line): carry deeper onto it
    assert carry_after(deeper, root, best, best) == ("c00014", "c00004")
    # a win on the best itself is the plain greedy step: nothing to carry
    step = cand("c00020", best, setc(best.files["train.py"], "DEPTH", "4"), 3.40)
    assert carry_after(step, best, best, step) is None
    # a win that became the best although its parent was stale: the displaced best is carried
    jump = cand("c00021", a, setc(a.files["train.py"], "EMBED_LR", "0.3"), 3.40)
    assert carry_after(jump, a, best, jump) == ("c00021", "c00014")
    # no win, no merge
    assert carry_after(worse, root, best, best) is None
    # a merge that beat its stale parent triggers nothing: its edit was carried once already
    relay = cand("c00022", root, setc(SEED, "DEPTH", "4"), 3.61, donor="c00004")
    assert carry_after(relay, root, best, best) is None
