"""The training budget on both sides of the channel: the referee's BatchServer, train.py's ctx.

BatchServer (numpy, no torch) lives in the referee: it draws the train rows in the seed's
order, counts the tokens it served and reads its own clock, and serves nothing once the
budget is spent. What the trainer process does is never counted by the trainer itself.

TrainContext is the `ctx` handed to train(ctx). Its batches come from a source: over the
channel from the referee (trainer_role.py), or straight from a BatchServer in the same
process (LocalSource: tests and research notebooks, where nothing is judged).

Time budgets: the clock starts after the unclocked warm-up (the compile steps): at most
`clock_skip_steps` batches, all of the size of the first, within `warmup_max_s` seconds; a
warm-up batch of another size, or a first clocked batch of another size, ends the warm-up
and charges its seconds to the budget. On CUDA the ctx does not drain the GPU every step:
before asking for batch k+1 it waits only for the work of batch k-1, so the referee's clock
(read when a request arrives) lags the GPU by at most one step; when the budget is spent the
ctx waits for everything pending.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np
from corpus import Split
from profiles import Profile


class BudgetError(ValueError):
    """A batch request the profile does not allow (the trainer broke the contract)."""


class BatchServer:
    """The referee's train batches: seed order, token and time budget, its own clock."""

    def __init__(self, profile: Profile, train: Split, seed: int, budget_fraction: float,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.budget_kind = profile.budget_kind
        self.budget = profile.budget * budget_fraction
        self.seq_len = profile.seq_len
        self.max_rows = profile.max_batch_rows
        self._skip = profile.clock_skip_steps if profile.budget_kind == "time" else 0
        self._warmup_max_s = profile.warmup_max_s
        self._clock = clock
        self._tokens = self.tokens = train.tokens
        starts = np.asarray(train.starts, dtype=np.int64)
        self._starts = starts[starts + self.seq_len < len(train.tokens)]
        if len(self._starts) == 0:
            raise ValueError(f"train split has no document of {self.seq_len + 1} tokens")
        self._rng = np.random.default_rng(seed)
        self._offsets = np.arange(self.seq_len + 1)
        self.tokens_served = 0
        self.batches_served = 0
        self.origin: float | None = None        # clock() when the budget clock started
        self.warmup_started: float | None = None
        self._warmup_rows: int | None = None
        self.spent_at: float | None = None      # clock() when a request found the budget spent
        self.last_at: float | None = None       # clock() at the last batch served or "stop"

    def counted_seconds(self, now: float | None = None) -> float:
        if self.origin is None:
            return 0.0
        end = now if now is not None else self._clock()
        return max(0.0, end - self.origin)

    def _start_clock(self, now: float, rows: int) -> None:
        """The warm-up is over: the clock starts now, or at the warm-up's start if it cheated."""
        fair = rows == self._warmup_rows and now - (self.warmup_started or now) <= self._warmup_max_s
        self.origin = now if fair else (self.warmup_started or now)

    def _tick(self, rows: int, now: float) -> None:
        if self.origin is not None:
            return
        if self.budget_kind != "time":  # the clock is the record's only (tokens are the budget)
            self.origin = now
            return
        if self.warmup_started is None:
            self.warmup_started, self._warmup_rows = now, rows
        if self.batches_served >= self._skip or rows != self._warmup_rows \
                or now - self.warmup_started > self._warmup_max_s:
            self._start_clock(now, rows)

    def _has_budget(self, batch_tokens: int, now: float) -> bool:
        if self.budget_kind == "tokens":
            return self.tokens_served + batch_tokens <= self.budget
        return self.counted_seconds(now) < self.budget

    def serve(self, rows: int) -> np.ndarray | None:
        """int64 [rows, seq_len + 1] of train tokens, or None once the budget is spent."""
        if isinstance(rows, bool) or not isinstance(rows, int) or not 1 <= rows <= self.max_rows:
            raise BudgetError(f"batch of {rows!r} rows requested; this profile allows 1 to "
                              f"{self.max_rows}")
        if self.spent_at is not None:
            return None
        now = self._clock()
        self._tick(rows, now)
        if not self._has_budget(rows * self.seq_len, now):
            self.spent_at = now
            return None
        starts = self._rng.choice(self._starts, size=rows)
        batch = np.asarray(self._tokens[starts[:, None] + self._offsets], dtype=np.int64)
        self.tokens_served += rows * self.seq_len
        self.batches_served += 1
        self.last_at = self._clock()
        return batch

    def stop(self) -> None:
        """The trainer left its loop: the clock's reading for the record is taken here."""
        self.last_at = self._clock()

    def time_spent_at(self) -> float | None:
        """clock() when a time budget runs out, whether or not anyone asks (None: tokens, or
        no batch asked for yet); a warm-up counts as ending at its longest."""
        if self.budget_kind != "time":
            return None
        if self.origin is not None:
            return self.origin + self.budget
        if self.warmup_started is not None:  # a warm-up that never ends ends here
            return self.warmup_started + self._warmup_max_s + self.budget
        return None

    def training_seconds(self) -> float:
        """The record: clocked seconds up to the budget's end or the last thing the trainer did."""
        marks = [m for m in (self.spent_at, self.last_at) if m is not None]
        return self.counted_seconds(max(marks)) if marks else 0.0

    def state(self) -> dict:
        """What the trainer may know: used, left and progress (for its LR schedule)."""
        seconds = self.counted_seconds()
        used = self.tokens_served if self.budget_kind == "tokens" else seconds
        return {
            "tokens_used": self.tokens_served,
            "steps": self.batches_served,
            "counted_seconds": seconds,
            "progress": min(1.0, max(0.0, used / self.budget)) if self.budget > 0 else 1.0,
        }


class BatchSource(Protocol):
    def next(self, rows: int) -> tuple[np.ndarray | None, dict]: ...
    def stop(self) -> dict: ...


class LocalSource:
    """Batches straight from a BatchServer in this process (tests; nothing judged)."""

    def __init__(self, server: BatchServer) -> None:
        self.server = server

    def next(self, rows: int) -> tuple[np.ndarray | None, dict]:
        batch = self.server.serve(rows)
        return batch, self.server.state()

    def stop(self) -> dict:
        self.server.stop()
        return self.server.state()


class TrainContext:
    """ctx: device, shapes, the budgeted batch iterator (fed by `source`), a logger."""

    def __init__(self, profile: Profile, device, vocab_size: int, seed: int,
                 budget_fraction: float, source: BatchSource) -> None:
        import torch

        self._torch = torch
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
        self._source = source
        self._state: dict = {"tokens_used": 0, "steps": 0, "counted_seconds": 0.0, "progress": 0.0}
        self._marks: deque = deque()  # CUDA events recorded at requests, not yet waited on
        self._spent = False

    @classmethod
    def local(cls, profile: Profile, device, train: Split, vocab_size: int, seed: int,
              budget_fraction: float) -> TrainContext:
        """A ctx serving from `train` in this process (no referee: for tests and notebooks)."""
        server = BatchServer(profile, train, seed, budget_fraction)
        return cls(profile, device, vocab_size, seed, budget_fraction, LocalSource(server))

    # ---- what the referee last said ------------------------------------------------------
    @property
    def tokens_used(self) -> int:
        return int(self._state["tokens_used"])

    @property
    def steps(self) -> int:
        return int(self._state["steps"])

    @property
    def counted_seconds(self) -> float:
        return float(self._state["counted_seconds"])

    # ---- batches ------------------------------------------------------------------------
    def _sync_before_request(self) -> None:
        """CUDA: wait for the work of the step before last (all of it at the clock's start)."""
        if self.device.type != "cuda" or self.budget_kind != "time" or self.steps < self._skip:
            return
        if self.steps == self._skip:
            self._torch.cuda.synchronize(self.device)
            return
        mark = self._torch.cuda.Event()
        mark.record()
        self._marks.append(mark)
        while len(self._marks) > 1:
            self._marks.popleft().synchronize()

    def _drain(self) -> None:
        while self._marks:
            self._marks.popleft().synchronize()

    def batches(self, batch_size: int) -> Iterator[tuple]:
        """(x, y) LongTensors [batch_size, seq_len] on device, until the budget is spent."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        torch, cuda = self._torch, self.device.type == "cuda"
        try:
            while not self._spent:
                self._sync_before_request()
                rows, self._state = self._source.next(int(batch_size))
                if rows is None:
                    self._drain()
                    self._spent = True
                    return
                tensor = torch.from_numpy(rows)
                if cuda:
                    tensor = tensor.pin_memory().to(self.device, non_blocking=True)
                yield tensor[:, :-1], tensor[:, 1:]
        finally:  # train.py left the loop early (or crashed): the record's clock reads here
            if not self._spent:
                self._drain()
                self._state = self._source.stop()

    def progress(self) -> float:
        """Fraction of the budget used, in [0, 1]: drive LR schedules with it."""
        return float(self._state["progress"])

    def tokens_left(self) -> float:
        """Training tokens left (token budgets); math.inf under a time budget."""
        if self.budget_kind != "tokens":
            return math.inf
        return max(0.0, self.budget - self.tokens_used)

    def time_left(self) -> float:
        """Training seconds left (time budgets); math.inf under a token budget."""
        if self.budget_kind != "time":
            return math.inf
        return max(0.0, self.budget - self.counted_seconds)

    def log(self, msg: str) -> None:
        print(f"[train] {msg}", file=sys.stdout, flush=True)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA profiles that ask for it; a no-op elsewhere."""
        if self._bf16:
            return self._torch.autocast(device_type="cuda", dtype=self._torch.bfloat16)
        return contextlib.nullcontext()
