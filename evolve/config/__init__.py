"""The run configuration: one YAML file, validated into frozen typed objects.

No Ray or torch imports here: the CLI validates a config before anything heavy starts.
"""

from evolve.config.loading import config_from_dict, load_config
from evolve.config.schema import (
    HARNESS_FILE,
    PROFILE_SEED_SCRIPTS,
    BudgetConfig,
    CommandOperator,
    Config,
    ConfigError,
    CrossoverOperator,
    HeuristicOperator,
    LLMOperator,
    MutationConfig,
    Operator,
    OutputConfig,
    PopulationConfig,
    RayConfig,
    SelectionConfig,
    WorkersConfig,
)

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
