"""The run configuration: one YAML file, validated into frozen typed objects.

Every error is a `ConfigError` whose message names the file, the dotted key (and the line
where the YAML has one) and what is wrong, so a user can fix it without reading this code.
No Ray or torch imports here: the CLI validates a config before anything heavy starts.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Each profile names the seed script the template must hold for it (docs/contracts.md §1).
PROFILE_SEED_SCRIPTS: Mapping[str, str] = {
    "cpu-micro": "train_cpu.py",
    "cpu-tiny": "train_cpu.py",
    "gpu-5min": "train.py",
}
HARNESS_FILE = "prepare.py"

Profile = Literal["cpu-micro", "cpu-tiny", "gpu-5min"]
Positive = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class ConfigError(ValueError):
    """A config that cannot be used; the message is written for the user."""


class _Section(BaseModel):
    # strict: `size: "4"` or `size: true` is a mistake worth reporting, not coercing.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class PopulationConfig(_Section):
    size: PositiveInt = 4
    islands: PositiveInt = 1
    migration_interval: NonNegativeInt = 10  # finished experiments between migrations; 0 = off
    stagnation_reseed_after: NonNegativeInt = 0  # finished experiments without gain; 0 = off


class SelectionConfig(_Section):
    strategy: Literal["greedy", "tournament", "rank"] = "tournament"
    tournament_size: PositiveInt = 3
    rank_power: Positive = 1.0


class _Operator(_Section):
    weight: NonNegative = 1.0


class HeuristicOperator(_Operator):
    kind: Literal["heuristic"]
    max_tries: PositiveInt = 32  # moves tried before the proposal gives up


class LLMOperator(_Operator):
    kind: Literal["llm"]
    model: str = "claude-sonnet-5-5"
    base_url: str | None = None  # any server that speaks the Messages API
    api_key_env: str = "ANTHROPIC_API_KEY"
    temperature: Annotated[float, Field(ge=0, le=1)] = 1.0
    max_tokens: PositiveInt = 16000
    timeout_s: Positive = 300.0
    max_apply_retries: NonNegativeInt = 2
    tokens_per_minute: PositiveInt | None = None  # account rate budget; None = unlimited
    input_usd_per_mtok: NonNegative | None = None  # None = the mutator's price table
    output_usd_per_mtok: NonNegative | None = None

    @field_validator("model")
    @classmethod
    def _model_named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a model, e.g. claude-sonnet-5-5")
        return value


class CrossoverOperator(_Operator):
    kind: Literal["crossover"]


class CommandOperator(_Operator):
    kind: Literal["command"]
    argv: Annotated[list[str], Field(min_length=1)]
    timeout_s: Positive = 600.0


Operator = Annotated[
    HeuristicOperator | LLMOperator | CrossoverOperator | CommandOperator,
    Field(discriminator="kind"),
]


class MutationConfig(_Section):
    operators: Annotated[list[Operator], Field(min_length=1)] = Field(
        default_factory=lambda: [HeuristicOperator(kind="heuristic")]
    )
    lookahead: NonNegativeInt = 1  # proposals kept ready per worker; 0 = strictly sequential
    proposal_timeout_s: Positive = 600.0
    max_concurrent_proposals: PositiveInt = 8

    @field_validator("operators")
    @classmethod
    def _some_weight(cls, value: list[Any]) -> list[Any]:
        if not any(op.weight > 0 for op in value):
            raise ValueError("every operator has weight 0; give at least one a weight > 0")
        return value


class WorkersConfig(_Section):
    count: int | Literal["auto"] = "auto"
    gpus_per_worker: NonNegative = 0.0
    cpus_per_worker: Positive = 1.0
    timeout_grace_s: NonNegative = 120.0
    max_lost_attempts: PositiveInt = 3
    torch_threads: PositiveInt = 1

    @field_validator("count", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        if value == "auto" or (type(value) is int and value >= 1):
            return value
        raise ValueError(f"must be 'auto' or an integer >= 1, got {value!r}")

    def resolve(self, *, gpus: float, cpus: float) -> int:
        """The number of workers to start on a cluster offering `gpus` and `cpus`."""
        if self.count != "auto":
            return int(self.count)
        if self.gpus_per_worker > 0:
            count = int(gpus // self.gpus_per_worker)
            if count < 1:
                raise ConfigError(
                    f"workers.count is auto with gpus_per_worker {self.gpus_per_worker:g}, "
                    f"but the cluster has {gpus:g} GPUs; set workers.gpus_per_worker: 0 "
                    "to run on CPUs"
                )
            return count
        return max(1, int(cpus // self.cpus_per_worker))


class BudgetConfig(_Section):
    max_experiments: PositiveInt | None = None
    max_hours: Positive | None = None
    target_val_bpb: Positive | None = None
    max_llm_usd: Positive | None = None


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
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    mutation: MutationConfig = Field(default_factory=MutationConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="before")
    @classmethod
    def _greedy_means_one(cls, data: Any) -> Any:
        # greedy keeps one champion per island: fill in size 1 unless the user said otherwise
        if isinstance(data, dict):
            selection, population = data.get("selection"), data.get("population", {})
            if (
                isinstance(selection, Mapping)
                and selection.get("strategy") == "greedy"
                and isinstance(population, Mapping)
                and "size" not in population
            ):
                data = {**data, "population": {**population, "size": 1}}
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
        path = _resolve(value, info.context)
        if not path.is_dir():
            raise ValueError(f"{value!r} is not a directory (looked in {_where(info.context)})")
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
                raise ValueError(f"{value[5:]!r} does not exist (looked in {_where(info.context)})")
            return f"text:{path}"
        raise ValueError(f"{value!r} is not one of synthetic, climbmix, text:<path>")

    @field_validator("selection")
    @classmethod
    def _greedy_size(cls, value: SelectionConfig, info: Any) -> SelectionConfig:
        population = info.data.get("population")
        if value.strategy == "greedy" and population is not None and population.size != 1:
            raise ValueError(
                "strategy greedy keeps one champion per island, so population.size must be 1 "
                f"(it is {population.size}); use tournament or rank for larger populations"
            )
        return value

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


def _resolve(value: str, context: Mapping[str, Any] | None) -> Path:
    """A relative path against the config file's directory first, then the CWD."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    base = (context or {}).get("base_dir")
    if base is not None and (Path(base) / path).exists():
        return (Path(base) / path).resolve()
    return (Path.cwd() / path).resolve()


