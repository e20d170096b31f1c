"""The LLM mutator through the real anthropic client over a mocked HTTP transport."""

from __future__ import annotations

import asyncio
import json
import time

import anthropic
import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from messages_standin import Refusal, error_body, sse_body, sse_events, validate

from evolve.mutate.base import MutationContext
from evolve.mutate.cost import SpendLedger
from evolve.mutate.crossover import CrossoverMutator
from evolve.mutate.kinds import LLMOperator
from evolve.mutate.llm import CallPolicy, LLMMutator
from evolve.mutate.ratelimit import RateLimiter
from evolve.mutate.registry import OperatorFacts
from population.candidate import Candidate, Status

SOURCE = """\
import torch

DEPTH = 2
MATRIX_LR = 0.04
WARMUP_FRAC = 0.0


def train(ctx):
    model = torch.nn.Linear(4, 4)
    return model
"""
GOOD = """DESCRIPTION: raise the matrix learning rate to 0.06
RATIONALE: loss is still falling steeply at the end of the budget.

train.py
<<<<<<< SEARCH
MATRIX_LR = 0.04
=======
MATRIX_LR = 0.06
>>>>>>> REPLACE
"""
USAGE = {"input_tokens": 1200, "output_tokens": 340, "cache_read_input_tokens": 5000,
         "cache_creation_input_tokens": 800}
# Sonnet 5.5 per million tokens: $2 in, $10 out, $2.50 cache write, $0.20 cache read
SONNET_55_COST = (1200 * 2.0 + 340 * 10.0 + 800 * 2.50 + 5000 * 0.20) / 1e6


def message(*texts: str, stop_reason: str = "end_turn", usage: dict | None = None,
            thinking: bool = True) -> dict:
    content: list[dict] = []
    if thinking:
        content.append({"type": "thinking", "thinking": "Let me look at the LR.",
                        "signature": "EqQBCkYIARgCKkD"})
    content.extend({"type": "text", "text": t, "citations": None} for t in texts)
    return {"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
            "model": "claude-sonnet-5-5", "content": content, "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {**(usage or USAGE), "service_tier": "standard",
                      "cache_creation": {"ephemeral_5m_input_tokens": 800,
                                         "ephemeral_1h_input_tokens": 0}}}


def error(status: int, kind: str, retry_ms: str = "1", headers: dict | None = None
          ) -> httpx2.Response:
    return httpx2.Response(status, headers={"retry-after-ms": retry_ms, **(headers or {})},
                           json=error_body(Refusal(status, kind, kind)))


class Broken:
    """A streamed answer that breaks after its 200: an `error` event after `after` events, or
    (drop=True) the connection dropped there."""

    def __init__(self, msg: dict, after: int, drop: bool = False) -> None:
        self.msg, self.after, self.drop = msg, after, drop


def _dropping(msg: dict, after: int):
    async def body():
        for number, event in enumerate(sse_events(msg)):
            if number >= after:
                raise httpx2.ReadError("Connection reset by peer")
            yield event
    return body()


class FakeAPI:
    """A Messages API endpoint answering from a script of responses (or a function).

    Every request is first held to the real API's rules (`messages_standin.validate`): one it
    would refuse gets the API's error, and lands in `refused` for the test to see."""

    def __init__(self, *responses, headers: dict | None = None) -> None:
        self.responses = list(responses)
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.refused: list[Refusal] = []
        self.reply_headers = headers or {}

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        refusal = validate(body, request.headers)
        if refusal is not None:
            self.refused.append(refusal)
            return httpx2.Response(refusal.status, json=error_body(refusal))
        reply = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if callable(reply):
            reply = await reply(body)
        if isinstance(reply, httpx2.Response):
            return reply
        sse = {"content-type": "text/event-stream", **self.reply_headers}
        assert body.get("stream") is True, "answers are streamed"
        if isinstance(reply, Broken):
            if reply.drop:
                return httpx2.Response(200, headers=sse, content=_dropping(reply.msg, reply.after))
            return httpx2.Response(200, headers=sse,
                                   content=sse_body(reply.msg, error_after=reply.after))
        return httpx2.Response(200, headers=sse, content=sse_body(reply))

    def client(self, **options) -> anthropic.AsyncAnthropic:
        transport = httpx2.MockTransport(self)
        return anthropic.AsyncAnthropic(
            api_key="test", max_retries=options.pop("max_retries", 2),
            http_client=anthropic.DefaultAsyncHttpxClient(transport=transport))


