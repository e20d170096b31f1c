"""The two extension points, used as a newcomer would: a selection strategy and a mutation
operator registered from inside this test (no other module changes), then a tiny real
controller run that uses both, named by the config like the built-in ones."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import pytest
from annotated_types import Ge
from test_controller_shell import Recorder, make_template

from evolve.config import ConfigError, config_from_dict
from evolve.config.section import OperatorSection
from evolve.controller.executor import LocalExecutor
from evolve.controller.shell import Controller
from evolve.controller.wiring import operator_names, plan_run, settings_from_config
from evolve.mutate.base import MutationContext, Proposal
from evolve.mutate.registry import (
    OperatorKind,
    build_mutators,
    register_operator,
    secret_names,
    unregister_operator,
)
from population.candidate import Candidate, Status
from population.selection import Strategy, register_strategy, unregister_strategy
from population.store import Store

PICKS: list[tuple[int, str]] = []  # (the strategy's parameter, the parent it chose)


@dataclass(frozen=True)
class SecondBest:
    """Toy strategy: the survivor at rank `place` (0 = the best), or the last one."""

    place: int = 1
    name: str = "second-best"
    from_root = False

    def population_size(self, size: int) -> int:
        return size

    def select(self, survivors: Sequence[Candidate], rng: random.Random) -> Candidate:
        chosen = survivors[min(self.place, len(survivors) - 1)]
        PICKS.append((self.place, chosen.id))
        return chosen


class ToyOperator(OperatorSection):
    """Toy operator config: the name of a constant it appends; a rate budget and a key it
    declares."""

    kind: Literal["toy"]
    comment: str = "toy"
    tokens_per_minute: int | None = 1234  # the `Rate` capability
    key_env: str = "TOY_KEY"

    def secret_names(self) -> Sequence[str]:  # the `Secrets` capability
        return [self.key_env]


class ToyMutator:
    name = "toy"

    def __init__(self, comment: str) -> None:
        self.comment = comment

    async def propose(self, context: MutationContext) -> Proposal:
        source = context.parent.files["train.py"] + f"{self.comment.upper()}_{context.seed} = 1\n"
        return Proposal(files={"train.py": source}, description=f"{self.comment} {context.seed}",
                        rationale="toy", mutator="toy")


@pytest.fixture
def plugins():
    register_strategy(Strategy("second-best", lambda section: SecondBest(section.place),
                               params={"place": (Annotated[int, Ge(0)], 1)}))
    register_operator(OperatorKind("toy", ToyOperator,
                                   lambda op, context: ToyMutator(op.comment)))
    PICKS.clear()
    yield
    unregister_strategy("second-best")
    unregister_operator("toy")


def toy_config(template: Path, **selection):
    return config_from_dict({
        "name": "t", "template": str(template), "profile": "cpu-micro", "seed": 3,
        "population": {"size": 3}, "workers": {"count": 2},
        "selection": {"strategy": "second-best", **selection},
        "mutation": {"operators": [{"kind": "toy", "comment": "hello"}]},
        "budget": {"max_experiments": 6}})


def test_a_registered_strategy_and_operator_run_a_controller(plugins, tmp_path):
    config = toy_config(make_template(tmp_path, 0.05), place=2)
    settings = settings_from_config(config)
    assert settings.tokens_per_minute == 1234           # Rate, found by protocol
    assert secret_names(config.mutation.operators) == ["TOY_KEY"]  # Secrets, likewise
    mutators = build_mutators(config.mutation.operators, operator_names(config))
    assert isinstance(mutators["toy"], ToyMutator)
    with Store.open(tmp_path / "store.sqlite") as store:
        controller = Controller(plan_run(config), store, LocalExecutor(2), mutators, Recorder(),
                                work_root=tmp_path / "work", tick_s=0.2)
        reason = asyncio.run(controller.run())
        assert reason == "max_experiments reached (6)"
        children = [c for c in store.finished_in_order() if c.parent_id is not None]
        assert len(children) == 5 and all(c.mutator == "toy" for c in children)
        assert all(c.files["train.py"].splitlines()[-1].startswith("HELLO_") for c in children)
        assert all(c.status is Status.DONE for c in children)
    # Every child was made from the parent the toy strategy chose, with the config's
    # parameter — but those proposed while the root ran (before there was a population to
    # choose from), which are the root's own.
    assert PICKS and {place for place, _ in PICKS} == {2}
    chosen = [c for c in children if c.parent_id != "root"]
    assert chosen and {c.parent_id for c in chosen} <= {parent for _, parent in PICKS}


def test_the_config_checks_a_registered_strategy_s_parameters(plugins, tmp_path):
    template = make_template(tmp_path, 0.05)
    assert toy_config(template).selection.build().place == 1  # the row's default
    with pytest.raises(ConfigError, match="selection.place"):
        toy_config(template, place=-1)
    with pytest.raises(ConfigError, match="comment"):
        config_from_dict({"name": "t", "template": str(template), "profile": "cpu-micro",
                          "mutation": {"operators": [{"kind": "toy", "comment": 5}]}})


def test_an_unregistered_kind_or_strategy_is_refused(tmp_path):
    template = make_template(tmp_path, 0.05)
    # after the fixture removed them, the names are unknown again
    with pytest.raises(ConfigError, match="selection.strategy: Input should be 'greedy'"):
        toy_config(template)
    with pytest.raises(ConfigError, match="unknown operator kind 'toy'"):
        config_from_dict({"name": "t", "template": str(template), "profile": "cpu-micro",
                          "mutation": {"operators": [{"kind": "toy"}]}})
