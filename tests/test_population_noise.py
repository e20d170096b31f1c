"""The seed-noise decisions: noise floor, when to confirm, the paired decision, self-reseeding."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from population.noise import (
    credit,
    decide,
    missing_seeds,
    needs_confirmation,
    noise_floor,
    paired_seeds,
    reseeds_itself,
)


def test_paired_seeds_start_with_the_run_seed_and_are_distinct():
    seeds = paired_seeds(7, 5)
    assert seeds[0] == 7 and len(set(seeds)) == 5
    assert paired_seeds(7, 3) == seeds[:3]  # a longer list extends a shorter one


def test_noise_floor_is_the_sample_standard_deviation():
    floor = noise_floor([1.0, 1.2, 1.4])
    assert floor.mean == pytest.approx(1.2)
    assert floor.sigma == pytest.approx(0.2)
    assert noise_floor([3.0]).sigma == 0.0
    assert noise_floor([2.0, math.nan, 2.0]).values == (2.0, 2.0)
    with pytest.raises(ValueError, match="at least one"):
        noise_floor([math.inf])


def test_new_best_is_always_confirmed_and_narrow_margins_only_under_m_sigma():
    kw = {"sigma": 0.01, "margin_sigma": 2.0}
    assert needs_confirmation(0.9, best_bpb=1.0, displaced_bpb=1.1, **kw) == "new best"
    assert needs_confirmation(1.09, best_bpb=1.0, displaced_bpb=1.1, **kw) == "narrow margin"
    assert needs_confirmation(1.05, best_bpb=1.0, displaced_bpb=1.1, **kw) is None  # 5σ
    assert needs_confirmation(1.2, best_bpb=1.0, displaced_bpb=1.1, **kw) is None   # not kept
    assert needs_confirmation(1.05, best_bpb=1.0, displaced_bpb=None, **kw) is None  # room
    assert needs_confirmation(1.0, best_bpb=1.0, displaced_bpb=None, **kw) is None  # a tie


def test_missing_seeds_keeps_order():
    assert missing_seeds([1, 2, 3], {2: 0.5}) == [1, 3]


def test_a_real_gain_is_confirmed_on_paired_means():
    runs = {1: 0.90, 2: 0.91, 3: 0.89}
    incumbent = {1: 1.00, 2: 1.01, 3: 0.99, 4: 5.0}  # seed 4 is not shared: ignored
    c = decide("c1", "root", "new best", runs, incumbent, sigma=0.01, z=2.0)
    assert c.accepted and not c.untrusted
    assert c.seeds == (1, 2, 3)
    assert c.gain == pytest.approx(0.1)
    assert c.threshold == pytest.approx(2 * 0.01 * math.sqrt(2 / 3))
    assert credit(c.accepted, 0.93, [0.99]) == 0.93
    assert c.to_metrics()["accepted"] is True


def test_a_gain_within_seed_noise_is_not_confirmed_and_not_credited():
    c = decide("c1", "root", "new best", {1: 0.995, 2: 1.0}, {1: 1.0, 2: 1.0}, sigma=0.01, z=2.0)
    assert not c.accepted
    assert "within seed noise" in c.reason
    # ranked no better than the incumbent, whatever its own mean
    assert credit(c.accepted, c.candidate_mean, [1.0, c.incumbent_mean]) == 1.0


def test_identical_runs_under_different_seeds_are_untrusted():
    assert reseeds_itself({1: 0.5, 2: 0.5}, sigma=0.01)
    assert not reseeds_itself({1: 0.5, 2: 0.5}, sigma=0.0)  # deterministic template: expected
    assert not reseeds_itself({1: 0.5}, sigma=0.01)
    c = decide("c1", "root", "new best", {1: 0.5, 2: 0.5}, {1: 1.0, 2: 1.1}, sigma=0.01, z=2.0)
    assert c.untrusted and not c.accepted and "reseeds itself" in c.reason


def test_with_no_noise_any_strict_gain_is_enough():
    assert decide("c", "i", "new best", {0: 0.99}, {0: 1.0}, sigma=0.0, z=2.0).accepted
    assert not decide("c", "i", "new best", {0: 1.0}, {0: 1.0}, sigma=0.0, z=2.0).accepted


def test_no_shared_seed_is_an_error():
    with pytest.raises(ValueError, match="share no seed"):
        decide("c", "i", "new best", {0: 1.0}, {1: 1.0}, sigma=0.1, z=2.0)


@given(st.lists(st.floats(-3, 3), min_size=3, max_size=3), st.integers(0, 10_000))
def test_a_seed_only_change_is_rarely_accepted(offsets, seed):
    """Under pure noise, with the same paired seeds, the z=2 rule accepts only when the mean
    difference exceeds two standard errors; with tiny offsets it never does."""
    rng = random.Random(seed)
    sigma = 0.01
    base = {s: 1.0 + sigma * rng.gauss(0, 1) for s in range(3)}
    child = {s: base[s] + 1e-4 * offsets[i] for i, s in enumerate(range(3))}
    assert not decide("c", "i", "new best", child, base, sigma=sigma, z=2.0).accepted
