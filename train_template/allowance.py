"""How long the untrusted roles may compute once the budget is spent: the trainer's hand-back
and the evaluators' scoring. Pure policy (no torch, no candidate code); the referee applies it.

Under a time budget, every second a role computes after the budget's end is a second of
training the budget did not pay for: a trainer that keeps batches can train on them while it
"hands back", and a model that keeps them in its buffers can train on them again in its first
forward(). The logits cannot show this (both evaluators retrain alike, so causality holds);
only the time can. So each window is sized to the work it exists for, from what the referee
measured on its own clock, and a role that needs more is judged invalid:

- the hand-back (time budgets): `handback_base_s` (the step in flight at the budget's end,
  draining the device, the interpreter's own overhead) plus the artefact's bytes at a
  conservative write rate. The profile's `handback_s` stays the hard deadline (the trainer is
  killed there) and caps what a padded artefact could buy.
- an evaluator: `eval_floor_s` plus three eval batches' worth of tokens (loading the artefact,
  the first forward's one-time set-up: the tokens' part grows with the machine's load as the
  trainer saw it, the seconds' part covers what does not) plus, for every token it is asked to
  score, the seconds per token the trainer itself took (referee clock, served tokens). A forward pass costs about a third of a training step per
  token (no backward, no optimizer), so an honest evaluator uses a fraction of this; one that
  trains uses more. Counted in wall seconds from the load request, the referee's arithmetic
  between requests included (so computing in the background between requests buys nothing);
  checked after every batch and enforced as a deadline, so the allowance cannot be spent up
  front on the first batch. Time budgets only: under a token budget any
  compute on served tokens is allowed, so an evaluator's is no gain, and a bound in wall
  seconds would only risk honest runs where the machine's load swings between training and
  scoring (measured on a shared 2-core box: honest cpu-tiny scoring used 46% of it). There the
  figures are still measured and reported, not enforced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# Bytes per second an artefact is assumed to be written at: a SATA SSD's sustained rate, under
# what the page cache takes (GB/s), so an honest save fits and padding buys little.
HANDBACK_BYTES_PER_S = 250e6
# Evaluator seconds allowed per scored token, in units of the trainer's seconds per served
# token. 1.0 leaves honest forward passes (about 1/3 of a training step per token, 1/2 to 2/3
# when training was compiled and scoring is eager) a margin of 1.5-3x for load swings.
EVAL_SECONDS_PER_TRAIN_SECOND = 1.0


def written_bytes(path: os.PathLike) -> int:
    """The bytes the trainer really wrote: a sparse file's holes cost nothing to write, so
    they buy no time (st_blocks counts 512-byte units of allocated storage)."""
    stat = os.stat(path)
    return min(stat.st_size, stat.st_blocks * 512)


def handback_problem(waited_s: float, artefact_bytes: int, base_s: float) -> str | None:
    """Why a time-budget hand-back took longer than saving the model needs (None: it did not)."""
    needed = base_s + artefact_bytes / HANDBACK_BYTES_PER_S
    if waited_s <= needed:
        return None
    return (f"the trainer handed back its model {waited_s:.2f} s after the training budget was "
            f"spent; saving a {artefact_bytes / 1e6:.1f} MB model needs at most {needed:.2f} s "
            f"({base_s:g} s + its size at {HANDBACK_BYTES_PER_S / 1e6:g} MB/s): training past "
            "the budget")


@dataclass(frozen=True)
class EvalAllowance:
    """An evaluator's seconds for loading the model and scoring `tokens` tokens."""

    floor_s: float
    seconds_per_token: float  # the trainer's, on the referee's clock
    enforced: bool = True     # False: measured and reported only (token budgets)
    floor_tokens: int = 0     # more of the floor, in tokens at seconds_per_token

    @classmethod
    def measured(cls, floor_s: float, floor_tokens: int, trainer_seconds: float,
                 tokens_served: int, enforced: bool) -> EvalAllowance:
        """From the trainer's seconds (first batch to hand-back) and the tokens it was served.
        No tokens served: nothing was trained to train on again, so the floor alone."""
        rate = trainer_seconds / tokens_served if tokens_served > 0 else 0.0
        return cls(floor_s, max(0.0, rate) * EVAL_SECONDS_PER_TRAIN_SECOND, enforced,
                   floor_tokens)

    def seconds(self, tokens: int) -> float:
        return self.floor_s + (self.floor_tokens + tokens) * self.seconds_per_token

    def problem(self, role: str, busy_s: float, tokens: int) -> str:
        """The reason given when `role` had worked `busy_s` seconds, past its allowance."""
        return (f"the {role} needed more than its {self.seconds(tokens):.1f} s to load the model "
                f"and score {tokens:,} tokens (stopped after {busy_s:.1f} s; allowed: "
                f"{self.floor_s:g} s + {self.seconds_per_token * 1e6:.2f} us per token for "
                f"{self.floor_tokens:,} + {tokens:,} tokens, what the "
                "trainer took per token on the referee's clock): an evaluator that computes far "
                "longer than a forward pass is training past the budget")
