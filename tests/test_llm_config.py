"""The LLM operator's config refuses, at load time, what the Messages API would refuse."""

from __future__ import annotations

import asyncio

import pytest
from messages_standin import rate_limit_headers

from evolve.config import ConfigError, config_from_dict
from evolve.mutate.models import effort_levels, request_problems
from evolve.mutate.ratelimit import RateLimiter, pause_from_headers


def _llm(**op) -> object:
    return config_from_dict({"name": "x", "template": "builtin", "mutation": {"operators": [
        {"kind": "llm", **op}]}}).mutation.operators[0]


@pytest.mark.parametrize("key,value", [("temperature", 0.7), ("top_p", 0.9), ("top_k", 40)])
def test_sampling_parameters_on_claude_5_name_the_key_and_the_model(key, value):
    with pytest.raises(ConfigError) as caught:
        _llm(model="claude-sonnet-5-5", **{key: value})
    text = str(caught.value)
    assert "mutation.operators[0]" in text and f"{key}: {value}" in text
    assert "claude-sonnet-5-5" in text and "HTTP 400" in text


def test_sampling_parameters_stay_allowed_where_the_api_takes_them():
    assert _llm(model="claude-sonnet-4-5", temperature=0.7).temperature == 0.7
    local = _llm(model="qwen-local", base_url="http://127.0.0.1:1", temperature=0.3,
                 input_usd_per_mtok=0, output_usd_per_mtok=0)
    assert local.temperature == 0.3
    assert _llm(model="claude-opus-5-5", temperature=1.0).temperature == 1.0  # the default


def test_effort_takes_the_levels_the_model_accepts():
    assert _llm(model="claude-sonnet-5-5", effort="xhigh").effort == "xhigh"
    assert _llm(model="claude-opus-5-5", effort="max").effort == "max"
    with pytest.raises(ConfigError, match=r"effort: 'ultra' — model claude-sonnet-5-5 accepts "
                                          r"low, medium, high, xhigh, max"):
        _llm(model="claude-sonnet-5-5", effort="ultra")
    with pytest.raises(ConfigError, match="claude-sonnet-4-6 accepts low, medium, high, max"):
        _llm(model="claude-sonnet-4-6", effort="xhigh")
    with pytest.raises(ConfigError, match="claude-sonnet-4-5 takes no effort"):
        _llm(model="claude-sonnet-4-5", effort="low")
    assert effort_levels("claude-opus-4-5") == ("low", "medium", "high")
    assert request_problems("claude-haiku-5-5", {}, "medium") == []


def test_max_tokens_beyond_the_models_output_limit_is_refused():
    with pytest.raises(ConfigError, match="max_tokens: 200000 — model claude-opus-5-5 writes at "
                                          "most 128000"):
        _llm(model="claude-opus-5-5", max_tokens=200_000)
    assert _llm(model="claude-opus-5-5", max_tokens=128_000).max_tokens == 128_000


def test_a_thinking_budget_cannot_be_configured():
    with pytest.raises(ConfigError, match="thinking_tokens: unknown key"):
        _llm(model="claude-sonnet-5-5", thinking_tokens=8000)


def test_a_model_without_a_known_price_needs_prices_in_the_config():
    with pytest.raises(ConfigError, match="model claude-haiku-5-5 has no known price: set "
                                          "input_usd_per_mtok and output_usd_per_mtok"):
        _llm(model="claude-haiku-5-5")
    priced = _llm(model="claude-haiku-5-5", input_usd_per_mtok=0.1, output_usd_per_mtok=0.5,
                  cache_read_usd_per_mtok=0.01)
    assert priced.price_entry() == {"input": 0.1, "output": 0.5, "cache_read": 0.01}


def test_rate_limit_headers_pause_every_call_until_the_window_resets():
    wall = 1_800_000_000.0
    ok = rate_limit_headers(requests_left=50, tokens_left=900_000)
    assert pause_from_headers(ok, wall, 20_000) == 0.0
    import time as _time
    reset = _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(wall + 7))
    spent = {"anthropic-ratelimit-requests-remaining": "0",
             "anthropic-ratelimit-requests-reset": reset}
    assert pause_from_headers(spent, wall, 20_000) == pytest.approx(7.0)
    low = {"anthropic-ratelimit-input-tokens-remaining": "5000",
           "anthropic-ratelimit-input-tokens-reset": reset}
    assert pause_from_headers(low, wall, 20_000) == pytest.approx(7.0)
    assert pause_from_headers(low, wall, 1_000) == 0.0
    assert pause_from_headers({"retry-after": "12"}, wall, 1) == 12.0

    now, slept = [100.0], []

    async def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(4, clock=lambda: now[0], sleep=sleep, wall=lambda: wall)
    assert limiter.observe(spent, 1000) == pytest.approx(7.0)

    async def one_call():
        async with limiter.slot(1000):
            pass

    asyncio.run(one_call())
    assert slept == [pytest.approx(7.0)] and limiter.header_pauses == 1
