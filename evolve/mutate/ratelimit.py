"""Keep a run inside the account's rate limits: a cap on calls in flight, a token budget, and
the limits the API itself reports.

`TokenWindow` and `pause_from_headers` are pure (the caller passes the time): the scheduler
core paces proposals by the same `TokenWindow` on its (virtual) clock; `RateLimiter` is their
asyncio shell around each call. The manual `tokens_per_minute` budget and the `anthropic-ratelimit-*`
response headers work side by side: the budget spreads calls out before the account is near
its limit, the headers stop every call when the account says it is at it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime

# The headers the Messages API sends with every answer (and with a 429), per limit:
# <prefix>-remaining (what is left in the window) and <prefix>-reset (RFC 3339, when it refills).
RATE_LIMIT_HEADERS = ("anthropic-ratelimit-requests", "anthropic-ratelimit-tokens",
                      "anthropic-ratelimit-input-tokens", "anthropic-ratelimit-output-tokens")
MAX_HEADER_PAUSE_S = 120.0  # a reset time further out than this is a skewed clock, not a limit
TOKEN_WINDOW_S = 60.0  # the window a tokens-per-minute budget counts over


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


class TokenWindow:
    """The tokens-per-minute rule, stated once: the tokens charged in the last minute (a
    call's estimate when it starts, corrected by its real usage when it ends) plus the next
    call's estimate must fit the budget; an empty minute always takes one call, however big.

    Pure (the caller passes the time): the scheduler core paces proposals by it on its
    virtual clock, `RateLimiter` paces each LLM call by it on the wall clock.
    """

    def __init__(self, tokens_per_minute: float) -> None:
        if tokens_per_minute <= 0:
            raise ValueError(f"tokens_per_minute must be > 0, got {tokens_per_minute}")
        self.tokens_per_minute = float(tokens_per_minute)
        self._charges: deque[tuple[float, float]] = deque()  # (time, tokens), oldest first
        self.in_window = 0.0

    def _expire(self, now: float) -> None:
        charges = self._charges
        while charges and charges[0][0] <= now - TOKEN_WINDOW_S:
            self.in_window -= charges.popleft()[1]
        if not charges:
            self.in_window = 0.0  # no rounding left over from the subtractions

    def charge(self, tokens: float, now: float) -> None:
        """Count `tokens` at `now` (negative: a call used less than was charged for it)."""
        self._expire(now)
        if tokens:
            self._charges.append((now, tokens))
            self.in_window += tokens

    def room(self, tokens: float, now: float) -> bool:
        """Whether a call estimated at `tokens` may start at `now`."""
        self._expire(now)
        return self.in_window <= 0 or self.in_window + tokens <= self.tokens_per_minute

    def next_change(self) -> float | None:
        """When the oldest charge leaves the minute (None: nothing charged)."""
        return self._charges[0][0] + TOKEN_WINDOW_S if self._charges else None


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
        self._window = TokenWindow(tokens_per_minute) if tokens_per_minute else None
        self._slots = asyncio.Semaphore(max_in_flight)
        self._window_lock = asyncio.Lock()  # first come, first served on the token budget
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
            if self._window is not None:
                async with self._window_lock:
                    await self._wait_for_room(self._window, estimated_tokens)
            slot = _Slot(estimated_tokens)
            self.in_flight += 1
            try:
                yield slot
            finally:
                self.in_flight -= 1
                if self._window is not None:
                    actual = slot.actual if slot.actual is not None else estimated_tokens
                    self._window.charge(actual - estimated_tokens, self._clock())

    async def _wait_for_room(self, window: TokenWindow, tokens: int) -> None:
        """Sleep until the minute has room for `tokens`, then charge them."""
        while not window.room(tokens, now := self._clock()):
            wait = (window.next_change() or now) - now
            self.waited_s += wait
            await self._sleep(wait)
        window.charge(tokens, self._clock())


class _Slot:
    def __init__(self, estimated: int) -> None:
        self.estimated = estimated
        self.actual: int | None = None  # set to the tokens the call really used
