"""Is the LLM endpoint up? Judged by time, not by a count of failures.

With sixteen proposals in flight a two-minute incident fails sixteen calls at once; that is
an incident to wait out, not an outage. The endpoint is *down* once no call has succeeded
for `down_after_s` while calls kept failing; between failures every caller waits out a
shared, growing backoff, so an incident is not hammered by every proposal in flight.
A fatal error (a rejected key, no access, no such model) is down at once and for good.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

DOWN_AFTER_S = 15 * 60.0


class Health:
    """The endpoint's state as the calls see it; the clock is injectable for tests."""

    def __init__(self, down_after_s: float = DOWN_AFTER_S, *, backoff_s: float = 2.0,
                 max_backoff_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 seed: int = 0) -> None:
        self.down_after_s = down_after_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.clock = clock
        self._rng = random.Random(seed)
        self.failing_since: float | None = None  # first failure since the last success
        self.consecutive_failures = 0
        self.last_failure = ""
        self.fatal_reason = ""
        self.retry_at = 0.0  # no call before this (on `clock`)
        self.successes = 0

    def succeeded(self) -> None:
        self.failing_since = None
        self.consecutive_failures = 0
        self.retry_at = 0.0
        self.successes += 1

    def failed(self, reason: str, retry_after: float | None = None) -> None:
        """A call failed for a reason worth waiting out; callers back off before the next."""
        now = self.clock()
        if self.failing_since is None:
            self.failing_since = now
        self.consecutive_failures += 1
        self.last_failure = reason
        self.retry_at = max(self.retry_at, now + self.backoff(self.consecutive_failures - 1,
                                                             retry_after))

    def fatal(self, reason: str) -> None:
        self.fatal_reason = reason
        self.last_failure = reason

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Exponential with jitter, capped; never shorter than the server's retry-after."""
        base = min(self.max_backoff_s, self.backoff_s * (2 ** min(attempt, 30)))
        wait = base * (0.5 + self._rng.random() / 2)
        return max(min(self.max_backoff_s, wait), retry_after or 0.0)

    def wait_s(self) -> float:
        """How long a new call should wait before it is sent."""
        return max(0.0, self.retry_at - self.clock())

    @property
    def is_down(self) -> bool:
        if self.fatal_reason:
            return True
        return (self.failing_since is not None
                and self.clock() - self.failing_since >= self.down_after_s)

    @property
    def down_reason(self) -> str:
        if self.fatal_reason:
            return self.fatal_reason
        if not self.is_down:
            return ""
        minutes = (self.clock() - (self.failing_since or 0.0)) / 60
        return (f"no LLM call has succeeded for {minutes:.0f} min ({self.consecutive_failures} "
                f"failed in a row; last: {self.last_failure})")
