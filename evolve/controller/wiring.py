"""Between the config/store and the controller: the operators' names, the core's settings,
the run-wide facts, the population port over the store (`population.port.StorePopulation`)
and the controller's whole plan (`RunPlan`), each built once from the config."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolve.config.schema import (
    Config,
    ConfirmConfig,
    FidelityConfig,
    NoiseConfig,
    PopulationConfig,
    WorkersConfig,
)
from evolve.controller.core import Settings
from evolve.mutate.merge import MERGE
from evolve.mutate.registry import token_rate
from population.port import StorePopulation
from population.store import Store


def operator_names(config: Any) -> list[str]:
    """The name each `mutation.operators` entry goes by: its kind, numbered if repeated
    (`llm0`, `llm1`). The mutators handed to the controller are keyed by these names."""
    kinds = Counter(op.kind for op in config.mutation.operators)
    seen: Counter[str] = Counter()
    names = []
    for op in config.mutation.operators:
        if kinds[op.kind] == 1:
            names.append(op.kind)
        else:
            names.append(f"{op.kind}{seen[op.kind]}")
            seen[op.kind] += 1
    return names


def operator_labels(config: Any) -> dict[str, str]:
    """Operator name -> the label its children are stored under (`label_of`): what its
    statistics are kept by. Operators of one kind (and model) share a label and its stats."""
    return {name: op.label()
            for name, op in zip(operator_names(config), config.mutation.operators, strict=True)}


def settings_from_config(config: Any) -> Settings:
    operators = [(name, op.weight) for name, op in zip(operator_names(config),
                                                       config.mutation.operators, strict=True)]
    budget = config.budget
    return Settings(
        lookahead=config.mutation.lookahead,
        max_concurrent_proposals=config.mutation.max_concurrent_proposals,
        max_experiments=budget.max_experiments, max_hours=budget.max_hours,
        target_val_bpb=budget.target_val_bpb, max_llm_usd=budget.max_llm_usd,
        offline_operators=frozenset(
            name for name, op in zip(operator_names(config), config.mutation.operators,
                                     strict=True) if op.kind in ("heuristic", "merge")),
        tokens_per_minute=token_rate(config.mutation.operators),
        max_lost_attempts=config.workers.max_lost_attempts,
        islands=config.population.islands, migration_interval=config.population.migration_interval,
        operators=operators, operator_labels=operator_labels(config),
        adaptive_operators=config.mutation.adaptive_weights,
        exploration=config.mutation.exploration, seed=config.seed,
        device_groups=config.workers.device_groups,
    )


@dataclass(frozen=True)
class RunFacts:
    """Run-wide facts, built once from the config and handed to the components that need
    them (each component otherwise takes only its own config section)."""

    root_id: str
    seed: int
    size: int                        # survivors an island keeps (the strategy's quirk applied)
    islands: int
    template: Path
    mutable_files: tuple[str, ...]
    profile: str = ""  # the harness profile (the prompt's brief and facts follow it)


def run_facts(config: Config, root_id: str = "root") -> RunFacts:
    return RunFacts(root_id=root_id, seed=config.seed,
                    size=config.selection.build().population_size(config.population.size),
                    islands=config.population.islands, template=Path(config.template_dir),
                    mutable_files=tuple(config.mutable_files), profile=config.profile)


def store_population(store: Store, selection: Any, population: PopulationConfig,
                     root_id: str = "root") -> StorePopulation:
    """The run's population port over the store, from the `selection` and `population`
    sections: the strategy's selector on each island's survivors (bounded queries: only the
    top `size` rows)."""
    return StorePopulation(store, selection.build(), size=population.size,
                           islands=population.islands, root_id=root_id,
                           stagnation_reseed_after=population.stagnation_reseed_after,
                           broadcast=population.migration == "broadcast")


def operator_of_kind(config: Any, kind: str) -> str | None:
    """The name of the first configured operator of `kind` (None: the config has none)."""
    return next((name for name, op in zip(operator_names(config), config.mutation.operators,
                                          strict=True) if op.kind == kind), None)


@dataclass(frozen=True)
class RunPlan:
    """What a `Controller` is built from, derived once from the config (`plan_run`): the
    run-wide facts, the core's settings and the config sections the shell's parts take. The
    controller never holds the whole config."""

    facts: RunFacts
    settings: Settings
    selection: Any                   # the `selection` section (its class is built at import)
    population: PopulationConfig
    workers: WorkersConfig
    noise: NoiseConfig
    confirm: ConfirmConfig
    fidelity: FidelityConfig
    proposal_timeout_s: float        # `mutation.proposal_timeout_s`: the shell's hard limit
    data: str                        # the data set the workers score on
    seed_script: str                 # the template file the root's train.py is read from
    merge_operator: str | None = None   # the carry trigger's operator (None: off)
    repair_operator: str | None = None  # crashes with a traceback are repaired by it


def plan_run(config: Config, root_id: str = "root") -> RunPlan:
    """The controller's plan, built once from a loaded config."""
    return RunPlan(
        facts=run_facts(config, root_id), settings=settings_from_config(config),
        selection=config.selection, population=config.population, workers=config.workers,
        noise=config.noise, confirm=config.confirm, fidelity=config.fidelity,
        proposal_timeout_s=config.mutation.proposal_timeout_s, data=config.data,
        seed_script=config.seed_script, merge_operator=operator_of_kind(config, MERGE),
        repair_operator=operator_of_kind(config, "repair"))
