"""Asynchronous successive halving: promotion by rank among the results seen at a stage."""

from __future__ import annotations

import pytest

from population.fidelity import Stage, ladder, next_stage, promote, promotion_rank_limit


def test_ladder_appends_the_full_budget_and_checks_order():
    stages = ladder([Stage(0.25, 0.5), Stage(0.5, 0.3)])
    assert [s.budget_fraction for s in stages] == [0.25, 0.5, 1.0]
    with pytest.raises(ValueError, match="increase"):
        ladder([Stage(0.5, 0.5), Stage(0.25, 0.5)])
    with pytest.raises(ValueError, match="below 1"):
        ladder([Stage(1.0, 0.5)])
    with pytest.raises(ValueError, match="promote_top"):
        Stage(0.5, 0.0)


def test_the_first_results_are_promoted_then_only_the_top_fraction():
    assert promotion_rank_limit(1, 0.3) == 1
    assert promotion_rank_limit(10, 0.3) == 3
    seen: list[float] = []
    promoted = []
    for score in [2.0, 1.0, 3.0, 2.5, 0.5, 2.9, 1.5, 2.8, 2.7, 2.6]:
        seen.append(score)
        promoted.append(promote(score, seen, 0.3))
    # 2.0 first (alone), 1.0 best so far, 0.5 best so far, 1.5 third of 7 (limit 3)
    assert promoted == [True, True, False, False, True, False, True, False, False, False]


def test_crashes_are_never_promoted_and_the_last_stage_ends():
    stages = ladder([Stage(0.25, 0.5)])
    assert next_stage(stages, 0, None, [1.0]) is None
    assert next_stage(stages, 0, float("nan"), [1.0]) is None
    assert next_stage(stages, 0, 1.0, [1.0]) == 1
    assert next_stage(stages, 1, 0.1, [0.1]) is None


def test_only_like_is_compared_with_like():
    """A stage's decision uses only that stage's scores: a full-budget 0.5 elsewhere does not
    make a short-budget 2.0 hopeless."""
    short_stage_scores = [2.0, 2.2, 2.4]
    assert promote(2.0, short_stage_scores, 0.34)
