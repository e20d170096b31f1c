"""When the LLM cannot be used the run says so and stops, or goes on offline as configured.

The LLM is the real anthropic client against the local Messages-API stand-in: one that
overloads on every call (529, an outage), one that rejects every call (401, a revoked key),
and a working one behind a dollar cap."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from messages_standin import Refusal, StandinServer

from evolve.controller.executor import LocalExecutor
from evolve.mutate.base import MutationContext
from evolve.mutate.heuristic import HeuristicMutator
from evolve.mutate.kinds import LLMOperator
from evolve.mutate.llm import CallPolicy, LLMMutator
from evolve.mutate.registry import OperatorFacts
from evolve.run.app import Run
from evolve.run.outage import OfflineStandIn
from population.candidate import Candidate, Status
from population.store import Store

REPO = Path(__file__).resolve().parent.parent
SLEEP_TEMPLATE = REPO / "tests" / "fixtures" / "sleep_template"


def _always(status: int, kind: str) -> StandinServer:
    """A stand-in that answers every call with this error (a revoked key: 401; an outage: 529)."""
    return StandinServer(lambda body: "", failures=[Refusal(status, kind, kind)] * 10_000)


@pytest.fixture
def rejecting_server():
    with _always(401, "authentication_error") as api:
        yield api


@pytest.fixture
def overloaded_server():
    with _always(529, "overloaded_error") as api:
        yield api


def _context() -> MutationContext:
    source = (SLEEP_TEMPLATE / "train.py").read_text()
    parent = Candidate(id="root", parent_id=None, island=0, generation=0,
                       files={"train.py": source}, status=Status.DONE, metrics={"val_bpb": 2.0})
    return MutationContext(parent=parent, lineage=[parent], inspirations=[], tried_on_parent=[],
                           notebook="", program_md="", mutable_files=["train.py"], seed=1)


def test_fallback_hands_proposals_to_the_heuristic_while_the_llm_is_down(overloaded_server,
                                                                          monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-key")
    llm = LLMMutator(LLMOperator(kind="llm", model="claude-sonnet-5-5",
                                 base_url=overloaded_server.base_url),
                     OperatorFacts(down_after_s=0.2),
                     policy=CallPolicy(backoff_s=0.001, max_backoff_s=0.002, sdk_max_retries=0))
    operator = OfflineStandIn(llm, HeuristicMutator(), probe_every=3)

    async def scenario():  # one event loop, as in a run: the client's connections live in it
        first = await operator.propose(_context())
        assert first.error and "OverloadedError" in first.error and first.infrastructure
        assert not operator.is_down  # one failed proposal is an incident, not an outage
        await asyncio.sleep(0.25)
        assert operator.is_down and "no LLM call has succeeded" in operator.down_reason
        asked = len(overloaded_server.requests)
        second = await operator.propose(_context())
        assert not second.error and second.mutator == "heuristic"
        assert second.files["train.py"] != _context().parent.files["train.py"]
        assert "the LLM is down" in second.rationale
        assert len(overloaded_server.requests) == asked  # the heuristic stood in; no call
        await operator.propose(_context())
        probe = await operator.propose(_context())  # every 3rd proposal asks the LLM again
        assert probe.mutator == "llm" and len(overloaded_server.requests) == asked + 1, probe

    asyncio.run(scenario())


def test_a_revoked_key_is_never_probed_and_stops_the_run_even_in_fallback(tmp_path,
                                                                          rejecting_server,
                                                                          monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-revoked")
    run = Run.create(_llm_config(tmp_path, rejecting_server.base_url, "fallback"))
    reason = run.execute(executor=LocalExecutor(1), install_signals=False)
    assert reason.startswith("the LLM refused the run: AuthenticationError"), reason
    assert "evolve resume" in reason and len(rejecting_server.requests) == 1
    assert "sk-test-revoked" not in run.run_dir.tsv_path.read_text()


def _llm_config(tmp_path: Path, base_url: str, on_llm_down: str, **extra) -> Path:
    operators = [{"kind": "llm", "weight": 1.0, "model": "claude-sonnet-5-5",
                  "base_url": base_url}] + extra.pop("operators", [])
    config = {
        "name": "outage",
        "template": str(SLEEP_TEMPLATE),
        "profile": "cpu-micro",
        "population": {"size": 2, "islands": 1},
        "mutation": {"operators": operators, "lookahead": 0, "on_llm_down": on_llm_down,
                     "llm_down_after_s": 0.5},
        "workers": {"count": 1, "gpus_per_worker": 0},
        "budget": {"max_experiments": 4, **extra.pop("budget", {})},
        "output": {"results_dir": str(tmp_path / "results")},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("on_llm_down", ["stop", "fallback"])
def test_a_run_stops_or_falls_back_when_the_llm_stays_down(tmp_path, overloaded_server,
                                                           monkeypatch, on_llm_down):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-key")
    run = Run.create(_llm_config(tmp_path, overloaded_server.base_url, on_llm_down))
    reason = run.execute(executor=LocalExecutor(1), install_signals=False)
    rows = (run.run_dir.tsv_path.read_text().splitlines())[1:]
    if on_llm_down == "stop":
        assert reason.startswith("the LLM is down: no LLM call has succeeded"), reason
        assert "evolve resume" in reason
        assert [row.split("\t")[0] for row in rows] == ["root"]  # the baseline finished
    else:
        assert reason == "max_experiments reached (4)", reason
        assert len(rows) == 4  # the workers kept busy on heuristic children


def test_at_the_dollar_cap_the_heuristic_keeps_the_workers_busy(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-key")
    edit = ("DESCRIPTION: shorter sleep\nRATIONALE: r\n\ntrain.py\n<<<<<<< SEARCH\n{old}\n"
            "=======\n{new}\n>>>>>>> REPLACE\n")
    source = (SLEEP_TEMPLATE / "train.py").read_text()
    line = next(ln for ln in source.splitlines() if ln.strip() and not ln.startswith(("#", '"')))

    def answer(body):
        return edit.format(old=line, new=line + "  # edited")

    with StandinServer(answer) as api:
        path = _llm_config(tmp_path, api.base_url, "stop",
                           operators=[{"kind": "heuristic", "weight": 0.01}],
                           budget={"max_llm_usd": 0.2, "max_experiments": 5})
        run = Run.create(path)
        reason = run.execute(executor=LocalExecutor(1), install_signals=False)
    assert reason == "max_experiments reached (5)", reason
    with Store.open(run.run_dir.store_path, readonly=True) as store:
        made = [c for c in store.finished_in_order(include_rejected=True) if c.parent_id]
    # a call's worst case (16k output tokens, 30k prompt) is ~$0.24 > $0.20: no LLM call fits,
    # and the heuristic made every child
    assert len(api.requests) == 0
    assert made and all(c.mutator == "heuristic" for c in made if c.status.value != "rejected")


def test_at_the_dollar_cap_without_an_offline_operator_the_run_stops_and_says_why(
        tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-key")
    with StandinServer(lambda body: "") as api:
        run = Run.create(_llm_config(tmp_path, api.base_url, "fallback",
                                     budget={"max_llm_usd": 0.2}))
        reason = run.execute(executor=LocalExecutor(1), install_signals=False)
    assert reason.startswith("the LLM budget is spent ($0.00 of $0.20"), reason
    assert "heuristic" in reason and len(api.requests) == 0