def context(notebook: str = "## Best results so far\n- val_bpb 1.2000 lower LR",
            seed: int = 3) -> MutationContext:
    root = Candidate(id="c0", parent_id=None, island=0, generation=0, files={"train.py": SOURCE},
                     status=Status.DONE, metrics={"val_bpb": 1.30}, description="seed")
    parent = Candidate(id="c7", parent_id="c0", island=0, generation=1,
                       files={"train.py": SOURCE}, status=Status.DONE,
                       metrics={"val_bpb": 1.25, "num_steps": 40}, description="deeper model")
    other = Candidate(id="c9", parent_id="c0", island=1, generation=1,
                      files={"train.py": SOURCE.replace("WARMUP_FRAC = 0.0", "WARMUP_FRAC = 0.1")},
                      status=Status.DONE, metrics={"val_bpb": 1.22}, description="add warmup")
    return MutationContext(parent=parent, lineage=[root, parent], inspirations=[other],
                           tried_on_parent=["halve the batch size -> val_bpb 1.2600 (Δ +0.0100)"],
                           notebook=notebook, program_md="# Goal\nLower val_bpb.",
                           mutable_files=["train.py"], seed=seed)


POLICY_KEYS = ("call_attempts", "backoff_s", "max_backoff_s")  # CallPolicy
FACT_KEYS = ("proposal_timeout_s", "down_after_s", "max_in_flight", "seed")  # OperatorFacts
SEAMS = ("ledger", "limiter", "clock", "limits")  # LLMMutator's keywords


def mutator(api: FakeAPI, **options) -> LLMMutator:
    """An LLM mutator on the fake API: `options` go to its config section (the llm operator's
    keys), the run's facts, its call policy or its keywords, by name."""
    options.setdefault("backoff_s", 0.001)
    client = api.client(max_retries=options.pop("sdk_max_retries", 2))
    policy = CallPolicy(**{k: options.pop(k) for k in POLICY_KEYS if k in options})
    facts = OperatorFacts(**{k: options.pop(k) for k in FACT_KEYS if k in options})
    seams = {k: options.pop(k) for k in SEAMS if k in options}
    op = LLMOperator(kind="llm", **{"model": "claude-sonnet-5-5", **options})
    return LLMMutator(op, facts, client=client, policy=policy, **seams)


def run(coro):
    return asyncio.run(coro)


def test_realistic_answer_becomes_a_child_with_exact_usage_and_cost():
    api = FakeAPI(message("DESCRIPTION: raise the matrix learning rate to 0.06\n",
                          GOOD.split("\n", 1)[1]))
    proposal = run(mutator(api).propose(context()))
    assert proposal.error == "" and api.refused == []
    assert "MATRIX_LR = 0.06\n" in proposal.files["train.py"]
    assert proposal.files["train.py"] == SOURCE.replace("0.04", "0.06")
    assert proposal.description == "raise the matrix learning rate to 0.06"
    assert proposal.rationale.startswith("loss is still falling")
    assert proposal.mutator == "llm" and proposal.model == "claude-sonnet-5-5"
    assert "Let me look" not in proposal.raw_answer  # thinking is not the answer
    assert dict(proposal.usage) == USAGE
    assert proposal.cost_usd == pytest.approx(SONNET_55_COST, rel=1e-12, abs=0)


