"""A cheap novelty filter: diversity without temperature.

The Claude 5 family takes no sampling temperature, and sixteen proposals from one parent
see nearly the same prompt. A proposal whose edit and description are near-identical to one
already tried on the same parent (or being tried right now) is refused before any compute is
spent, and the model is told which one it repeats, in the same conversation.

An edit is compared by what it changes: the removed and added lines against the parent,
with comments and spacing normalised (so a reworded comment is not a new idea).
"""

from __future__ import annotations

import difflib
import functools
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from evolve.mutate.base import INFRASTRUCTURE, shared_ends
from population.candidate import Candidate

DIFF_SIMILAR = 0.9  # share of matching characters between two edits' changed lines
WORDS_SIMILAR = 0.6  # Jaccard of the two descriptions' words
PER_PARENT = 200  # edits remembered per parent (the newest)
PARENTS = 512  # parents remembered (least recently used dropped)
_COMMENT = re.compile(r"\s+#.*$|^#.*$")
_WORD = re.compile(r"[a-z0-9_.]+")
_OTHER_BREAKS = ("\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


@dataclass(frozen=True)
class Tried:
    """One edit already made from a parent: who, what it said, what it changed."""

    id: str
    description: str
    changes: str


def changed_lines(old: Mapping[str, str], new: Mapping[str, str]) -> str:
    """The lines an edit removes and adds, normalised (comments and spacing dropped)."""
    out = []
    for name in sorted(set(old) | set(new)):
        a, b = _differing(old.get(name, ""), new.get(name, ""))
        a, b = [_norm(line) for line in a], [_norm(line) for line in b]
        for line in difflib.unified_diff(a, b, lineterm="", n=0):
            if line.startswith(("---", "+++", "@@")):
                continue
            if line[1:].strip():
                out.append(line)
    return "\n".join(out)


def _differing(old: str, new: str) -> tuple[list[str], list[str]]:
    """The two files' lines less their common head and tail: a child shares almost every line
    with its parent, and difflib's cost grows with what it is given, not with what changed.
    The shared ends are found by comparing text where lines are plain '\n'-ended ones."""
    if _plain_lines(old) and _plain_lines(new):
        head, tail = shared_ends(old, new)
        a, b = old.splitlines(), new.splitlines()
        return a[head:len(a) - tail], b[head:len(b) - tail]
    a, b = old.splitlines(), new.splitlines()
    limit = min(len(a), len(b))
    head = 0
    while head < limit and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < limit - head and a[len(a) - 1 - tail] == b[len(b) - 1 - tail]:
        tail += 1
    return a[head:len(a) - tail], b[head:len(b) - tail]


def _plain_lines(text: str) -> bool:
    """Ends in '\n' and has no other line break str.splitlines knows (each test a C scan)."""
    return text.endswith("\n") and not any(mark in text for mark in _OTHER_BREAKS)


@functools.lru_cache(maxsize=1 << 16)
def _norm(line: str) -> str:
    # the children of a parent share almost every line: each distinct line is normalised once
    return " ".join(_COMMENT.sub("", line).split())


@functools.lru_cache(maxsize=1 << 14)
def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def similarity(a: str, b: str) -> float:
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def similar(a: str, b: str, threshold: float = DIFF_SIMILAR) -> bool:
    """`similarity(a, b) >= threshold`, exactly, with difflib's cheap upper bounds first:
    the lengths alone, then the characters in common (`quick_ratio`); the full matching runs
    only for the edits that pass both. A parent with hundreds of children is compared with
    every one of them, and most differ at once."""
    if not a and not b:
        return 1.0 >= threshold
    total = len(a) + len(b)  # each bound is ratio()'s 2 * matches / total with more matches
    if 2.0 * min(len(a), len(b)) / total < threshold:
        return False
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return matcher.quick_ratio() >= threshold and matcher.ratio() >= threshold


def word_overlap(a: str, b: str) -> float:
    wa, wb = _words(a), _words(b)
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / len(wa | wb)


def repeats(changes: str, description: str, tried: Sequence[Tried]) -> Tried | None:
    """The earlier edit this one nearly repeats, if any (the cheap test first: both must
    hold)."""
    for earlier in reversed(tried):
        if not earlier.changes:
            continue
        if (word_overlap(description, earlier.description) >= WORDS_SIMILAR
                and similar(changes, earlier.changes, DIFF_SIMILAR)):
            return earlier
    return None


class NoveltyIndex:
    """The edits made from each parent, loaded once per parent from `children_of`, then kept
    up to date as proposals pass (in flight) — so concurrent proposals see each other."""

    def __init__(self, children_of: Callable[[str], Sequence[Candidate]]) -> None:
        self._children_of = children_of
        self._by_parent: OrderedDict[str, list[Tried]] = OrderedDict()

    def _known(self, parent: Candidate) -> list[Tried]:
        if parent.id in self._by_parent:
            self._by_parent.move_to_end(parent.id)
            return self._by_parent[parent.id]
        tried = [Tried(c.id, c.description, changed_lines(parent.files, c.files))
                 for c in self._children_of(parent.id)
                 if c.files and not c.reason.startswith(INFRASTRUCTURE)]
        self._by_parent[parent.id] = tried[-PER_PARENT:]
        if len(self._by_parent) > PARENTS:
            self._by_parent.popitem(last=False)
        return self._by_parent[parent.id]

    def check(self, parent: Candidate, files: Mapping[str, str], description: str,
              label: str = "") -> str:
        """"" when the edit is new (it is then remembered as in flight), else why not."""
        changes = changed_lines(parent.files, files)
        tried = self._known(parent)
        earlier = repeats(changes, description, tried)
        if earlier is not None:
            return (f"near-identical to {earlier.id}, already tried on this parent "
                    f"(\"{earlier.description[:120]}\"): the same lines change the same way. "
                    "Propose a different idea, not a variant of that one")
        tried.append(Tried(label or "an edit in flight", description, changes))
        del tried[:-PER_PARENT]
        return ""
