"""Between the config/store and the core: the operators' names, the core's settings, and the
population port over the store (`population.port.StorePopulation`), each built once."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolve.config.schema import Config
from evolve.controller.core import Settings
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


def store_population(store: Store, config: Any, root_id: str = "root") -> StorePopulation:
    """The run's population port over the store, built once from the config: the strategy's
    selector on each island's survivors (bounded queries: only the top `size` rows)."""
    population = config.population
    return StorePopulation(store, config.selection.build(), size=population.size,
                           islands=population.islands, root_id=root_id,
                           stagnation_reseed_after=population.stagnation_reseed_after,
                           broadcast=population.migration == "broadcast")
