"""Fixtures of the red-team suite: the prepared data, and the honest seed's score per profile."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from arena import HONEST, TIME_PROFILE, TOKEN_PROFILE, Arena, make_template, prepare_cache  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "redteam: adversarial candidates run through the real runner (still run in CI)")


@pytest.fixture(scope="session")
def prepared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic data, built once per session and copied into each arena."""
    root = tmp_path_factory.mktemp("redteam-data")
    cache = root / "cache"
    prepare_cache(make_template(root / "template"), cache)
    return cache


@pytest.fixture(scope="session")
def honest_scores(tmp_path_factory: pytest.TempPathFactory, prepared_cache: Path) -> dict[str, float]:
    """The bar per profile: the honest seed (train_cpu.py) through the same path.

    The token profile is deterministic: one run, the bar is its score. Under the time profile
    the score depends on how many steps fit in the budget on this machine at this moment, so
    the bar is the better of two honest runs given twice the budget: an attack beats it only
    by training well beyond its budget, not by a lucky quiet machine.
    """
    arena = Arena.build(tmp_path_factory.mktemp("redteam-honest"), prepared_cache)
    token = arena.run("honest-token", HONEST, TOKEN_PROFILE)
    assert token.outcome == "done", (token.reason, token.log_tail)
    timed = [arena.run(f"honest-time-{i}", HONEST, TIME_PROFILE, budget_fraction=2.0)
             for i in range(2)]
    assert all(r.outcome == "done" for r in timed), [(r.reason, r.log_tail) for r in timed]
    return {TOKEN_PROFILE: token.val_bpb, TIME_PROFILE: min(r.val_bpb for r in timed)}


@pytest.fixture
def arena(tmp_path: Path, prepared_cache: Path) -> Arena:
    return Arena.build(tmp_path, prepared_cache)
