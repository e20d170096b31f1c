"""Loading a run config: YAML in, `--set` overrides applied, errors a user can act on.

Every error is a `ConfigError` whose message names the file, the dotted key (and the line
where the YAML has one) and what is wrong, so a user can fix it without reading this code.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, ValidationError

from evolve.config.schema import Config, ConfigError


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
    _refuse_duplicate_keys(root, path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {_kind(data)}")
    data.setdefault("name", re.sub(r"[^A-Za-z0-9._-]", "-", path.stem))
    return config_from_dict(data, overrides, source=str(path), base_dir=path.parent, _root=root)


def _refuse_duplicate_keys(node: yaml.Node | None, path: Path, keys: Sequence[Any] = ()) -> None:
    """YAML lets a key repeat (the last one silently wins); in a config that is a mistake."""
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = getattr(key_node, "value", None)
            if not isinstance(key, str) or key == "<<":
                continue
            line = key_node.start_mark.line + 1
            if key in first:
                raise ConfigError(
                    f"{path}:{line}: {_dotted([*keys, key])}: duplicate key (first on line "
                    f"{first[key]}); YAML would silently keep only the last one: remove one")
            first[key] = line
            _refuse_duplicate_keys(value_node, path, [*keys, key])
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicate_keys(item, path, [*keys, index])


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
    target = _check_override_path(parts, data, item, source)
    if _list_item(target) is not None and _list_item(target) is not Any \
            and _as_model(_list_item(target)) is None and _is_scalar(value):
        value = [value]  # `--set mutable_files=x.py` means the list [x.py]
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


def _is_scalar(value: Any) -> bool:
    return value is not None and not isinstance(value, (dict, list))


def _check_override_path(parts: Sequence[Any], data: Any, item: str, source: str) -> Any:
    """Walk the config's types along the path so a typo fails naming the allowed keys; returns
    the type at the end of the path (None where it cannot be told)."""
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
                return None  # an operator without a valid kind: validation reports it
        if model is None:
            raise ConfigError(f"--set {item!r}: {where} is a value, not a section with keys")
        if part not in model.model_fields:
            raise ConfigError(
                f"--set {item!r}: unknown key {part!r} in {where}; allowed keys: "
                f"{', '.join(model.model_fields)}"
            )
        tp = model.model_fields[part].annotation
        node = node.get(part) if isinstance(node, dict) else None
    return tp


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
        return "an operator needs a kind: heuristic, llm, crossover, command or merge"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "list_type":
        return (f"{message[0].lower()}{message[1:]}, got {value!r} ({_kind(value)}); "
                "write a list as [a, b] (in --set too: --set 'key=[a, b]')")
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
