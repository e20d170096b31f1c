"""One parse per child, of what changed: a child is its parent with a few statements edited.

Parsing 25 KB of Python costs about 5 ms, walking its tree as much again, and every child is
checked twice (by its mutator, so a model can be told its edit broke the syntax, then by
pre-flight). But a child differs from its parent in a few lines. The parent parsed, so its
top-level statements are complete; the child's lines before and after the change are the
parent's, whole statements of them; so the child parses exactly when the changed middle parses
as a module of its own (the parser has no context across top-level statements: no open bracket,
string or block crosses from one into the next). Only that middle is parsed; the rest of the
outline (each top-level statement's exact source) comes from the parent's, kept per source.
Anything unusual (no parent, the middle does not parse, a line shared across the boundary)
takes the full parse, which also gives the exact error.
"""

from __future__ import annotations

import ast
import bisect
import functools
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from population.candidate import shared_line_ends

OUTLINES_KEPT = 512        # sources whose outline is kept (parents of the next children)
PARSED_KEPT = 16           # children whose parse is kept (the mutator's check, then pre-flight)
STATEMENTS_KEPT = 100_000  # statement verdicts kept by a StatementMemo

Key = tuple[str, int, int | None]  # a statement's lines, first and last column: its exact source


@dataclass(frozen=True)
class Outline:
    """The top-level statements of a source that parsed: their line spans and exact sources."""

    spans: tuple[tuple[int, int], ...]  # (first line, last line), 1-based, decorators included
    keys: tuple[Key, ...]


@dataclass(frozen=True)
class Parsed:
    """A parsed source: its outline, and the nodes of the statements parsed this time (the
    others are, word for word, statements of the parent: `nodes[i]` is None for them)."""

    outline: Outline
    nodes: tuple[ast.stmt | None, ...]
    full: bool  # the whole source was parsed (no parent, or the middle alone did not do)


_outlines: OrderedDict[str, Outline] = OrderedDict()
_parsed: OrderedDict[str, Parsed] = OrderedDict()
_lock = threading.Lock()
# CPython 3.11 before 3.11.8 corrupts ast.parse run in concurrent threads ("AST constructor
# recursion depth mismatch"); the mutator's checks (event loop) and pre-flight (a thread)
# meet. The one lock of the process: every parse of a candidate's source goes through here.
_parsing = threading.Lock()


def ast_parse(source: str, filename: str = "<unknown>") -> ast.Module:
    """`ast.parse`, one thread at a time."""
    with _parsing:
        return ast.parse(source, filename=filename)


def parse(source: str, filename: str = "<unknown>", parent: str | None = None) -> Parsed:
    """The source's statements; raises SyntaxError / ValueError exactly when `ast.parse` does.
    With `parent` (a source that parsed), only the statements that differ are parsed, and a
    source parsed a moment ago is not parsed again (the mutator's syntax check, its vetting
    and pre-flight all ask about the same child). Without `parent`, every node is parsed."""
    with _lock:
        kept = _parsed.get(source)
        if kept is not None and (parent is not None or kept.full):
            _parsed.move_to_end(source)
            return kept
    base = _outline_of(parent, filename) if parent is not None else None
    if base is not None:
        found = _parse_changed(source, parent, base)  # type: ignore[arg-type]
        if found is not None:
            _remember(source, found.outline, found)
            return found
    tree = ast_parse(source, filename)
    found = Parsed(outline_of(tree, source), tuple(tree.body), full=True)
    _remember(source, found.outline, found)
    return found


def lines_of(source: str) -> list[str]:
    """Lines as the parser counts them for sources without carriage returns ('\n' only:
    str.splitlines also splits at form feeds and other separators the parser does not)."""
    parts = source.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    return lines + [parts[-1]] if parts[-1] else lines


_serial = iter(range(1 << 62))


def outline_of(tree: ast.Module, source: str, first_line: int = 1) -> Outline:
    """Spans and exact sources of the module's statements. A source with carriage returns gets
    keys that match nothing (its lines are not counted as the parser counts them)."""
    if "\r" in source:
        spans = tuple((s.lineno + first_line - 1, (s.end_lineno or s.lineno) + first_line - 1)
                      for s in tree.body)
        return Outline(spans, tuple((f"\r{next(_serial)}", 0, 0) for _ in tree.body))
    lines = lines_of(source)
    spans, keys = [], []
    for stmt in tree.body:
        decorators = getattr(stmt, "decorator_list", None) or []
        first = min([stmt.lineno, *(d.lineno for d in decorators)])
        last = stmt.end_lineno or stmt.lineno
        spans.append((first + first_line - 1, last + first_line - 1))
        keys.append(("".join(lines[first - 1:last]), stmt.col_offset, stmt.end_col_offset))
    return Outline(tuple(spans), tuple(keys))