def test_the_request_is_exactly_what_the_api_accepts_for_claude_5():
    api = FakeAPI(message(GOOD))
    run(mutator(api, max_tokens=4000, effort="medium").propose(context()))
    body = api.requests[0]
    assert api.refused == []
    assert body["model"] == "claude-sonnet-5-5" and body["max_tokens"] == 4000
    assert body["stream"] is True  # streamed: long thinking never meets a request timeout
    assert body["thinking"] == {"type": "adaptive"} and "budget_tokens" not in json.dumps(body)
    assert body["output_config"] == {"effort": "medium"}
    assert not {"temperature", "top_p", "top_k"} & set(body)
    # no explicit timeout of ours: the SDK's own guard and defaults apply
    assert api.headers[0].get("x-stainless-timeout", "NOT_GIVEN") == "NOT_GIVEN"
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert "# Goal\nLower val_bpb." in body["system"][0]["text"]
    assert "<<<<<<< SEARCH" in body["system"][0]["text"]
    head, tail = body["messages"][0]["content"]
    assert head["cache_control"] == {"type": "ephemeral"} and "cache_control" not in tail
    assert "MATRIX_LR = 0.04" in head["text"] and "deeper model" in head["text"]
    assert "Δ -0.0500" in head["text"]  # lineage with its change in val_bpb
    assert "Lab notebook" in tail["text"] and "lower LR" in tail["text"]
    assert "halve the batch size" in tail["text"]
    huge = run(mutator(FakeAPI(message(GOOD))).propose(context(notebook="x" * 500_000)))
    assert huge.error == ""
    assert api.headers[0]["authorization"] == "Bearer test"


