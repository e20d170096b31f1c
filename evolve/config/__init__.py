"""The run configuration: one YAML file, validated into frozen typed objects.

No Ray or torch imports here: the CLI validates a config before anything heavy starts.
The names below load on first use, so `evolve.config.section` (the base a mutation kind's
config class builds on) can be imported by `evolve.mutate` while the schema imports the
registered kinds.
"""

from __future__ import annotations

import importlib
from typing import Any

_LOADING = ("config_from_dict", "load_config")

__all__ = [
    "HARNESS_FILE",
    "PROFILE_SEED_SCRIPTS",
    "BudgetConfig",
    "CommandOperator",
    "Config",
    "ConfigError",
    "CrossoverOperator",
    "HeuristicOperator",
    "LLMOperator",
    "MutationConfig",
    "Operator",
    "OutputConfig",
    "PopulationConfig",
    "RayConfig",
    "SelectionConfig",
    "WorkersConfig",
    "config_from_dict",
    "load_config",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'evolve.config' has no attribute {name!r}")
    module = "loading" if name in _LOADING else "schema"
    return getattr(importlib.import_module(f"evolve.config.{module}"), name)
