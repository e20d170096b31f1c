"""Keep a run inside the account's rate limits: a cap on calls in flight, a token budget, and
the limits the API itself reports.

`TokenBucket` and `pause_from_headers` are pure (the caller passes the time), so the
discrete-event simulation drives the same arithmetic on its virtual clock; `RateLimiter` is
their asyncio shell. The manual `tokens_per_minute` budget and the `anthropic-ratelimit-*`
response headers work side by side: the budget spreads calls out before the account is near
its limit, the headers stop every call when the account says it is at it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime

# The headers the Messages API sends with every answer (and with a 429), per limit:
# <prefix>-remaining (what is left in the window) and <prefix>-reset (RFC 3339, when it refills).
RATE_LIMIT_HEADERS = ("anthropic-ratelimit-requests", "anthropic-ratelimit-tokens",
                      "anthropic-ratelimit-input-tokens", "anthropic-ratelimit-output-tokens")
MAX_HEADER_PAUSE_S = 120.0  # a reset time further out than this is a skewed clock, not a limit


def _reset_in(value: str | None, wall_now: float) -> float | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return max(0.0, when - wall_now)


def pause_from_headers(headers: Mapping[str, str], wall_now: float,
                       next_tokens: float) -> float:
    """Seconds every call should wait, from one answer's rate-limit headers (0 = go on).

    A window with no requests left, or fewer tokens left than the next call needs, pauses
    until it resets; a `retry-after` (sent with a 429) pauses at least that long."""
    pause = 0.0
    lowered = {k.lower(): v for k, v in headers.items()}
    for prefix in RATE_LIMIT_HEADERS:
        remaining = lowered.get(f"{prefix}-remaining")
        if remaining is None:
            continue
        try:
            left = float(remaining)
        except ValueError:
            continue
        need = 1 if prefix.endswith("requests") else next_tokens
        if left < need:
            wait = _reset_in(lowered.get(f"{prefix}-reset"), wall_now)
            pause = max(pause, wait if wait is not None else 1.0)
    try:
        pause = max(pause, float(lowered.get("retry-after", "") or 0))
    except ValueError:
        pass
    return min(pause, MAX_HEADER_PAUSE_S)


class TokenBucket:
    """Tokens-per-minute budget: refills continuously up to one minute's worth.

    A call takes its estimate up front; `settle` corrects by the actual usage afterwards,
    so the bucket may go into debt and later calls wait it off.
    """

    def __init__(self, tokens_per_minute: float, now: float = 0.0) -> None:
        if tokens_per_minute <= 0:
            raise ValueError(f"tokens_per_minute must be > 0, got {tokens_per_minute}")
        self.capacity = float(tokens_per_minute)
        self.rate = self.capacity / 60.0
        self.level = self.capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def delay(self, tokens: float, now: float) -> float:
        """Seconds to wait before `tokens` can be taken (0 when they can be taken now)."""
        self._refill(now)
        need = min(tokens, self.capacity)  # a call bigger than a minute's budget waits for a full one
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, tokens: float, now: float) -> None:
        self._refill(now)
        self.level -= tokens

    def settle(self, estimated: float, actual: float, now: float) -> None:
        self._refill(now)
        self.level = min(self.capacity, self.level + estimated - actual)


class RateLimiter:
    """`async with limiter.slot(estimate) as slot: ...; slot.actual = n` around every call."""

    def __init__(self, max_in_flight: int = 8, tokens_per_minute: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                 wall: Callable[[], float] = time.time) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self._clock = clock
        self._sleep = sleep  # a virtual clock's sleep in simulations and tests
        self._bucket = TokenBucket(tokens_per_minute, clock()) if tokens_per_minute else None
        self._slots = asyncio.Semaphore(max_in_flight)
        self._bucket_lock = asyncio.Lock()  # first come, first served on the token budget
        self._wall = wall
        self.in_flight = 0
        self.waited_s = 0.0  # total time calls spent waiting on the token budget
        self.paused_until = 0.0  # on `clock`: the API said the account is at a limit
        self.header_pauses = 0

    def observe(self, headers: Mapping[str, str], next_tokens: float) -> float:
        """Read an answer's (or a 429's) rate-limit headers; returns the pause they call for."""
        pause = pause_from_headers(headers, self._wall(), next_tokens)
        if pause > 0:
            self.header_pauses += 1
            self.paused_until = max(self.paused_until, self._clock() + pause)
        return pause

    @asynccontextmanager
    async def slot(self, estimated_tokens: int) -> AsyncIterator[_Slot]:
        async with self._slots:
            while (held := self.paused_until - self._clock()) > 0:
                self.waited_s += held
                await self._sleep(held)
            if self._bucket is not None:
                async with self._bucket_lock:
                    while (wait := self._bucket.delay(estimated_tokens, self._clock())) > 0:
                        self.waited_s += wait
                        await self._sleep(wait)
                    self._bucket.take(estimated_tokens, self._clock())
            slot = _Slot(estimated_tokens)
            self.in_flight += 1
            try:
                yield slot
            finally:
                self.in_flight -= 1
                if self._bucket is not None:
                    actual = slot.actual if slot.actual is not None else estimated_tokens
                    self._bucket.settle(estimated_tokens, actual, self._clock())


class _Slot:
    def __init__(self, estimated: int) -> None:
        self.estimated = estimated
        self.actual: int | None = None  # set to the tokens the call really used
