"""Operator mixing, the price table and spend ledger, and the token-bucket rate limiter."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import anthropic
import httpx2
import pytest

from evolve.mutate.base import MutationContext
from evolve.mutate.command import CommandMutator
from evolve.mutate.cost import Price, PriceTable, SpendLedger
from evolve.mutate.heuristic import HeuristicMutator
from evolve.mutate.llm import LLMMutator
from evolve.mutate.operators import Operator, OperatorMix, label_of
from evolve.mutate.ratelimit import RateLimiter, TokenBucket
from population.candidate import Candidate, Status

SOURCE = "MATRIX_LR = 0.04\nDEPTH = 2\n\n\ndef train(ctx):\n    return None\n"


def context(seed: int = 0) -> MutationContext:
    parent = Candidate(id="p", parent_id=None, island=0, generation=0, files={"train.py": SOURCE},
                       status=Status.DONE, metrics={"val_bpb": 1.0})
    return MutationContext(parent=parent, lineage=[parent], inspirations=[], tried_on_parent=[],
                           notebook="", program_md="", mutable_files=["train.py"], seed=seed)


def llm(status: int = 401, model: str = "claude-haiku-5") -> LLMMutator:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, json={"type": "error", "error": {
            "type": "authentication_error", "message": "invalid x-api-key"}})

    client = anthropic.AsyncAnthropic(api_key="test", max_retries=0,
                                      http_client=anthropic.DefaultAsyncHttpxClient(
                                          transport=httpx2.MockTransport(handler)))
    return LLMMutator(client=client, model=model)


def test_weighted_choice_is_deterministic_and_follows_weights():
    mix = OperatorMix([Operator(HeuristicMutator(), 3.0), Operator(llm(), 1.0),
                       Operator(CommandMutator(["true"]), 0.0)])
    picks = [mix.choose(seed).label for seed in range(2000)]
    assert picks == [mix.choose(seed).label for seed in range(2000)]
    counts = Counter(picks)
    assert set(counts) == {"heuristic", "llm:claude-haiku-5"}  # weight 0 never runs
    assert 0.70 < counts["heuristic"] / 2000 < 0.80


def test_adaptive_weights_favour_the_operator_that_improves():
    mix = OperatorMix([Operator(HeuristicMutator(), 1.0), Operator(llm(), 1.0)], adaptive=True,
                      exploration=0.5)
    for _ in range(40):
        mix.record("heuristic", improved=False)
        mix.record("llm:claude-haiku-5", improved=True)
    weights = mix.weights()
    assert weights["llm:claude-haiku-5"] > 2 * weights["heuristic"] > 0
    saved = json.loads(json.dumps(mix.state()))
    resumed = OperatorMix([Operator(HeuristicMutator(), 1.0), Operator(llm(), 1.0)],
                          adaptive=True, exploration=0.5)
    resumed.load_state(saved)
    assert resumed.weights() == weights
    assert [resumed.choose(s).label for s in range(50)] == [mix.choose(s).label for s in range(50)]


def test_a_down_llm_falls_back_and_the_mix_says_so():
    down = llm(401)
    mix = OperatorMix([Operator(down, 1.0)], fallback=HeuristicMutator())
    first = asyncio.run(mix.propose(context()))
    assert "AuthenticationError" in first.error and down.is_down
    second = asyncio.run(mix.propose(context(seed=1)))
    assert second.error == "" and second.mutator == "heuristic"
    alone = OperatorMix([Operator(down, 1.0)])
    assert alone.is_down and "AuthenticationError" in alone.down_reason
    assert "no mutation operator is usable" in asyncio.run(alone.propose(context())).error


def test_mix_rejects_bad_setups_and_labels_proposals():
    with pytest.raises(ValueError, match="weight 0"):
        OperatorMix([Operator(HeuristicMutator(), 0.0)])
    with pytest.raises(ValueError, match="differ"):
        OperatorMix([Operator(HeuristicMutator(), 1.0), Operator(HeuristicMutator(), 1.0)])
    with pytest.raises(ValueError, match="finite"):
        Operator(HeuristicMutator(), -1.0)
    mix = OperatorMix([Operator(HeuristicMutator(), 1.0)])
    proposal = asyncio.run(mix.propose(context()))
    mix.record_proposal(proposal, improved=True)
    assert mix.state()["heuristic"]["improved"] == 1
    assert label_of("llm", "m") == "llm:m"


def test_price_table_lookup_and_exact_cost():
    table = PriceTable.from_config({"my-local-model": {"input": 0, "output": 0},
                                    "claude-sonnet-5-5": {"input": 2.0, "output": 10.0,
                                                          "cache_read": 0.25}})
    usage = {"input_tokens": 1000, "output_tokens": 2000, "cache_read_input_tokens": 4000,
             "cache_creation_input_tokens": 3000}
    assert table.cost("my-local-model", usage) == 0.0
    assert table.cost("claude-sonnet-5-5", usage) == pytest.approx(
        (1000 * 2.0 + 2000 * 10.0 + 4000 * 0.25 + 3000 * 2.5) / 1e6, rel=1e-12)
    assert table.lookup("claude-haiku-9") == Price.standard(1.0, 5.0)
    assert table.lookup("mystery") == table.default


def test_ledger_totals_and_cap():
    ledger = SpendLedger.resume([0.5, 0.25], max_usd=1.0)
    assert ledger.spent_usd == 0.75 and not ledger.exhausted
    ledger.record("m", {"input_tokens": 10, "output_tokens": 5}, 0.25)
    assert ledger.exhausted and ledger.remaining_usd == 0.0
    assert ledger.usage["input_tokens"] == 10 and ledger.by_model == {"m": 0.25}
    assert "$1.00 of $1.00 in 1 LLM calls" == ledger.summary()


def test_token_bucket_on_a_virtual_clock():
    bucket = TokenBucket(tokens_per_minute=6000, now=0.0)  # 100 tokens a second
    assert bucket.delay(6000, 0.0) == 0.0
    bucket.take(6000, 0.0)
    assert bucket.delay(1000, 0.0) == pytest.approx(10.0)
    assert bucket.delay(1000, 4.0) == pytest.approx(6.0)
    bucket.take(1000, 10.0)
    bucket.settle(estimated=1000, actual=3000, now=10.0)  # the call used more: debt
    assert bucket.delay(100, 10.0) == pytest.approx(21.0)
    assert bucket.delay(10**9, 1000.0) == 0.0  # a huge call waits for a full bucket, not forever


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
    assert starts[2] == pytest.approx(30.0) and starts[3] == pytest.approx(60.0)
    assert limiter.waited_s == pytest.approx(60.0)


def test_build_mutators_from_the_config(monkeypatch):
    from evolve.config import config_from_dict
    from evolve.controller.resume import operator_names
    from evolve.mutate.crossover import CrossoverMutator
    from evolve.mutate.operators import build_mutators

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-key-for-build")
    template = Path(__file__).resolve().parent.parent / "train_template"
    config = config_from_dict({"name": "b", "template": str(template), "mutation": {"operators": [
        {"kind": "heuristic", "weight": 1.0},
        {"kind": "llm", "model": "claude-opus-5", "tokens_per_minute": 90000,
         "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0},
        {"kind": "llm", "model": "local-qwen", "base_url": "http://127.0.0.1:1",
         "api_key_env": "NO_SUCH_KEY_VAR", "input_usd_per_mtok": 0.0, "temperature": 0.3},
        {"kind": "crossover", "weight": 0.5},
        {"kind": "command", "argv": ["my-agent", "{prompt_file}"], "weight": 0.2}]}})
    ledger = SpendLedger(3.0)
    built = build_mutators(config.mutation.operators, operator_names(config),
                           template_dir=config.template_dir, ledger=ledger)
    assert list(built) == ["heuristic", "llm0", "llm1", "crossover", "command"]
    opus, local = built["llm0"], built["llm1"]
    assert isinstance(opus, LLMMutator) and opus.model == "claude-opus-5"
    assert opus.ledger is ledger and opus.temperature is None
    assert opus.prices.cost("claude-opus-5", {"input_tokens": 10**6,
                                              "output_tokens": 10**6}) == 3.0
    assert local.prices.cost("local-qwen", {"input_tokens": 10**6}) == 0.0
    assert local.temperature == 0.3
    assert isinstance(built["crossover"], CrossoverMutator) and built["crossover"].llm is opus
    assert built["command"].argv == ["my-agent", "{prompt_file}"]
