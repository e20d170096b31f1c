"""One parse per child, and each top-level statement checked once per run.

Parsing 25 KB of Python costs about 5 ms and walking its tree as much again. A child's source is
parsed by its mutator (so a model can be told its edit broke the syntax), then by pre-flight
(syntax, the harness rules); and a child differs from its parent in a few statements only. So
the trees of the last sources parsed are shared (`parse`), and `StatementMemo` remembers which
top-level statements, word for word, already passed a check under the same module context.
Both are pure memos: a verdict never depends on whether they hit.
"""

from __future__ import annotations

import ast
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator

TREES_KEPT = 16  # proposals in flight each parse once, then pre-flight reads the same tree
STATEMENTS_KEPT = 100_000

_trees: OrderedDict[str, ast.Module] = OrderedDict()
_lock = threading.Lock()


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    """`ast.parse(source)`, shared by every caller with the same text. Raises as ast.parse does
    (failures are not kept: a child that does not parse is rejected once). Callers must not
    change the tree."""
    with _lock:
        tree = _trees.get(source)
        if tree is not None:
            _trees.move_to_end(source)
            return tree
    tree = ast.parse(source, filename=filename)
    with _lock:
        _trees[source] = tree
        while len(_trees) > TREES_KEPT:
            _trees.popitem(last=False)
    return tree


Key = tuple[str, int, int | None]  # a statement's lines, first and last column: its exact source


def statements(tree: ast.Module, source: str) -> Iterator[tuple[ast.stmt, Key]]:
    """Each top-level statement with a key that is its exact source (decorators included; the
    columns tell apart `a = 1; b = 2`, two statements on one line)."""
    lines = source.splitlines(keepends=True)
    for stmt in tree.body:
        decorators = getattr(stmt, "decorator_list", None) or []
        first = min([stmt.lineno, *(d.lineno for d in decorators)])
        last = stmt.end_lineno or stmt.lineno
        yield stmt, ("".join(lines[first - 1:last]), stmt.col_offset, stmt.end_col_offset)


class StatementMemo:
    """What a check found for a statement's exact source under a context (thread-safe)."""

    def __init__(self, limit: int = STATEMENTS_KEPT) -> None:
        self.limit = limit
        self._found: dict[tuple[Hashable, Key], object] = {}
        self._lock = threading.Lock()

    def get(self, context: Hashable, key: Key) -> object | None:
        with self._lock:
            return self._found.get((context, key))

    def put(self, context: Hashable, key: Key, value: object) -> None:
        with self._lock:
            if len(self._found) >= self.limit:
                self._found.clear()
            self._found[(context, key)] = value
