"""Limits on a proposal, each stated once.

The shell cuts a proposal off at `mutation.proposal_timeout_s`; a mutator that holds a
conversation (the LLM) stops itself a little earlier, at `mutator_deadline`, so it can
still hand back what the attempt cost and why it stopped instead of being cancelled.
"""

from __future__ import annotations

MUTATOR_SHARE = 0.9  # of the proposal timeout, the mutator's own deadline


def mutator_deadline(proposal_timeout_s: float) -> float:
    """The deadline a mutator sets itself inside the shell's `proposal_timeout_s`."""
    return MUTATOR_SHARE * proposal_timeout_s
