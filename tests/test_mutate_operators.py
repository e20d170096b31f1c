"""Operator labels, statistics and UCB1 weights, the price table and spend ledger, the
token-bucket rate limiter, and building the mutators from the config."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from evolve.mutate.cost import Price, PriceTable, SpendLedger, UnknownPrice
from evolve.mutate.llm import LLMMutator
from evolve.mutate.operators import OperatorStats, credit, label_of, mix_weights, tally
from evolve.mutate.ratelimit import RateLimiter
from population.candidate import Candidate, Status


def test_labels_tell_llm_models_apart_and_nothing_else():
    assert label_of("llm", "claude-haiku-5") == "llm:claude-haiku-5"
    assert label_of("crossover", "claude-haiku-5") == "crossover"  # borrows the first LLM's model
    assert label_of("heuristic") == "heuristic" and label_of("command", "") == "command"


def test_a_child_is_credited_to_its_label_and_improves_only_by_beating_its_parent():
    def child(status: Status, val: float | None = None, **kw) -> Candidate:
        return Candidate(id="c", parent_id="p", island=0, generation=1, files={}, status=status,
                         metrics={} if val is None else {"val_bpb": val}, **kw)

    assert credit(child(Status.DONE, 0.9, mutator="llm", model="m"), 1.0) == ("llm:m", True)
    assert credit(child(Status.DONE, 1.0, mutator="heuristic"), 1.0) == ("heuristic", False)  # tie
    assert credit(child(Status.CRASHED, mutator="heuristic"), 1.0) == ("heuristic", False)
    assert credit(child(Status.DONE, 0.9, mutator="heuristic"), None) == ("heuristic", False)
    for not_a_trial in (child(Status.RUNNING, mutator="heuristic"),
                        child(Status.REJECTED, mutator="heuristic"),
                        child(Status.DONE, 0.5, mutator="migration")):
        assert credit(not_a_trial, 1.0) is None
    root = Candidate(id="root", parent_id=None, island=0, generation=0, files={},
                     status=Status.DONE, metrics={"val_bpb": 1.0}, mutator="template")
    assert credit(root, None) is None


def test_tally_judges_children_against_their_parents_copies_included():
    def done(cid: str, parent: str | None, val: float, mutator: str = "heuristic") -> Candidate:
        return Candidate(id=cid, parent_id=parent, island=0, generation=0, files={},
                         status=Status.DONE, metrics={"val_bpb": val}, mutator=mutator)

    stats = tally([done("root", None, 1.0, "template"), done("a", "root", 0.9),
                   done("b", "a", 0.95), done("a@i1", "a", 0.9, "migration"),
                   done("c", "a@i1", 0.8, "llm"),
                   Candidate(id="d", parent_id="c", island=0, generation=0, files={},
                             status=Status.TIMED_OUT, mutator="llm")])
    assert stats == {"heuristic": OperatorStats(2, 1), "llm": OperatorStats(2, 1)}


def test_fixed_weights_are_the_configured_ones_whatever_the_stats():
    stats = {"good": OperatorStats(50, 50), "bad": OperatorStats(50, 0)}
    weights = {"good": 1.0, "bad": 3.0, "off": 0.0}
    assert mix_weights(weights, stats) == weights


def test_ucb_favours_the_operator_that_improves_and_keeps_zero_weights_off():
    stats = {"good": OperatorStats(40, 40), "bad": OperatorStats(40, 0)}
    weights = mix_weights({"good": 1.0, "bad": 1.0, "off": 0.0}, stats, adaptive=True,
                          exploration=0.5)
    assert weights["good"] > 2 * weights["bad"] > 0 and weights["off"] == 0.0
    # the UCB1 formula: rate with a prior of one success in two, plus the exploration bonus
    bonus = 0.5 * math.sqrt(math.log(81) / 41)
    assert weights["good"] == pytest.approx(41 / 42 + bonus)
    assert weights["bad"] == pytest.approx(1 / 42 + bonus)
    # untried operators start level, scaled by their configured weight
    fresh = mix_weights({"a": 3.0, "b": 1.0}, {}, adaptive=True)
    assert fresh == {"a": pytest.approx(1.5), "b": pytest.approx(0.5)}
    # operators sharing a label share its stats (counted once in the total)
    shared = mix_weights({"h0": 1.0, "h1": 2.0, "llm": 1.0}, {"heuristic": OperatorStats(10, 1)},
                         labels={"h0": "heuristic", "h1": "heuristic", "llm": "llm:m"},
                         adaptive=True)
    assert shared["h1"] == pytest.approx(2 * shared["h0"])
    assert shared["llm"] == pytest.approx(0.5 + math.sqrt(math.log(11)))


def test_an_untried_operator_is_explored_rather_than_starved():
    stats = {"good": OperatorStats(200, 120)}
    weights = mix_weights({"good": 1.0, "new": 1.0}, stats, adaptive=True, exploration=1.0)
    assert weights["new"] > weights["good"]
    greedy = mix_weights({"good": 1.0, "new": 1.0}, stats, adaptive=True, exploration=0.0)
    assert greedy["new"] == pytest.approx(0.5) and greedy["good"] == pytest.approx(121 / 202)


def test_price_table_lookup_and_exact_cost():
    table = PriceTable.from_config({"my-local-model": {"input": 0, "output": 0},
                                    "claude-sonnet-5-5": {"input": 2.0, "output": 10.0,
                                                          "cache_read": 0.25}})
    usage = {"input_tokens": 1000, "output_tokens": 2000, "cache_read_input_tokens": 4000,
             "cache_creation_input_tokens": 3000}
    assert table.cost("my-local-model", usage) == 0.0
    assert table.cost("claude-sonnet-5-5", usage) == pytest.approx(
        (1000 * 2.0 + 2000 * 10.0 + 4000 * 0.25 + 3000 * 2.5) / 1e6, rel=1e-12)
    # current prices (platform.claude.com model pages); a dated snapshot is its model
    assert table.lookup("claude-sonnet-5-5-20261007") == Price(2.0, 10.0, 2.50, 0.25)  # config wins
    assert PriceTable().lookup("claude-opus-5-5") == Price(4.0, 20.0, 5.0, 0.20)
    assert PriceTable().lookup("claude-sonnet-5-5") == Price(2.0, 10.0, 2.50, 0.20)
    for unknown in ("mystery", "claude-sonnet-5-7", "claude-haiku-9"):  # never a guess
        with pytest.raises(UnknownPrice, match=f"no price is known for model {unknown}"):
            table.cost(unknown, usage)


def test_ledger_totals_and_cap():
    ledger = SpendLedger.resume([0.5, 0.25], max_usd=1.0)
    assert ledger.spent_usd == 0.75 and not ledger.exhausted
    ledger.record("m", {"input_tokens": 10, "output_tokens": 5}, 0.25)
    assert ledger.exhausted and ledger.remaining_usd == 0.0
    assert ledger.usage["input_tokens"] == 10 and ledger.by_model == {"m": 0.25}
    assert "$1.00 of $1.00 in 1 LLM calls" == ledger.summary()


def test_rate_limiter_holds_calls_to_the_budget():
    now = {"t": 0.0}

    async def virtual_sleep(seconds: float) -> None:
        now["t"] += seconds
        await asyncio.sleep(0)

    limiter = RateLimiter(max_in_flight=4, tokens_per_minute=600, clock=lambda: now["t"],
                          sleep=virtual_sleep)
    starts: list[float] = []

    async def one():
        async with limiter.slot(300) as slot:
            starts.append(now["t"])
            slot.actual = 300

    async def main():
        await asyncio.gather(*(one() for _ in range(4)))

    asyncio.run(main())
    assert starts[:2] == [0.0, 0.0]  # a minute's budget of 600 covers two calls of 300
    # the next two wait until those leave the minute (tests/test_limits_one_rule.py: the rule)
    assert starts[2:] == [pytest.approx(60.0)] * 2
    assert limiter.waited_s == pytest.approx(60.0)


def test_build_mutators_from_the_config(monkeypatch):
    from evolve.config import config_from_dict
    from evolve.controller.wiring import operator_names
    from evolve.mutate.crossover import CrossoverMutator
    from evolve.mutate.registry import OperatorFacts, build_mutators

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-key-for-build")
    template = Path(__file__).resolve().parent.parent / "train_template"
    config = config_from_dict({"name": "b", "template": str(template), "mutation": {"operators": [
        {"kind": "heuristic", "weight": 1.0},
        {"kind": "llm", "model": "claude-opus-5", "tokens_per_minute": 90000,
         "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0},
        {"kind": "llm", "model": "local-qwen", "base_url": "http://127.0.0.1:1",
         "api_key_env": "NO_SUCH_KEY_VAR", "input_usd_per_mtok": 0.0, "output_usd_per_mtok": 0.0,
         "temperature": 0.3},
        {"kind": "crossover", "weight": 0.5},
        {"kind": "command", "argv": ["my-agent", "{prompt_file}"], "weight": 0.2}]}})
    ledger = SpendLedger(3.0)
    built = build_mutators(config.mutation.operators, operator_names(config),
                           facts=OperatorFacts(template_dir=config.template_dir), ledger=ledger)
    assert list(built) == ["heuristic", "llm0", "llm1", "crossover", "command"]
    opus, local = built["llm0"], built["llm1"]
    assert isinstance(opus, LLMMutator) and opus.model == "claude-opus-5"
    assert opus.ledger is ledger and opus.sampling == {}
    assert opus.prices.cost("claude-opus-5", {"input_tokens": 10**6,
                                              "output_tokens": 10**6}) == 3.0
    assert local.prices.cost("local-qwen", {"input_tokens": 10**6}) == 0.0
    assert local.sampling == {"temperature": 0.3}
    assert isinstance(built["crossover"], CrossoverMutator) and built["crossover"].llm is opus
    assert built["command"].argv == ["my-agent", "{prompt_file}"]
