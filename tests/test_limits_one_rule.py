"""Each LLM limit is one rule with several callers: the token rate (`TokenWindow`, paced by
the scheduler core per proposal and by `RateLimiter` per call) and the dollar cap
(`population.budget`, checked by the core and by the mutators' `SpendLedger`). These tests
drive the callers side by side, so a caller that grew its own version would drift from the
other and fail here."""

from __future__ import annotations

import asyncio

import pytest
from test_controller_core import of, start

from evolve.controller.core import ProposalFailed, ProposalReady, Propose, Tick
from evolve.mutate.cost import SpendLedger
from evolve.mutate.ratelimit import RateLimiter, TokenWindow
from population import budget

TPM, CALL = 30_000, 10_000


def core_start_times(calls: int) -> list[float]:
    """When the core lets proposals start, each answered at once with CALL tokens used."""
    core, out = start(20, tokens_per_minute=TPM, tokens_per_proposal_guess=CALL, lookahead=1)
    times: list[float] = []
    now = 0.0
    pending = of(Propose, out)
    while len(times) < calls:
        times += [now] * len(pending)
        out = []
        for p in pending:
            out += core.handle(ProposalFailed(ticket=p.ticket, reason="x", tokens=CALL, now=now))
        pending = of(Propose, out)
        if not pending:
            now = core.next_wakeup()
            pending = of(Propose, core.handle(Tick(now=now)))
    return times[:calls]


def limiter_start_times(calls: int) -> list[float]:
    """When `RateLimiter` lets calls start, each using CALL tokens (a virtual clock)."""
    now = [0.0]

    async def virtual_sleep(seconds: float) -> None:
        now[0] += seconds
        await asyncio.sleep(0)

    limiter = RateLimiter(max_in_flight=calls, tokens_per_minute=TPM, clock=lambda: now[0],
                          sleep=virtual_sleep)
    times: list[float] = []

    async def one() -> None:
        async with limiter.slot(CALL) as slot:
            times.append(now[0])
            slot.actual = CALL

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(calls)))

    asyncio.run(main())
    return times


def test_the_core_and_the_call_limiter_pace_by_the_same_minute():
    expected = [0.0] * 3 + [60.0] * 3 + [120.0] * 3
    assert core_start_times(9) == expected
    assert limiter_start_times(9) == expected


def test_the_token_window_settles_usage_and_takes_one_big_call_in_an_empty_minute():
    window = TokenWindow(TPM)
    assert window.room(10 * TPM, 0.0)  # an empty minute: even a huge call goes
    window.charge(CALL, 0.0)
    window.charge(CALL, 5.0)
    assert window.room(CALL, 5.0) and not window.room(CALL + 1, 5.0)
    window.charge(2 * CALL, 5.0)  # the call used three times its estimate: settled at once
    assert not window.room(1, 59.9) and window.next_change() == 60.0
    assert not window.room(CALL, 60.0)  # the first charge left; 30k from t=5 still count
    window.charge(-2 * CALL, 61.0)  # a call that used less than charged gives it back
    assert window.room(CALL, 61.0)
    assert window.room(TPM, 65.0) and window.next_change() == 121.0
    with pytest.raises(ValueError, match="tokens_per_minute"):
        TokenWindow(0)


@pytest.mark.parametrize("spent", [0.99, 1.0, 1.01])
def test_the_core_and_the_ledger_agree_where_the_dollar_cap_is_reached(spent):
    cap = 1.0
    ledger = SpendLedger(max_usd=cap)
    ledger.record("m", {"output_tokens": 1}, spent)
    core, out = start(1, max_llm_usd=cap, lookahead=1, operators=(("llm", 1.0),))
    (proposal,) = of(Propose, out)
    out = core.handle(ProposalReady(ticket=proposal.ticket, candidate_id="c1", cost_usd=spent,
                                    now=1.0))
    core_stopped = core.status().closing is not None
    assert ledger.exhausted == core_stopped == budget.usd_reached(spent, cap) == (spent >= cap)
    assert ledger.remaining_usd == budget.usd_left(spent, cap) == max(0.0, cap - spent)
    # the ledger's reservation keeps under the same cap: a call fits exactly up to it
    assert ledger.affordable(0.0) == (spent <= cap) == budget.usd_fits(spent, 0.0, cap)
    assert not ledger.affordable(0.02)
