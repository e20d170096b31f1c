"""Between the config/store and the core: the operators' names, the core's settings, and the
live parent choice (the config's selection strategy over the store)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from evolve.controller.core import Settings
from evolve.mutate.operators import label_of
from population.selection import make_selector
from population.store import Store
from population.survival import population_size


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
    return {name: label_of(op.kind, getattr(op, "model", ""))
            for name, op in zip(operator_names(config), config.mutation.operators, strict=True)}


def settings_from_config(config: Any) -> Settings:
    operators = [(name, op.weight) for name, op in zip(operator_names(config),
                                                       config.mutation.operators, strict=True)]
    tpm = [op.tokens_per_minute for op in config.mutation.operators
           if getattr(op, "tokens_per_minute", None)]
    budget = config.budget
    return Settings(
        lookahead=config.mutation.lookahead,
        max_concurrent_proposals=config.mutation.max_concurrent_proposals,
        max_experiments=budget.max_experiments, max_hours=budget.max_hours,
        target_val_bpb=budget.target_val_bpb, max_llm_usd=budget.max_llm_usd,
        tokens_per_minute=min(tpm) if tpm else None,
        max_lost_attempts=config.workers.max_lost_attempts,
        islands=config.population.islands, migration_interval=config.population.migration_interval,
        operators=operators, operator_labels=operator_labels(config),
        adaptive_operators=config.mutation.adaptive_weights,
        exploration=config.mutation.exploration, seed=config.seed,
        device_groups=config.workers.device_groups,
    )


class StoreParents:
    """The core's `ParentSource` over the store: the config's strategy on an island's survivors
    (bounded queries: only the top `size` rows are read)."""

    def __init__(self, store: Store, config: Any, root_id: str = "root") -> None:
        self.store = store
        self.root_id = root_id
        selection = config.selection
        self.size = population_size(selection.strategy, config.population.size)
        self.selector = make_selector(selection.strategy, tournament_size=selection.tournament_size,
                                      power=selection.rank_power)

    def choose_parent(self, island: int, rng: random.Random) -> str:
        if self.selector.name == "random":  # random search: children of the root only
            return self.root_id
        survivors = self.store.survivors(island, self.size)
        if not survivors:  # an island not seeded yet grows from the best there is
            best = self.store.best()
            return best.id if best is not None else self.root_id
        return self.selector.select(survivors, rng).id