def _where(context: Mapping[str, Any] | None) -> str:
    base = (context or {}).get("base_dir")
    cwd = Path.cwd().resolve()
    return f"{base} and {cwd}" if base is not None and Path(base) != cwd else str(cwd)


# ---------------------------------------------------------------------------------------
# Loading, overrides and error messages


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read, override (`section.key=value`) and validate a YAML config file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {_kind(data)}")
    data.setdefault("name", re.sub(r"[^A-Za-z0-9._-]", "-", path.stem))
    return config_from_dict(data, overrides, source=str(path), base_dir=path.parent, _root=root)


def config_from_dict(
    data: Mapping[str, Any],
    overrides: Sequence[str] = (),
    *,
    source: str = "<config>",
    base_dir: str | Path | None = None,
    _root: yaml.Node | None = None,
) -> Config:
    """Validate a config given as a mapping (tests, programmatic runs)."""
    data = _deepcopy(data)
    overridden: dict[tuple[Any, ...], str] = {}
    for item in overrides:
        key_path = _apply_override(data, item, source)
        overridden[key_path] = item
    context = {"base_dir": Path(base_dir).resolve() if base_dir is not None else None}
    try:
        return Config.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, data, source, _root, overridden)) from None


def _deepcopy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deepcopy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deepcopy(v) for v in value]
    return value


def _apply_override(data: dict[str, Any], item: str, source: str) -> tuple[Any, ...]:
    """Set one `dotted.key=value` in the raw data; the value is read as YAML."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. population.size=16")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML: {exc}") from None
    parts: list[Any] = [int(p) if p.isdigit() else p for p in key.split(".")]
    _check_override_path(parts, data, item, source)
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        child = node[part] if isinstance(node, list) else node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, (dict, list)):
            raise ConfigError(
                f"--set {item!r}: {_dotted(parts[: depth + 1])} is a value, not a section"
            )
        node = child
    node[parts[-1]] = value
    return tuple(parts)


def _check_override_path(parts: Sequence[Any], data: Any, item: str, source: str) -> None:
    """Walk the config's types along the path so a typo fails naming the allowed keys."""
    tp: Any = Config
    node: Any = data
    for depth, part in enumerate(parts):
        where = _dotted(parts[:depth]) or "the top level"
        if isinstance(part, int):
            if _list_item(tp) is None:
                raise ConfigError(f"--set {item!r}: {where} is not a list")
            if not isinstance(node, list) or part >= len(node):
                size = len(node) if isinstance(node, list) else 0
                raise ConfigError(
                    f"--set {item!r}: {_dotted(parts[: depth + 1])} does not exist "
                    f"({where} has {size} items in {source})"
                )
            tp, node = _list_item(tp), node[part]
            continue
        model = _as_model(tp)
        if model is None and _union_members(tp):
            model = _member_for_tag(tp, node.get("kind") if isinstance(node, dict) else None)
            if model is None:
                return  # an operator without a valid kind: validation reports it
        if model is None:
            raise ConfigError(f"--set {item!r}: {where} is a value, not a section with keys")
        if part not in model.model_fields:
            raise ConfigError(
                f"--set {item!r}: unknown key {part!r} in {where}; allowed keys: "
                f"{', '.join(model.model_fields)}"
            )
        tp = model.model_fields[part].annotation
        node = node.get(part) if isinstance(node, dict) else None


