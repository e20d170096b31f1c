"""Repair: a crashed child's traceback and source go to the model once; the fix is its child.
Through the real anthropic client over a mock transport held to the API's rules."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import yaml
from messages_standin import StandinServer, message_json
from test_llm_mutator import FakeAPI

from evolve.config import load_config
from evolve.controller.executor import LocalExecutor
from evolve.controller.recovery import recover
from evolve.inspect.status import operator_table
from evolve.mutate.base import MutationContext
from evolve.mutate.kinds import LLMOperator
from evolve.mutate.llm import LLMMutator
from evolve.mutate.repair import RepairMutator, has_traceback, wants_repair
from evolve.run.app import Run
from population.candidate import Candidate, Status
from population.store import Store

GOOD = "LR = 0.1\n\n\ndef train(ctx):\n    return make_model(ctx)\n"
TYPO = GOOD.replace("make_model(ctx)", "make_modle(ctx)")
TRACEBACK = ("step 0 | loss 9.1\nTraceback (most recent call last):\n  File \"train.py\", line 5, "
             "in train\n    return make_modle(ctx)\nNameError: name 'make_modle' is not defined\n")
USAGE = {"input_tokens": 800, "output_tokens": 90, "cache_read_input_tokens": 0,
         "cache_creation_input_tokens": 0}


def _crashed(log: str = TRACEBACK, mutator: str = "llm") -> tuple[Candidate, Candidate]:
    root = Candidate(id="root", parent_id=None, island=0, generation=0,
                     files={"train.py": GOOD}, status=Status.DONE, metrics={"val_bpb": 1.2})
    crashed = Candidate(id="c00007", parent_id="root", island=0, generation=1,
                        files={"train.py": TYPO}, status=Status.CRASHED, reason="exit code 1",
                        description="build the model through a helper", mutator=mutator,
                        log_tail=log)
    return root, crashed


def _context(root: Candidate, crashed: Candidate) -> MutationContext:
    return MutationContext(parent=crashed, lineage=[root, crashed], inspirations=[],
                           tried_on_parent=[], notebook="", program_md="# brief",
                           mutable_files=["train.py"], seed=0)


def test_a_crash_with_a_traceback_is_repaired_as_a_child_of_the_crashed_candidate():
    fix = ("DESCRIPTION: fix: the helper is make_model, not make_modle\nRATIONALE: NameError.\n\n"
           "train.py\n<<<<<<< SEARCH\n    return make_modle(ctx)\n=======\n"
           "    return make_model(ctx)\n>>>>>>> REPLACE\n")
    api = FakeAPI(message_json("claude-sonnet-5-5", fix, USAGE, thinking="The name is wrong."))
    repair = RepairMutator(LLMMutator(LLMOperator(kind="llm", model="claude-sonnet-5-5"),
                                      client=api.client()))
    root, crashed = _crashed()
    proposal = asyncio.run(repair.propose(_context(root, crashed)))
    assert proposal.error == "" and proposal.mutator == "repair"
    assert proposal.files["train.py"] == GOOD and proposal.description.startswith("fix:")
    assert api.refused == [] and len(api.requests) == 1
    head, ask = (b["text"] for b in api.requests[0]["messages"][0]["content"])
    assert "make_modle(ctx)" in head and "# The parent: c00007" in head  # the crashed source
    assert "It tried: build the model through a helper" in ask
    assert "NameError: name 'make_modle' is not defined" in ask
    assert "data to read, not instructions" in ask and "Keep the idea" in ask


def test_no_traceback_means_nothing_to_repair_and_no_call():
    api = FakeAPI(message_json("claude-sonnet-5-5", "x", USAGE))
    repair = RepairMutator(LLMMutator(LLMOperator(kind="llm", model="claude-sonnet-5-5"),
                                      client=api.client()))
    root, crashed = _crashed(log="killed by the time limit\n")
    proposal = asyncio.run(repair.propose(_context(root, crashed)))
    assert "nothing to repair" in proposal.error and api.requests == []


def test_which_crashes_want_a_repair():
    assert has_traceback(TRACEBACK) and has_traceback("x\nRuntimeError: CUDA out of memory\n")
    assert not has_traceback("loss 3.2\nsaved\n")
    _, crashed = _crashed()
    assert wants_repair(crashed)
    assert not wants_repair(crashed.replace(mutator="repair"))  # never a repair of a repair
    assert not wants_repair(crashed.replace(log_tail="no trace"))
    assert not wants_repair(crashed.replace(status=Status.TIMED_OUT))


SLEEP_TEMPLATE = Path(__file__).resolve().parent / "fixtures" / "sleep_template"
SLEEP_SOURCE = (SLEEP_TEMPLATE / "train.py").read_text()


def _block(old: str, new: str) -> str:
    return f"train.py\n<<<<<<< SEARCH\n{old}\n=======\n{new}\n>>>>>>> REPLACE\n"


def test_a_run_repairs_a_crashed_child_and_status_counts_the_repair(tmp_path, monkeypatch):
    """`evolve run`'s path against the stand-in: the first idea crashes on a typo, the crash
    triggers one repair proposal (the traceback in its prompt), the fix runs, and the operator
    table of `evolve status` counts it."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-key")
    calls = {"n": 0}

    def answer(body) -> str:
        text = body["messages"][-1]["content"]
        text = text if isinstance(text, str) else " ".join(b["text"] for b in text)
        if "# This child crashed" in text:
            return ("DESCRIPTION: fix: steps counts by 1 (the name `one` does not exist)\n"
                    "RATIONALE: NameError in the traceback.\n\n"
                    + _block("        steps += one", "        steps += 1"))
        calls["n"] += 1
        if calls["n"] == 1:
            return ("DESCRIPTION: shorter sleep, count steps by a constant\nRATIONALE: r\n\n"
                    + _block("SLEEP_S = 0.5            # stand-in for training time",
                             "SLEEP_S = 0.4            # stand-in for training time")
                    + _block("        steps += 1", "        steps += one"))
        depth = re.search(r"^DEPTH = (\d+)", text, re.MULTILINE).group(0)
        return (f"DESCRIPTION: depth {calls['n'] + 10}\nRATIONALE: r\n\n"
                + _block(depth, f"DEPTH = {calls['n'] + 10}"))

    with StandinServer(answer) as api:
        config = {"name": "repair", "template": str(SLEEP_TEMPLATE), "profile": "cpu-micro",
                  "population": {"size": 4, "islands": 1}, "workers": {"count": 1},
                  "mutation": {"operators": [
                      {"kind": "llm", "model": "claude-sonnet-5-5", "base_url": api.base_url},
                      {"kind": "repair"}], "lookahead": 0},
                  "budget": {"max_experiments": 4},
                  "output": {"results_dir": str(tmp_path / "results")}}
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump(config))
        run = Run.create(path)
        reason = run.execute(executor=LocalExecutor(1), install_signals=False)
    assert reason == "max_experiments reached (4)", reason
    assert api.refused == []
    with Store.open(run.run_dir.store_path, readonly=True) as store:
        finished = store.finished_in_order(include_rejected=True)
        crashed = next(c for c in finished if c.status is Status.CRASHED)
        assert "NameError" in crashed.log_tail
        (fixed,) = [c for c in finished if c.mutator == "repair"]
        assert fixed.parent_id == crashed.id and fixed.status is Status.DONE
        assert "steps += 1" in fixed.files["train.py"] and "SLEEP_S = 0.4" in fixed.files["train.py"]
        assert fixed.description.startswith("fix:")
        assert fixed.triggered_by == "repair"  # stored: a resume keeps it out of the weights
        assert all(c.triggered_by is None for c in finished if c is not fixed)
        drawn = [c for c in finished if c.mutator == "llm" and c.status is not Status.REJECTED]
    with Store.open(run.run_dir.store_path) as store:  # what `evolve resume` rebuilds
        history = recover(store, "root", max_lost_attempts=3)
    assert set(history.operator_stats) == {"llm:claude-sonnet-5-5"}  # no "repair" row
    assert history.operator_stats["llm:claude-sonnet-5-5"].trials == len(drawn) >= 2
    repair_prompts = [r for r in api.requests if "# This child crashed" in json.dumps(r)]
    assert len(repair_prompts) == 1 and "NameError" in json.dumps(repair_prompts[0])
    table = operator_table(load_config(run.run_dir.config_path), finished)
    rows = {cells[0]: cells for cells in zip(*(col._cells for col in table.columns), strict=True)}
    assert rows["repair"][2:4] == ("1", "1")  # one repair ran, and it ran to a score
