"""Keep a run inside the account's rate limits: a cap on calls in flight and a token budget.

`TokenBucket` is pure (the caller passes the time), so the discrete-event simulation drives
the same arithmetic on its virtual clock; `RateLimiter` is its asyncio shell.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager


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
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self._clock = clock
        self._sleep = sleep  # a virtual clock's sleep in simulations and tests
        self._bucket = TokenBucket(tokens_per_minute, clock()) if tokens_per_minute else None
        self._slots = asyncio.Semaphore(max_in_flight)
        self._bucket_lock = asyncio.Lock()  # first come, first served on the token budget
        self.in_flight = 0
        self.waited_s = 0.0  # total time calls spent waiting on the token budget

    @asynccontextmanager
    async def slot(self, estimated_tokens: int) -> AsyncIterator[_Slot]:
        async with self._slots:
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
