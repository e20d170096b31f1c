"""Adversarial candidates, each run the way the engine runs a child: none may gain.

Each candidate is the seed train_cpu.py with one attack embedded, written as an LLM might
write it; make_candidates.py builds them from today's seed when the suite runs. A candidate passes the judge when its run ends invalid, crashed or timed
out, or scores no better than the honest seed (to 1e-6 on the deterministic token profile),
and nothing outside its experiment folder changed: template, data cache, run directory
(store, results.tsv, other experiments), the arena's home and temp folders, and the
interpreter's start-up hooks (.pth files in site-packages).

REDTEAM_REPORT=path appends one JSON line per attack (outcome, score, what changed, why): the
tables of TODAY.md (the harness before the referee) and REFEREE.md are made from it.
"""

from __future__ import annotations

import json
import os

import make_candidates
import pytest
from arena import (
    HONEST,
    TIME_PROFILE,
    TOKEN_PROFILE,
    changes,
    remove_new_hooks,
    site_packages_digest,
)

pytestmark = [pytest.mark.redteam, pytest.mark.slow]

# Attacks on the clock or on training after train() returns: a token budget allows any
# compute on the tokens served, so they are judged under a time budget.
TIME_ATTACKS = frozenset({"clock_patch", "train_after_return_thread", "train_in_forward",
                          "train_in_handback"})
TOKEN_TOLERANCE = 1e-6  # the token profile is deterministic: same data, order and maths
NO_SCORE = ("invalid", "crashed", "timed_out")

# Holes the judge does not close yet (none today: training in forward() and in the hand-back
# were closed by the referee's allowances, train_template/allowance.py). A name here is
# xfail, not strict, with its cause: for an attack found before its fix.
OPEN_HOLES: dict[str, str] = {}
ATTACKS = [pytest.param(name, marks=pytest.mark.xfail(reason=OPEN_HOLES[name], strict=False))
           if name in OPEN_HOLES else name
           for name in sorted(make_candidates.ATTACKS)]


@pytest.fixture(scope="session")
def candidates(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every candidate written into the session's temporary folder (to read after a failure)."""
    return make_candidates.write(tmp_path_factory.mktemp("redteam-candidates"))


def _report(row: dict) -> None:
    path = os.environ.get("REDTEAM_REPORT")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(row) + "\n")


@pytest.mark.parametrize("attack", ATTACKS)
def test_an_adversarial_candidate_gains_nothing(attack, arena, honest_scores, candidates):
    profile = TIME_PROFILE if attack in TIME_ATTACKS else TOKEN_PROFILE
    if profile == TOKEN_PROFILE:
        bar = honest_scores[profile] - TOKEN_TOLERANCE
    else:  # load drifts over a session: also an honest run beside this one, with 3x the budget
        paired = arena.run(f"honest-beside-{attack}", HONEST, profile, budget_fraction=3.0)
        assert paired.outcome == "done", (paired.reason, paired.log_tail)
        bar = min(honest_scores[profile], paired.val_bpb)
    source = candidates[attack].read_text()
    hooks_before = site_packages_digest()
    before = arena.snapshot(attack)
    try:
        result = arena.run(attack, source, profile)
        changed = changes(before, arena.snapshot(attack))
    finally:
        removed = remove_new_hooks(hooks_before)  # never leave a planted hook for the next test
    gained = result.outcome not in NO_SCORE and not result.val_bpb >= bar
    _report({"attack": attack, "profile": profile, "outcome": result.outcome,
             "val_bpb": result.val_bpb, "honest": bar, "bar": bar,
             "gained": gained, "changed": changed, "removed_hooks": removed,
             "reason": result.reason, "seconds": round(result.ended_at - result.started_at, 1)})
    assert not changed, f"{attack} changed things outside its folder: {changed}"
    assert not gained, (
        f"{attack} scored {result.val_bpb:.6f} ({result.outcome}), better than the honest seed's "
        f"{bar:.6f} on {profile}")
