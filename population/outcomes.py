"""The names an attempt's outcome and an extra run's purpose may take, as enums (in the
manner of Optuna's `TrialState`). Each is a `str`, so stored rows, JSON and comparisons with
the plain strings a worker reports keep working unchanged."""

from __future__ import annotations

from enum import Enum


class Outcome(str, Enum):
    """How one attempt (or extra run) ended, or where it stands."""

    QUEUED = "queued"        # extra runs only: waiting for a worker
    RUNNING = "running"
    DONE = "done"
    CRASHED = "crashed"
    TIMED_OUT = "timed_out"
    INVALID = "invalid"      # the harness judged the result unusable
    LOST = "lost"            # the worker or node died under it
    REFUSED = "refused"      # the worker refused to score (its node differs): not its doing
    ABANDONED = "abandoned"  # a deliberate stop left it for resume: not its doing

    def __str__(self) -> str:
        return self.value

    @property
    def reported(self) -> bool:
        """One of the outcomes a worker reports for a run it finished."""
        return self in FINISHED


FINISHED = frozenset({Outcome.DONE, Outcome.CRASHED, Outcome.TIMED_OUT, Outcome.INVALID})
IN_FLIGHT = frozenset({Outcome.QUEUED, Outcome.RUNNING})


class Purpose(str, Enum):
    """Why an extra run (not an experiment) trains a candidate."""

    NOISE = "noise"      # the root under more seeds: σ of the score
    CONFIRM = "confirm"  # re-runs that confirm a gain
    TEST = "test"        # held-out test-split scoring
    STAGE = "stage"      # a promotion to the next fidelity stage

    def __str__(self) -> str:
        return self.value
