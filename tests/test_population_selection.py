"""Parent selection, survival and the keep/discard verdict: pure, in milliseconds."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from population.candidate import Candidate, Status
from population.selection import Greedy, Rank, Tournament, make_selector, proposal_rng
from population.survival import (
    lost_reason,
    lost_too_often,
    rank_key,
    survivors,
    verdict,
)


def scored(cid: str, bpb: float | None, finished: float = 0.0,
           status: Status = Status.DONE) -> Candidate:
    metrics = {} if bpb is None else {"val_bpb": bpb}
    return Candidate(id=cid, parent_id=None, island=0, generation=0,
                     files={"train.py": f"X = '{cid}'\n"}, status=status, metrics=metrics,
                     finished_at=finished)


POP = [scored(f"c{i}", 1.0 + i / 10, finished=i) for i in range(6)]  # best first


def test_greedy_always_takes_the_champion() -> None:
    rng = random.Random(0)
    assert {Greedy().select(POP, rng).id for _ in range(20)} == {"c0"}
    with pytest.raises(ValueError, match="no survivors"):
        Greedy().select([], rng)


def test_tournament_never_picks_the_worst_when_size_allows() -> None:
    rng = random.Random(1)
    picks = Counter(Tournament(3).select(POP, rng).id for _ in range(2000))
    assert "c4" not in picks and "c5" not in picks  # two better rivals always drawn
    assert picks["c0"] > picks["c1"] > picks["c2"] > picks["c3"] > 0
    assert Tournament(1).select(POP[:1], rng).id == "c0"
    assert Tournament(len(POP)).select(POP, rng).id == "c0"
    with pytest.raises(ValueError):
        Tournament(0)


def test_rank_weights_follow_a_power_law_on_rank() -> None:
    assert Rank(1.0).weights(3) == [1.0, 0.5, 1 / 3]
    assert Rank(0.0).weights(3) == [1.0, 1.0, 1.0]
    rng = random.Random(2)
    picks = Counter(Rank(2.0).select(POP, rng).id for _ in range(4000))
    assert picks["c0"] > picks["c1"] > picks["c2"] > 0
    assert abs(picks["c0"] / picks["c1"] - 4.0) < 1.0  # (1/1) / (1/2)^2


def test_rank_is_blind_to_the_scale_and_sign_of_scores() -> None:
    negative = [scored(f"n{i}", -100.0 + i, finished=i) for i in range(4)]
    a = [Rank(1.0).select(POP[:4], random.Random(s)).id[1:] for s in range(50)]
    b = [Rank(1.0).select(negative, random.Random(s)).id[1:] for s in range(50)]
    assert a == b


@pytest.mark.parametrize("strategy", ["greedy", "tournament", "rank"])
def test_selection_is_deterministic_under_a_seed(strategy: str) -> None:
    selector = make_selector(strategy, tournament_size=2, rank_power=1.5)
    assert selector.name == strategy
    runs = [[selector.select(POP, proposal_rng(7, i)).id for i in range(50)] for _ in range(2)]
    assert runs[0] == runs[1]
    if strategy != "greedy":
        other = [selector.select(POP, proposal_rng(8, i)).id for i in range(50)]
        assert other != runs[0]


def test_unknown_strategy_is_named() -> None:
    with pytest.raises(ValueError, match="'best'.*greedy"):
        make_selector("best")


def test_survivors_are_the_best_done_by_val_bpb() -> None:
    pool = [scored("slow", 2.0, 1), scored("fast", 1.0, 2), scored("crash", None, 3,
            Status.CRASHED), scored("tie", 1.0, 4), scored("mid", 1.5, 5),
            scored("nan", float("nan"), 6)]
    assert [c.id for c in survivors(pool, 3)] == ["fast", "tie", "mid"]
    assert [c.id for c in survivors(pool, 10)] == ["fast", "tie", "mid", "slow"]
    with pytest.raises(ValueError):
        survivors(pool, 0)
    assert make_selector("greedy").population_size(8) == 1
    assert make_selector("rank").population_size(8) == 8


def test_greedy_keep_and_revert_against_the_champion_at_arrival() -> None:
    champion = scored("champ", 1.0, 1)
    assert verdict(scored("better", 0.9, 2), [champion], 1) == "keep"
    assert verdict(scored("equal", 1.0, 2), [champion], 1) == "discard"
    assert verdict(scored("worse", 1.1, 2), [champion], 1) == "discard"
    assert verdict(scored("crash", None, 2, Status.CRASHED), [champion], 1) == "crash"
    assert verdict(scored("first", 3.0, 2), [], 1) == "keep"
    # two children of the same old champion: the second is judged against the first
    first = scored("first-child", 0.8, 2)
    assert verdict(first, [champion], 1) == "keep"
    assert verdict(scored("second-child", 0.9, 3), [first], 1) == "discard"


def test_verdict_with_a_population_needs_to_beat_the_worst() -> None:
    pop = [scored("a", 1.0, 1), scored("b", 2.0, 2)]
    assert verdict(scored("c", 1.5, 3), pop, 2) == "keep"
    assert verdict(scored("c", 2.0, 3), pop, 2) == "discard"
    assert verdict(scored("c", 9.0, 3), pop, 3) == "keep"  # room left


@given(st.lists(st.floats(0.5, 5.0), min_size=1, max_size=30), st.integers(1, 5))
def test_verdict_agrees_with_survival_replayed(scores: list[float], size: int) -> None:
    """Keep iff the child is among the survivors right after its result arrives."""
    arrived: list[Candidate] = []
    for i, bpb in enumerate(scores):
        child = scored(f"c{i}", bpb, finished=i)
        before = survivors(arrived, size)
        arrived.append(child)
        after = survivors(arrived, size)
        assert (verdict(child, before, size) == "keep") == (child in after)
        assert after == sorted(after, key=rank_key)


def test_lost_too_often() -> None:
    assert not lost_too_often(2, 2) and lost_too_often(3, 2)
    assert "3 times" in lost_reason(3)
