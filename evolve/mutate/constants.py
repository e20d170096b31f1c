"""Read and rewrite module-level `NAME = literal` constants in Python source, in place.

Only the characters of the literal change, so comments, spacing and the rest of the file
stay exactly as they were: the edit reads like a one-line research change in a diff.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from evolve.guard.parsed import ast_parse

LiteralValue = bool | int | float | str


@dataclass(frozen=True)
class Constant:
    """One module-level assignment; `value` is None when it is not a plain literal."""

    name: str
    value: LiteralValue | None
    lineno: int  # 1-based line of the value expression
    col: int  # 0-based character (not byte) offsets
    end_lineno: int
    end_col: int
    source_text: str  # the value's text as written

    @property
    def is_literal(self) -> bool:
        return self.value is not None


def find_constants(source: str) -> dict[str, Constant]:
    """Module-level constants by name (the last assignment wins, as it does at runtime).

    Raises SyntaxError if the source does not parse.
    """
    tree = ast_parse(source)
    lines = source.split("\n")
    found: dict[str, Constant] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, value = stmt.target, stmt.value
        else:
            continue
        if not isinstance(target, ast.Name) or value.end_lineno is None:
            continue
        col = _char_col(lines[value.lineno - 1], value.col_offset)
        end_col = _char_col(lines[value.end_lineno - 1], value.end_col_offset or 0)
        text = _slice(lines, value.lineno, col, value.end_lineno, end_col)
        found[target.id] = Constant(
            name=target.id,
            value=_literal(value),
            lineno=value.lineno,
            col=col,
            end_lineno=value.end_lineno,
            end_col=end_col,
            source_text=text,
        )
    return found


def replace_constant(source: str, constant: Constant, value: LiteralValue) -> str:
    """`source` with the literal of `constant` replaced by `value` (nothing else changes)."""
    lines = source.split("\n")
    before = "\n".join(lines[: constant.lineno - 1] + [lines[constant.lineno - 1][: constant.col]])
    after_line = lines[constant.end_lineno - 1][constant.end_col :]
    after = "\n".join([after_line] + lines[constant.end_lineno :])
    return before + format_literal(value, like=constant.source_text) + after


def format_literal(value: LiteralValue, *, like: str = "") -> str:
    """Python source for a literal: floats rounded to 4 significant digits (no 0.30000000000000004),
    strings in the quote style of `like`."""
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(round_sig(value))
    quote = "'" if like.startswith("'") else '"'
    body = value.replace("\\", "\\\\").replace(quote, "\\" + quote)
    return f"{quote}{body}{quote}"


def round_sig(value: float, digits: int = 4) -> float:
    """A float rounded to `digits` significant digits, so edits print cleanly."""
    return float(f"{value:.{digits}g}")


def _literal(node: ast.expr) -> LiteralValue | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, (bool, int, float, str)):
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, (ast.USub, ast.UAdd))
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) in (int, float)
    ):
        value: Any = node.operand.value
        return -value if isinstance(node.op, ast.USub) else value
    return None


def _char_col(line: str, byte_col: int) -> int:
    # ast offsets count UTF-8 bytes; a non-ASCII comment before the literal would shift them
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="replace"))


def _slice(lines: list[str], lineno: int, col: int, end_lineno: int, end_col: int) -> str:
    if lineno == end_lineno:
        return lines[lineno - 1][col:end_col]
    parts = [lines[lineno - 1][col:]] + lines[lineno : end_lineno - 1]
    return "\n".join(parts + [lines[end_lineno - 1][:end_col]])
