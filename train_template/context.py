"""The `ctx` handed to train(ctx): device, shapes, the budgeted train-batch iterator, a logger.

The budget lives here, not in train.py: the iterator stops when it is spent, and a second
call to batches() continues the same budget.

The time-budget clock is wall time since the end of the unclocked warm-up steps. On CUDA it
does not drain the GPU every step: each tick records an event and waits only for the one of
the tick before, so the host prepares batch k while the GPU still runs batch k-1 (the budget
check lags by at most one step). When the budget runs out, or train.py leaves the loop, the
clock waits for every event still pending, so it never counts less than a full
synchronisation at every tick would have. On CPU nothing runs ahead and nothing lags.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections import deque
from collections.abc import Iterator

import numpy as np
import torch
from corpus import Split
from profiles import Profile


class TrainContext:
    def __init__(self, profile: Profile, device: torch.device, train: Split, vocab_size: int,
                 seed: int, budget_fraction: float) -> None:
        self.device = device
        self.profile = profile.name
        self.seq_len = profile.seq_len
        self.vocab_size = vocab_size
        self.seed = seed
        self.compile = profile.compile and device.type == "cuda"
        self.budget_kind = profile.budget_kind
        self.budget = profile.budget * budget_fraction
        self._bf16 = profile.autocast_bf16 and device.type == "cuda"
        self._skip = profile.clock_skip_steps if profile.budget_kind == "time" else 0
        self._tokens = train.tokens
        starts = np.asarray(train.starts, dtype=np.int64)
        self._starts = starts[starts + self.seq_len < len(train.tokens)]
        if len(self._starts) == 0:
            raise ValueError(f"train split has no document of {self.seq_len + 1} tokens")
        self._rng = np.random.default_rng(seed)
        self._offsets = np.arange(self.seq_len + 1)
        self.tokens_used = 0
        self.steps = 0
        self.counted_seconds = 0.0
        self._origin: float | None = None  # perf_counter() when the clock started
        self._lag = 1 if device.type == "cuda" else 0  # steps the host may run ahead of the clock
        self._marks: deque[torch.cuda.Event | None] = deque()  # recorded at ticks, not yet waited on
        self._spent = False
        self.spent_at: float | None = None  # perf_counter() when the budget ran out

    # ---- budget ---------------------------------------------------------------------------

    def _tick(self) -> None:
        """Charge the time since the clock started (time budgets, after the skipped steps)."""
        if self.budget_kind != "time" or self.steps < self._skip:
            return
        if self._origin is None:  # the warm-up steps are done: drain them, start the clock
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self._origin = time.perf_counter()
            return
        mark = None
        if self.device.type == "cuda":
            mark = torch.cuda.Event()
            mark.record()  # the end of the work queued so far (the previous batch's step)
        self._marks.append(mark)
        self._catch_up(self._lag)

    def _catch_up(self, lag: int) -> None:
        """Wait until at most `lag` ticks' events are pending, then read the clock."""
        if self._origin is None:
            return
        while len(self._marks) > lag:
            mark = self._marks.popleft()
            if mark is not None:
                mark.synchronize()
        self.counted_seconds = time.perf_counter() - self._origin

    def _has_budget(self, batch_tokens: int) -> bool:
        if self.budget_kind == "tokens":
            return self.tokens_used + batch_tokens <= self.budget
        return self.counted_seconds < self.budget

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) LongTensors [batch_size, seq_len] on device, until the budget is spent."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        cuda = self.device.type == "cuda"
        try:
            while not self._spent:
                self._tick()
                if not self._has_budget(batch_size * self.seq_len):
                    self._catch_up(0)
                    self._spent, self.spent_at = True, time.perf_counter()
                    return
                starts = self._rng.choice(self._starts, size=batch_size)
                rows = torch.from_numpy(
                    np.asarray(self._tokens[starts[:, None] + self._offsets], dtype=np.int64))
                if cuda:
                    rows = rows.pin_memory().to(self.device, non_blocking=True)
                self.tokens_used += batch_size * self.seq_len
                self.steps += 1
                yield rows[:, :-1], rows[:, 1:]
        finally:  # train.py left the loop early (or crashed): count up to here
            if not self._spent:
                self._catch_up(0)

    def progress(self) -> float:
        """Fraction of the budget used, in [0, 1]: drive LR schedules with it."""
        used = self.tokens_used if self.budget_kind == "tokens" else self.counted_seconds
        return min(1.0, max(0.0, used / self.budget)) if self.budget > 0 else 1.0

    def tokens_left(self) -> float:
        """Training tokens left (token budgets); math.inf under a time budget."""
        return max(0.0, self.budget - self.tokens_used) if self.budget_kind == "tokens" else math.inf

    def time_left(self) -> float:
        """Training seconds left (time budgets); math.inf under a token budget."""
        return max(0.0, self.budget - self.counted_seconds) if self.budget_kind == "time" else math.inf

    def log(self, msg: str) -> None:
        print(f"[train] {msg}", file=sys.stdout, flush=True)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA profiles that ask for it; a no-op elsewhere."""
        if self._bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()
