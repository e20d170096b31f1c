"""The shape of a run config: frozen pydantic models, one per YAML section.

Validation rules live beside the fields they check; `evolve.config.loading` turns their
failures into messages that name the file, the key and the line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, create_model, field_validator, model_validator

from evolve.config.section import (
    NonNegative,
    NonNegativeInt,
    Positive,
    PositiveInt,
    Section,
)
from evolve.mutate.kinds import (  # noqa: F401 - registers the built-in kinds; re-exported
    CommandOperator,
    CrossoverOperator,
    HeuristicOperator,
    LLMOperator,
)
from evolve.mutate.merge import MergeOperator  # noqa: F401 - registers the merge kind
from evolve.mutate.registry import kinds, on_register
from population.selection import STRATEGIES, ParentSelector
from population.selection import on_register as on_strategy

# Each profile names the seed script the template must hold for it (docs/contracts.md §1).
PROFILE_SEED_SCRIPTS: Mapping[str, str] = {
    "cpu-micro": "train_cpu.py",
    "cpu-tiny": "train_cpu.py",
    "cpu-bench": "train_cpu.py",
    "gpu-5min": "train.py",
}
HARNESS_FILE = "prepare.py"
# `template: builtin` names the train_template/ shipped beside this package, wherever the
# config file was copied to.
BUILTIN_TEMPLATE = "builtin"
BUILTIN_TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "train_template"

Profile = Literal["cpu-micro", "cpu-tiny", "cpu-bench", "gpu-5min"]
_Section = Section


class ConfigError(ValueError):
    """A config that cannot be used; the message is written for the user."""


class PopulationConfig(_Section):
    size: PositiveInt = 4
    islands: PositiveInt = 1
    migration_interval: NonNegativeInt = 10  # finished experiments between migrations; 0 = off
    stagnation_reseed_after: NonNegativeInt = 0  # finished experiments without gain; 0 = off
    # ring: every migration_interval results each island's best goes to the next island;
    # broadcast: a new best of the run goes to every island at once (gossip; no ring)
    migration: Literal["ring", "broadcast"] = "ring"


class _Selection(_Section):
    """The `selection` section: `strategy` names a row of `population.selection.STRATEGIES`,
    and every parameter a row declares is a field (its type and default from the row)."""

    # random: every child is made from the root (random search, a benchmark baseline)
    strategy: str = "tournament"

    @field_validator("strategy")
    @classmethod
    def _known(cls, value: str) -> str:
        # checked against the registry when the config is read, so a strategy registered
        # after this module was imported is accepted too
        if value not in STRATEGIES:
            names = [repr(n) for n in STRATEGIES]
            raise ValueError(f"Input should be {', '.join(names[:-1])} or {names[-1]}"
                             if len(names) > 1 else f"Input should be {names[0]}")
        return value

    def build(self) -> ParentSelector:
        """The selector this section names, built by its registry row."""
        return STRATEGIES[self.strategy].build(self)


def _selection_model() -> type[_Selection]:
    """The `selection` section with one field per parameter the registered strategies declare."""
    return create_model(  # type: ignore[no-any-return]
        "SelectionConfig", __base__=_Selection, __module__=__name__,
        **{key: (annotation, default) for row in STRATEGIES.values()
           for key, (annotation, default) in row.params.items()})


SelectionConfig = _selection_model()


def _operator_union() -> Any:
    """`mutation.operators` entries: one config class per registered kind, told by `kind`."""
    classes = tuple(kinds().values())
    return Annotated[Union[classes], Field(discriminator="kind")]  # noqa: UP007


Operator = _operator_union()


class MutationConfig(_Section):
    operators: Annotated[list[Operator], Field(min_length=1)] = Field(
        default_factory=lambda: [HeuristicOperator(kind="heuristic")]
    )
    lookahead: NonNegativeInt = 1  # proposals kept ready per worker; 0 = strictly sequential
    proposal_timeout_s: Positive = 600.0
    max_concurrent_proposals: PositiveInt = 8
    # when an LLM operator is down for good: stop the run (resume later), or fall back to the
    # heuristic mutator meanwhile (asking the LLM again every few proposals)
    on_llm_down: Literal["stop", "fallback"] = "stop"
    # the LLM is down once no call has succeeded for this long (with backoff between tries)
    llm_down_after_s: Positive = 900.0
    # adapt the operators' weights to how often their children beat their parent: each weight
    # is scaled by a UCB1 score (`evolve status` shows the statistics and current weights)
    adaptive_weights: bool = False
    exploration: NonNegative = 1.0  # UCB1's exploration constant; 0 = follow the rates alone

    @field_validator("operators")
    @classmethod
    def _some_weight(cls, value: list[Any]) -> list[Any]:
        if not any(op.weight > 0 for op in value):
            raise ValueError("every operator has weight 0; give at least one a weight > 0")
        return value

    @model_validator(mode="after")
    def _something_to_adapt(self) -> MutationConfig:
        if self.adaptive_weights and sum(op.weight > 0 for op in self.operators) < 2:
            raise ValueError(
                "adaptive_weights: true needs at least two operators with weight > 0 (it "
                "shifts weight between them); add an operator or set adaptive_weights: false")
        return self


class WorkersConfig(_Section):
    count: int | Literal["auto"] = "auto"
    gpus_per_worker: NonNegative = 0.0
    cpus_per_worker: Positive = 1.0
    timeout_grace_s: NonNegative = 120.0
    max_lost_attempts: PositiveInt = 3
    torch_threads: PositiveInt = 1
    # isolate: no network where the OS allows (else the run log says so); require: never
    # start an experiment with network access; allow: the normal network (evolve/workers/network.py)
    network: Literal["isolate", "require", "allow"] = "isolate"
    # warn: run where the harness's jail does not work, every such score marked unsandboxed
    # (live, status, report, export); require: start nothing there (evolve/workers/jail_check.py)
    sandbox: Literal["warn", "require"] = "warn"
    device_groups: bool = False  # one island group per device type instead of refusing to mix them

    @field_validator("count", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        if value == "auto" or (type(value) is int and value >= 1):
            return value
        raise ValueError(f"must be 'auto' or an integer >= 1, got {value!r}")


class BudgetConfig(_Section):
    max_experiments: PositiveInt | None = None
    max_hours: Positive | None = None
    target_val_bpb: Positive | None = None
    max_llm_usd: Positive | None = None


class NoiseConfig(_Section):
    seeds: PositiveInt = 1  # the root is trained under this many seeds to measure σ; 1 = off


class ConfirmConfig(_Section):
    seeds: NonNegativeInt = 0  # re-runs (other seeds) of a would-be best and its incumbent; 0 = off
    margin_sigma: NonNegative = 1.0  # also confirm children entering the population by < this·σ
    z: NonNegative = 2.0    # the mean gain must exceed z·σ·sqrt(2/seeds) to count


class TestSplitConfig(_Section):
    # Accepted for older configs, now free: every run scores the held-out test split beside val
    # (shown only by status --test, the report and the export); nothing is trained again for it.
    final: bool = True            # the final best lineage
    every_new_best: bool = False  # each new best as it is crowned


class StageConfig(_Section):
    budget_fraction: Annotated[float, Field(gt=0, lt=1)]  # of the profile's training budget
    promote_top: Annotated[float, Field(gt=0, le=1)] = 0.3  # share of this stage's results promoted


class FidelityConfig(_Section):
    # short-budget stages every child runs first (increasing fractions); none = off
    stages: list[StageConfig] = Field(default_factory=list)

    @field_validator("stages")
    @classmethod
    def _increasing(cls, value: list[StageConfig]) -> list[StageConfig]:
        fractions = [s.budget_fraction for s in value]
        if fractions != sorted(set(fractions)):
            raise ValueError(f"stage budget fractions must increase: {fractions}")
        return value


class OutputConfig(_Section):
    results_dir: str = "results"  # relative to the directory `evolve run` starts in


class RayConfig(_Section):
    address: str | None = None  # None: RAY_ADDRESS if set, else a local Ray


class Config(_Section):
    """A whole run. Field order matters: later validators read earlier fields."""

    name: str
    profile: Profile = "cpu-tiny"
    mutable_files: Annotated[list[str], Field(min_length=1)] = Field(
        default_factory=lambda: ["train.py"]
    )
    template: str
    data: str = "synthetic"
    seed: NonNegativeInt = 0
    population: PopulationConfig = Field(default_factory=PopulationConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)  # type: ignore[valid-type]
    mutation: MutationConfig = Field(default_factory=MutationConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    confirm: ConfirmConfig = Field(default_factory=ConfirmConfig)
    test: TestSplitConfig = Field(default_factory=TestSplitConfig)
    fidelity: FidelityConfig = Field(default_factory=FidelityConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="before")
    @classmethod
    def _fixed_size(cls, data: Any) -> Any:
        # a strategy that keeps a fixed population (greedy: the champion alone) fills in
        # population.size unless the user said otherwise
        if isinstance(data, dict):
            selection, population = data.get("selection"), data.get("population", {})
            if (
                isinstance(selection, Mapping)
                and isinstance(population, Mapping)
                and "size" not in population
            ):
                fixed = _fixed_size_of(selection.get("strategy"))
                if fixed is not None:
                    data = {**data, "population": {**population, "size": fixed}}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError(
                f"{value!r} is not usable as a directory name; use letters, digits, '.', '_', '-'"
            )
        return value

    @field_validator("mutable_files")
    @classmethod
    def _mutable_files(cls, value: list[str]) -> list[str]:
        for name in value:
            path = Path(name)
            if path.is_absolute() or ".." in path.parts or not name.endswith(".py"):
                raise ValueError(f"{name!r} must be a .py path inside the template")
            if name == HARNESS_FILE:
                raise ValueError(f"{HARNESS_FILE} is the fixed harness and cannot be mutable")
        if "train.py" not in value:
            raise ValueError("must include train.py (the harness imports it)")
        if len(set(value)) != len(value):
            raise ValueError("lists a file twice")
        return value

    @field_validator("template")
    @classmethod
    def _template(cls, value: str, info: Any) -> str:
        if value == BUILTIN_TEMPLATE:
            path = BUILTIN_TEMPLATE_DIR
            if not path.is_dir():
                raise ValueError(f"'builtin' names {path}, which is not there in this install; "
                                 "give the template's path instead")
        else:
            path = _resolve(value, info.context)
        if not path.is_dir():
            raise ValueError(
                f"{value!r} is not a directory; a relative path is looked up "
                f"{_where(info.context, value)}. Give an absolute path, or `template: builtin` "
                "for the train_template/ that ships with evolve")
        seed_script = PROFILE_SEED_SCRIPTS.get(info.data.get("profile", ""), "train.py")
        needed = [HARNESS_FILE, seed_script]
        needed += [f for f in info.data.get("mutable_files", []) if f != "train.py"]
        missing = [f for f in needed if not (path / f).is_file()]
        if missing:
            raise ValueError(f"{path} has no {', '.join(missing)}")
        return str(path)

    @field_validator("data")
    @classmethod
    def _data(cls, value: str, info: Any) -> str:
        if value in ("synthetic", "climbmix"):
            return value
        if value.startswith("text:") and value[5:]:
            path = _resolve(value[5:], info.context)
            if not path.exists():
                raise ValueError(f"{value[5:]!r} does not exist; a relative path is looked up "
                                 f"{_where(info.context, value[5:])}")
            problem = _text_problem(path)
            if problem:
                raise ValueError(f"text:{path} {problem}; point it at a .txt file or a folder "
                                 "of text files")
            return f"text:{path}"
        raise ValueError(f"{value!r} is not one of synthetic, climbmix, text:<path>")

    @field_validator("selection")
    @classmethod
    def _size_fits(cls, value: Any, info: Any) -> Any:
        population = info.data.get("population")
        kept = value.build().population_size(population.size) if population is not None else None
        if kept is not None and kept != population.size:
            champions = "one champion" if kept == 1 else f"{kept} candidates"
            raise ValueError(
                f"strategy {value.strategy} keeps {champions} per island, so population.size "
                f"must be {kept} (it is {population.size}); use tournament or rank for larger "
                "populations")
        return value

    @model_validator(mode="after")
    def _confirm_needs_noise(self) -> Config:
        if self.confirm.seeds > 0 and self.noise.seeds < self.confirm.seeds + 1:
            raise ValueError(
                f"confirm.seeds is {self.confirm.seeds}, so noise.seeds must be at least "
                f"{self.confirm.seeds + 1} (it is {self.noise.seeds}): the root's runs under "
                "those seeds give σ and are the paired runs of the first incumbent")
        return self

    @property
    def seed_script(self) -> str:
        """The template file that is the root candidate's train.py under this profile."""
        return PROFILE_SEED_SCRIPTS[self.profile]

    @property
    def template_dir(self) -> Path:
        return Path(self.template)

    def to_yaml(self) -> str:
        """The resolved config as YAML; `load_config` reads it back to an equal Config."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _rebuild_operators() -> None:
    """A kind was registered: configs may name it (the union is rebuilt, then every model
    that holds it)."""
    global Operator
    Operator = _operator_union()
    MutationConfig.model_fields["operators"].annotation = list[Operator]  # type: ignore[valid-type]
    MutationConfig.model_rebuild(force=True)
    Config.model_rebuild(force=True)


def _rebuild_selection() -> None:
    """A strategy was registered or removed: its parameters become (or stop being) keys."""
    global SelectionConfig
    SelectionConfig = _selection_model()
    field = Config.model_fields["selection"]
    field.annotation, field.default_factory = SelectionConfig, SelectionConfig
    Config.model_rebuild(force=True)


on_register(_rebuild_operators)
on_strategy(_rebuild_selection)


def _fixed_size_of(strategy: Any) -> int | None:
    """The population size a strategy imposes whatever the config says (None: it keeps
    `population.size`), asked of its selector built with default parameters."""
    row = STRATEGIES.get(strategy) if isinstance(strategy, str) else None
    if row is None:
        return None
    section = SelectionConfig(strategy=strategy)
    sizes = {row.build(section).population_size(n) for n in (1, 2)}
    return sizes.pop() if len(sizes) == 1 else None


def _resolve(value: str, context: Mapping[str, Any] | None) -> Path:
    """A relative path against the config file's directory first, then the CWD."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    base = (context or {}).get("base_dir")
    if base is not None and (Path(base) / path).exists():
        return (Path(base) / path).resolve()
    return (Path.cwd() / path).resolve()


def _where(context: Mapping[str, Any] | None, value: str) -> str:
    """How `_resolve` looked for a relative path, with the places it tried."""
    base = (context or {}).get("base_dir")
    cwd = Path.cwd().resolve()
    tried = f"in the working directory ({(cwd / value).resolve()})"
    if base is not None and Path(base) != cwd:
        return f"next to the config file ({(Path(base) / value).resolve()}), then {tried}"
    return tried


def _text_problem(path: Path, probe_bytes: int = 1 << 16) -> str:
    """Why a `text:` path gives the harness nothing to train on ("" when it holds text): it
    reads every file under a folder and needs some non-blank content."""
    files = (p for p in sorted(path.rglob("*")) if p.is_file()) if path.is_dir() else iter([path])
    seen = 0
    for file in files:
        seen += 1
        try:
            with file.open("rb") as handle:
                if handle.read(probe_bytes).strip():
                    return ""
        except OSError:
            continue
    if path.is_dir() and not seen:
        return "is an empty folder (no files in it)"
    return "holds no text (its files are empty or blank)" if seen > 1 or path.is_dir() \
        else "is an empty file"