def _outline_of(source: str, filename: str) -> Outline | None:
    with _lock:
        found = _outlines.get(source)
        if found is not None:
            _outlines.move_to_end(source)
            return found
    try:
        tree = ast_parse(source, filename)
    except (SyntaxError, ValueError):
        return None
    outline = outline_of(tree, source)
    _remember(source, outline)
    return outline


def _remember(source: str, outline: Outline, parsed: Parsed | None = None) -> None:
    with _lock:
        _outlines[source] = outline
        _outlines.move_to_end(source)
        while len(_outlines) > OUTLINES_KEPT:
            _outlines.popitem(last=False)
        if parsed is not None:
            _parsed[source] = parsed
            _parsed.move_to_end(source)
            while len(_parsed) > PARSED_KEPT:
                _parsed.popitem(last=False)


def _parse_changed(source: str, parent: str, base: Outline) -> Parsed | None:
    """The child's statements from the parent's outline and a parse of the changed middle;
    None when that does not settle it (the caller parses the whole source)."""
    if (not base.keys or "\r" in source or "\r" in parent or not source.endswith("\n")
            or not parent.endswith("\n")):
        return None
    n_old = parent.count("\n")
    shift = source.count("\n") - n_old
    head, tail = shared_line_ends(parent, source)
    # parent statements wholly inside the unchanged head / tail lines stay; the rest is middle
    n_head = bisect.bisect_right([last for _, last in base.spans], head)
    n_tail = len(base.spans) - bisect.bisect_right([first for first, _ in base.spans],
                                                   n_old - tail)
    n_tail = min(n_tail, len(base.spans) - n_head)
    start = base.spans[n_head - 1][1] if n_head else 0           # lines before the middle
    stop_old = base.spans[len(base.spans) - n_tail][0] - 1 if n_tail else n_old
    if stop_old + shift < start:
        return None
    if n_head < len(base.spans) and n_head and base.spans[n_head][0] <= start:
        return None  # `a = 1; b = (...` : a statement starts on the head's last line
    if n_tail and len(base.spans) - n_tail > 0 and \
            base.spans[len(base.spans) - n_tail - 1][1] >= base.spans[len(base.spans) - n_tail][0]:
        return None  # and the same at the tail's first line
    starts = _line_starts(parent)  # the head's lines are the parent's, and so is the tail
    middle = source[starts[start]:len(source) - (len(parent) - starts[stop_old])]
    if "__future__" in middle:
        return None
    try:
        tree = ast_parse(middle)
    except (SyntaxError, ValueError):
        return None
    inner = outline_of(tree, middle, first_line=start + 1)
    if start:
        ast.increment_lineno(tree, start)
    tail_spans = tuple((a + shift, b + shift) for a, b in base.spans[len(base.spans) - n_tail:])
    outline = Outline(base.spans[:n_head] + inner.spans + tail_spans,
                      base.keys[:n_head] + inner.keys + base.keys[len(base.keys) - n_tail:])
    nodes = (None,) * n_head + tuple(tree.body) + (None,) * n_tail
    return Parsed(outline, nodes, full=False)


@functools.lru_cache(maxsize=OUTLINES_KEPT)
def _line_starts(source: str) -> tuple[int, ...]:
    """Where each line begins (and, last, the end): kept for parents."""
    starts = [0]
    found = source.find("\n")
    while found != -1:
        starts.append(found + 1)
        found = source.find("\n", found + 1)
    return tuple(starts)


class StatementMemo:
    """What a check found for a statement's exact source under a context (thread-safe)."""

    def __init__(self, limit: int = STATEMENTS_KEPT) -> None:
        self.limit = limit
        self._found: dict[tuple[Hashable, Key], object] = {}
        self._lock = threading.Lock()

    def get(self, context: Hashable, key: Key) -> object | None:
        with self._lock:
            return self._found.get((context, key))

    def get_many(self, context: Hashable, keys: tuple[Key, ...]) -> list[object | None]:
        """`get` for each key, under one lock (a file has hundreds of statements)."""
        with self._lock:
            found = self._found
            return [found.get((context, key)) for key in keys]

    def put(self, context: Hashable, key: Key, value: object) -> None:
        with self._lock:
            if len(self._found) >= self.limit:
                self._found.clear()
            self._found[(context, key)] = value
