"""The survival verdict and `Candidate.replace` are on every result's path (the store's and
the simulator's), so both are written for speed; these hold them to their plain definitions."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from population.candidate import Candidate, Status
from population.survival import is_ranked, rank_key, verdict

SCORES = st.one_of(st.none(), st.floats(0.5, 2.0), st.integers(1, 3),
                   st.sampled_from([math.nan, math.inf, True]))
STATUSES = st.sampled_from([Status.DONE, Status.DONE, Status.CRASHED, Status.RUNNING])


@st.composite
def candidates(draw, cid: str) -> Candidate:
    score = draw(SCORES)
    return Candidate(id=cid, parent_id="root", island=0, generation=1, files={},
                     status=draw(STATUSES), metrics={} if score is None else {"val_bpb": score},
                     finished_at=draw(st.floats(0, 100)))


def plain_verdict(child: Candidate, survivors: list[Candidate], size: int) -> str:
    """The rule as first written: room, or strictly better than the worst ranked survivor."""
    if not is_ranked(child):
        return "crash"
    ranked = [s for s in survivors if is_ranked(s) and s.id != child.id]
    if len(ranked) < size:
        return "keep"
    return "keep" if child.val_bpb < max(ranked, key=rank_key).val_bpb else "discard"


@given(child=candidates("child"), others=st.lists(st.integers(0, 30), max_size=12),
       size=st.integers(1, 8), data=st.data())
def test_the_verdict_is_the_plain_rule(child, others, size, data):
    survivors = [data.draw(candidates(f"s{i}")) for i in others]
    if data.draw(st.booleans()):
        survivors.append(child)  # a survivor list that already holds the child
    assert verdict(child, survivors, size) == plain_verdict(child, survivors, size)


def test_replace_is_dataclasses_replace():
    c = Candidate(id="c1", parent_id="root", island=2, generation=3, files={"train.py": "X = 1\n"},
                  metrics={"val_bpb": 1.2}, status=Status.DONE, donor_id="d")
    changes = {"status": Status.CRASHED, "metrics": {}, "reason": "boom", "triggered_by": "repair"}
    assert c.replace(**changes) == dataclasses.replace(c, **changes)
    assert c.replace() == c and c.replace() is not c
    assert c.status is Status.DONE  # the original is untouched
    with pytest.raises(TypeError, match="no_such_field"):
        c.replace(no_such_field=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.replace(reason="x").reason = "y"