def _explain(
    exc: ValidationError,
    data: Mapping[str, Any],
    source: str,
    root: yaml.Node | None,
    overridden: Mapping[tuple[Any, ...], str],
) -> str:
    lines: list[tuple[float, str]] = []  # (line in the file, message): reported in file order
    for error in exc.errors():
        keys = _data_path(data, error["loc"])
        dotted = _dotted(keys) or "(top level)"
        where, line = source, None
        origin = next(
            (item for path, item in overridden.items() if tuple(keys[: len(path)]) == path), None
        )
        if origin is not None:
            where = f"{source} (--set {origin})"
        else:
            line = _line_of(root, keys)
            if line is not None:
                where = f"{source}:{line}"
        lines.append(
            (line if line is not None else float("inf"), f"{where}: {dotted}: {_problem(error)}")
        )
    ordered = [message for _, message in sorted(lines, key=lambda pair: pair[0])]
    return "\n".join(dict.fromkeys(ordered))


def _problem(error: Mapping[str, Any]) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        model = _model_at(error["loc"][:-1])
        allowed = ", ".join(model.model_fields) if model else "?"
        return f"unknown key; allowed keys here: {allowed}"
    if kind == "missing":
        return "is required but missing"
    if kind == "union_tag_invalid":
        return (
            f"unknown operator kind {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
        )
    if kind == "union_tag_not_found":
        return "an operator needs a kind: heuristic, llm, crossover or command"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind.endswith("_type") or kind in ("literal_error", "model_type", "list_type"):
        return f"{message[0].lower()}{message[1:]}, got {value!r} ({_kind(value)})"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short"):
        return f"{message[0].lower()}{message[1:]}, got {value!r}"
    return message


def _kind(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "text", bool: "true/false", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _data_path(data: Any, loc: Sequence[Any]) -> list[Any]:
    """The loc as keys into the user's data (drops pydantic's union tags and labels)."""
    keys: list[Any] = []
    node = data
    for index, elem in enumerate(loc):
        if isinstance(node, dict) and elem in node:
            keys.append(elem)
            node = node[elem]
        elif isinstance(node, list) and isinstance(elem, int) and elem < len(node):
            keys.append(elem)
            node = node[elem]
        elif index == len(loc) - 1 and isinstance(elem, str) and isinstance(node, dict):
            keys.append(elem)  # a missing key
    return keys


def _dotted(keys: Sequence[Any]) -> str:
    out = ""
    for key in keys:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def _line_of(root: yaml.Node | None, keys: Sequence[Any]) -> int | None:
    node, line = root, None
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if getattr(k, "value", None) == str(key)]
            if not match:
                return line
            line, node = match[-1][0].start_mark.line + 1, match[-1][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _as_model(tp: Any) -> type[BaseModel] | None:
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _list_item(tp: Any) -> Any:
    tp = _unwrap(tp)
    if typing.get_origin(tp) is list:
        return typing.get_args(tp)[0]
    return None


def _union_members(tp: Any) -> list[type[BaseModel]]:
    tp = _unwrap(tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [a for a in typing.get_args(tp) if _as_model(a) is not None]
    return []


def _member_for_tag(tp: Any, tag: Any) -> type[BaseModel] | None:
    for member in _union_members(tp):
        if typing.get_args(member.model_fields["kind"].annotation) == (tag,):
            return member
    return None


def _model_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    """The model class at a pydantic error location (for listing the allowed keys)."""
    tp: Any = Config
    for elem in loc:
        model = _as_model(tp)
        if isinstance(elem, int) and _list_item(tp) is not None:
            tp = _list_item(tp)
        elif model is not None and elem in model.model_fields:
            tp = model.model_fields[elem].annotation
        elif _union_members(tp):
            tp = _member_for_tag(tp, elem) or tp
    return _as_model(tp)
