"""The discrete-event simulation drives the real core: properties of its decisions at scale."""

from __future__ import annotations

import pytest

from evolve.controller.simulate import SimSpec, Simulation, simulate


def test_workers_stay_busy_at_64_workers():
    report = simulate(SimSpec(workers=64, hours=3.0, seed=1))
    assert report.stop_reason == "max_hours reached (3 h)"
    assert report.utilisation_after_root >= 0.97
    assert report.experiments > 64 * 8


def test_max_experiments_is_never_overshot_with_losses_and_crashes():
    report = simulate(SimSpec(workers=50, hours=100.0, max_experiments=300, loss_rate=0.05,
                              crash_rate=0.2, seed=2))
    assert report.experiments == 300
    assert report.lost_attempts > 0 and report.crashed > 0
    assert report.stop_reason == "max_experiments reached (300)"


def test_token_budget_caps_the_llm_rate():
    spec = SimSpec(workers=200, hours=4.0, tokens_per_minute=100_000, tokens_per_proposal=10_000,
                   seed=3)
    report = simulate(spec)
    assert report.llm_tokens_per_minute <= 100_000 * 1.02
    # The LLM budget, not the workers, limits the run: ~10 proposals a minute for 200 workers.
    assert report.utilisation < 0.5


def test_lookahead_zero_is_one_proposal_at_a_time():
    sequential = simulate(SimSpec(workers=1, hours=6.0, lookahead=0, seed=4))
    ahead = simulate(SimSpec(workers=1, hours=6.0, lookahead=1, seed=4))
    # Sequential: each worker waits through each proposal (10-90 s against 300 s).
    assert sequential.utilisation < 0.9 < ahead.utilisation


def test_the_strategy_is_built_with_its_parameters():
    # The simulator once built every strategy with its defaults, whatever the spec said.
    sim = Simulation(SimSpec(workers=8, strategy="tournament", selection={"tournament_size": 5}))
    assert sim.population.selector.tournament_size == 5
    greedy = Simulation(SimSpec(workers=8, strategy="greedy", population_size=8))
    assert greedy.population.size == 1  # the strategy's quirk, asked of its selector
    with pytest.raises(ValueError, match="tournament_sizes"):
        Simulation(SimSpec(workers=8, selection={"tournament_sizes": 5}))