def test_the_stand_in_refuses_what_the_real_api_refuses():
    """The rules the requests are checked against can fail: each refusal as the API gives it."""
    base = {"model": "claude-sonnet-5-5", "max_tokens": 100,
            "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    assert validate(base, headers) is None
    cases = [({"temperature": 0.7}, 400), ({"top_p": 0.9}, 400), ({"top_k": 5}, 400),
             ({"thinking": {"type": "enabled", "budget_tokens": 4000}}, 400),
             ({"output_config": {"effort": "ultra"}}, 400), ({"model": "claude-nope-9"}, 404),
             ({"max_tokens": 200_000}, 400)]
    for extra, status in cases:
        assert validate({**base, **extra}, headers).status == status, extra
    assert validate({k: v for k, v in base.items() if k != "max_tokens"}, headers).status == 400
    assert validate(base, {"anthropic-version": "2023-06-01"}).status == 401
    assert validate({**base, "temperature": 0.7, "model": "claude-sonnet-4-5"}, headers) is None


def test_rate_limit_and_overload_are_retried_by_the_sdk_then_succeed():
    api = FakeAPI(error(429, "rate_limit_error"), error(529, "overloaded_error"), message(GOOD))
    m = mutator(api, sdk_max_retries=2)
    proposal = run(m.propose(context()))
    assert proposal.error == "" and len(api.requests) == 3
    assert m.health.consecutive_failures == 0 and not m.is_down


def test_down_is_time_based_with_a_shared_backoff_not_a_count_of_failures():
    now = [0.0]
    api = FakeAPI(error(529, "overloaded_error"))
    m = mutator(api, sdk_max_retries=0, call_attempts=2, down_after_s=900, backoff_s=0.001,
                max_backoff_s=0.002, clock=lambda: now[0])
    for _ in range(20):  # a burst of failures: an incident, not an outage
        proposal = run(m.propose(context()))
        assert "OverloadedError" in proposal.error and proposal.infrastructure
    assert not m.is_down and m.health.consecutive_failures == 40
    now[0] = 899.0
    assert not m.is_down
    now[0] = 900.0
    assert m.is_down and "no LLM call has succeeded for 15 min" in m.down_reason
    api.responses = [message(GOOD)]
    assert run(m.propose(context())).error == ""
    assert not m.is_down and m.health.failing_since is None
    m.health.failed("x", retry_after=30.0)  # the server's retry-after holds every caller
    assert m.health.wait_s() == pytest.approx(30.0)


@pytest.mark.parametrize("status,kind,words", [
    (401, "authentication_error", "AuthenticationError"),
    (403, "permission_error", "PermissionDeniedError"),
])
def test_auth_and_permission_errors_stop_at_once(status, kind, words):
    api = FakeAPI(error(status, kind))
    m = mutator(api)
    proposal = run(m.propose(context()))
    assert words in proposal.error and m.is_down and m.fatal_reason
    assert len(api.requests) == 1
    run(m.propose(context()))
    assert len(api.requests) == 1  # never asked again


def test_an_unknown_model_stops_at_once_with_its_name():
    api = FakeAPI(message(GOOD))
    client = api.client()
    m = LLMMutator(LLMOperator(kind="llm", model="claude-sonnet-5-7", input_usd_per_mtok=2,
                               output_usd_per_mtok=10),
                   client=client, policy=CallPolicy(backoff_s=0.001))
    proposal = run(m.propose(context()))
    assert api.refused[0].status == 404 and len(api.requests) == 1
    assert "model claude-sonnet-5-7 was not found" in m.fatal_reason and m.is_down
    assert "claude-sonnet-5-7" in proposal.error


def test_a_stream_that_fails_after_its_200_is_retried_and_its_usage_charged():
    ledger = SpendLedger()
    partial = message(GOOD)
    api = FakeAPI(Broken(partial, after=6), Broken(partial, after=7, drop=True), message(GOOD))
    m = mutator(api, ledger=ledger, sdk_max_retries=0, call_attempts=3)
    proposal = run(m.propose(context()))
    assert proposal.error == "" and len(api.requests) == 3
    # the two broken streams had read the prompt (message_start's usage) and generated some
    # thinking and text: all of it is billed, so all of it is charged
    assert proposal.usage["input_tokens"] == 3 * USAGE["input_tokens"]
    assert proposal.usage["cache_read_input_tokens"] == 3 * USAGE["cache_read_input_tokens"]
    assert USAGE["output_tokens"] < proposal.usage["output_tokens"]
    assert ledger.spent_usd == pytest.approx(proposal.cost_usd) and ledger.calls == 3
    assert proposal.cost_usd > SONNET_55_COST


def test_a_hung_call_times_out_while_other_proposals_go_on():
    async def answer(body):
        if "HANG" in json.dumps(body):
            await asyncio.sleep(3600)
        await asyncio.sleep(0.05)
        return message(GOOD)

    api = FakeAPI(answer)
    m = mutator(api, proposal_timeout_s=0.5, call_attempts=1, sdk_max_retries=0)

    async def three():
        return await asyncio.gather(m.propose(context("HANG")), m.propose(context()),
                                    m.propose(context()))

    hung, first, second = run(three())
    assert "longer than 0.5s" in hung.error
    assert first.error == "" and second.error == ""


def test_proposal_timeout_keeps_the_usage_already_spent():
    async def slow_second(body):
        if len(body["messages"]) > 1:
            await asyncio.sleep(3600)
        return message(GOOD.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.05"))

    m = mutator(FakeAPI(slow_second), proposal_timeout_s=0.5)
    proposal = run(m.propose(context()))
    assert "longer than 0.5s" in proposal.error
    assert dict(proposal.usage) == USAGE and proposal.cost_usd > 0


def test_failed_apply_goes_back_to_the_model_and_the_fix_is_used():
    wrong = GOOD.replace("SEARCH\nMATRIX_LR = 0.04", "SEARCH\nMATRIX_LR = 0.05")
    api = FakeAPI(message(wrong), message(GOOD))
    proposal = run(mutator(api).propose(context()))
    assert proposal.error == "" and "MATRIX_LR = 0.06" in proposal.files["train.py"]
    second = api.requests[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[1]["content"].startswith("DESCRIPTION: raise")
    assert "block 1" in second[2]["content"] and "not found" in second[2]["content"]
    assert "4| MATRIX_LR = 0.04" in second[2]["content"]  # the nearest lines, numbered
    assert dict(proposal.usage) == {k: 2 * v for k, v in USAGE.items()}
    assert "----- answer 2 -----" in proposal.raw_answer


def test_ambiguous_search_that_is_never_fixed_becomes_an_error():
    # "torch" occurs twice in the parent; neither answer quotes enough to pick one
    first = "DESCRIPTION: x\n\ntrain.py\n<<<<<<< SEARCH\ntorch\n=======\nnp\n>>>>>>> REPLACE\n"
    second = first.replace("DESCRIPTION: x", "DESCRIPTION: y")
    api = FakeAPI(message(first), message(second))
    proposal = run(mutator(api, max_apply_retries=1).propose(context()))
    assert proposal.files == {} and "did not apply after 2 answer(s)" in proposal.error
    assert "ambiguous" in api.requests[1]["messages"][2]["content"]
    assert "ambiguous" in proposal.error and proposal.description == "y"


def test_edits_to_prepare_py_are_refused_and_the_model_told():
    harness = GOOD.replace("train.py\n<<<", "prepare.py\n<<<")
    api = FakeAPI(message(harness), message(harness), message(harness))
    proposal = run(mutator(api, max_apply_retries=2).propose(context()))
    assert "prepare.py, which may not change" in proposal.error
    assert len(api.requests) == 3


def test_cut_off_answer_and_broken_syntax_get_feedback():
    cut = "DESCRIPTION: x\n\ntrain.py\n<<<<<<< SEARCH\nMATRIX_LR = 0.04\n=======\nMATRIX_L"
    broken = GOOD.replace("MATRIX_LR = 0.06", "MATRIX_LR = (0.06")
    fix = GOOD.replace("MATRIX_LR = 0.04\n=======\nMATRIX_LR = 0.06",
                       "MATRIX_LR = (0.06\n=======\nMATRIX_LR = 0.06")
    api = FakeAPI(message(cut, stop_reason="max_tokens"), message(broken), message(fix))
    proposal = run(mutator(api).propose(context()))
    assert "cut off" in api.requests[1]["messages"][2]["content"]
    assert "no longer parses" in api.requests[2]["messages"][4]["content"]
    assert proposal.error == "" and proposal.files["train.py"] == SOURCE.replace("0.04", "0.06")


def test_dollar_cap_reserves_each_call_in_flight_at_its_worst_case():
    active = {"now": 0, "max": 0}

    async def slow(body):
        active["now"] += 1
        active["max"] = max(active["max"], active["now"])
        await asyncio.sleep(0.05)
        active["now"] -= 1
        return message(GOOD)

    api = FakeAPI(slow)
    m = mutator(api, max_tokens=16000)
    worst = m.worst_call_usd()  # 30k prompt tokens at the cache-write price + 16k output
    assert worst == pytest.approx((30000 * 2.50 + 16000 * 10.0) / 1e6)
    ledger = SpendLedger(max_usd=2.5 * worst)
    m.ledger = ledger

    async def many():
        return await asyncio.gather(*(m.propose(context(seed=k)) for k in range(8)))

    proposals = run(many())
    assert active["max"] == 2  # a third call in flight could overshoot the cap
    assert ledger.spent_usd <= ledger.max_usd and ledger.reserved_usd == 0.0
    done = [p for p in proposals if not p.error]
    assert len(done) == len(api.requests) == ledger.calls
    spent = [p for p in proposals if p.error]
    # after each call the worst case is re-estimated from the real prompt size (a smaller one)
    assert all("budget is spent" in p.error and p.infrastructure for p in spent)
    assert m.budget_exhausted == (not ledger.affordable(m.worst_call_usd(),
                                                        counting_reserved=False))
    assert not m.is_down  # a spent budget is not an outage


def test_calls_in_flight_are_capped():
    active = {"now": 0, "max": 0}

    async def slow(body):
        active["now"] += 1
        active["max"] = max(active["max"], active["now"])
        await asyncio.sleep(0.05)
        active["now"] -= 1
        return message(GOOD)

    m = mutator(FakeAPI(slow), limiter=RateLimiter(max_in_flight=2, tokens_per_minute=10**9))

    async def many():
        return await asyncio.gather(*(m.propose(context(seed=k)) for k in range(6)))

    assert all(p.error == "" for p in run(many()))
    assert active["max"] == 2


def test_key_comes_from_the_environment_and_never_leaks(monkeypatch):
    secret = "sk-ant-secret-123"
    monkeypatch.setenv("MY_KEY", secret)
    api = FakeAPI(httpx2.Response(400, json={"type": "error", "error": {
        "type": "invalid_request_error", "message": f"bad key {secret}"}}))
    m = LLMMutator(LLMOperator(kind="llm", api_key_env="MY_KEY", base_url="http://llm.invalid"),
                   http_client=anthropic.DefaultAsyncHttpxClient(
                       transport=httpx2.MockTransport(api)))
    proposal = run(m.propose(context()))
    assert api.headers[0]["authorization"] == f"Bearer {secret}"
    assert secret not in proposal.error and "***" in proposal.error
    assert secret not in repr({k: v for k, v in vars(m).items() if k != "client"})
    monkeypatch.delenv("MY_KEY")
    with pytest.raises(ValueError, match="MY_KEY"):
        LLMMutator(LLMOperator(kind="llm", api_key_env="MY_KEY"))


def test_crossover_shows_both_parents_and_applies_to_the_first():
    api = FakeAPI(message(GOOD))
    proposal = run(CrossoverMutator(mutator(api)).propose(context()))
    assert proposal.error == "" and proposal.mutator == "crossover"
    text = json.dumps(api.requests[0])
    assert "second parent" in text and "c9" in text and "+WARMUP_FRAC = 0.1" in text
    lonely = context()
    lonely = MutationContext(**{**vars(lonely), "inspirations": []})
    assert "second parent" in run(CrossoverMutator(mutator(api)).propose(lonely)).error


_ANSWERS = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(["DESCRIPTION: x", "RATIONALE:", "train.py", "prepare.py",
                              "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE", "```python",
                              "```", "MATRIX_LR = 0.04", "MATRIX_LR = 0.06", "FILE: train.py",
                              "def train(ctx):", "    return 1", "", "\t", "DEPTH = 2"]),
             max_size=30).map("\n".join),
)


@settings(max_examples=60, deadline=None)
@given(answers=st.lists(_ANSWERS, min_size=1, max_size=3),
       stop=st.sampled_from(["end_turn", "max_tokens"]))
def test_garbage_answers_never_raise(answers, stop):
    api = FakeAPI(*[message(a, stop_reason=stop, thinking=False) for a in answers])
    proposal = run(mutator(api, max_apply_retries=2).propose(context()))
    assert (proposal.error == "") != (proposal.files == {})
    if not proposal.error:
        compile(proposal.files["train.py"], "train.py", "exec")
        assert proposal.files["train.py"] != SOURCE


def test_answer_with_only_blocks_is_described_by_its_change():
    api = FakeAPI(message(GOOD.split("\n\n", 1)[1], thinking=False))
    proposal = run(mutator(api).propose(context()))
    assert proposal.error == ""
    assert proposal.description == "train.py: MATRIX_LR = 0.04 -> MATRIX_LR = 0.06"


def test_connection_refused_is_retried_then_reported():
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    m = LLMMutator(LLMOperator(kind="llm", base_url=f"http://127.0.0.1:{port}",
                               api_key_env="NO_SUCH_KEY_VAR"),
                   policy=CallPolicy(sdk_max_retries=0, call_attempts=2, backoff_s=0.001,
                                     max_backoff_s=0.002))
    proposal = run(m.propose(context()))
    assert "failed 2 time(s): APIConnectionError" in proposal.error and proposal.infrastructure
    assert m.health.consecutive_failures == 2 and not m.is_down  # 15 minutes not yet up


def test_the_answers_rate_limit_headers_pace_the_next_call():
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 5))
    api = FakeAPI(message(GOOD), headers={"anthropic-ratelimit-requests-remaining": "0",
                                          "anthropic-ratelimit-requests-reset": reset})
    now, slept = [0.0], []

    async def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(4, sleep=sleep, clock=lambda: now[0])
    m = mutator(api, limiter=limiter)
    assert run(m.propose(context())).error == "" and slept == []
    assert limiter.header_pauses == 1 and 3.0 < limiter.paused_until <= 5.0
    assert run(m.propose(context())).error == ""
    assert 3.0 < slept[0] <= 5.0  # the second call waited for the window to reset
