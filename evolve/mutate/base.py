"""The mutator seam: what a mutator is given, what it hands back (docs/contracts.md §5)."""

from __future__ import annotations

import collections
import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from population.candidate import Candidate
from population.candidate import shared_line_ends as shared_ends
from population.wins import Win

# A rejected candidate whose reason starts with this was never an experiment: the LLM could
# not be reached (429, outage, budget). The notebook and the prompts leave such rows out.
INFRASTRUCTURE = "[LLM unavailable] "

# Checks a finished edit before compute is spent on it: (files, description) -> "" when it
# may go on, else why not (pre-flight, novelty), written for the model that made the edit.
Vet = Callable[[Mapping[str, str], str], str]


@dataclass(frozen=True)
class BriefFacts:
    """What the brief says about the machine and the measurement (per profile)."""

    profile: str = ""
    budget: str = ""  # e.g. "300 s of training" or "2.0M training tokens"
    device: str = ""  # e.g. "one NVIDIA H100 80GB"
    peak_memory_gb: float | None = None  # the parent's peak device memory (GPU runs)
    noise_sigma: float | None = None  # measured seed-to-seed σ of val_bpb, if noise runs are on


@dataclass(frozen=True)
class MutationContext:
    """Everything a mutator may know when it makes one child of `parent`."""

    parent: Candidate
    lineage: Sequence[Candidate]  # root .. parent
    inspirations: Sequence[Candidate]  # from other islands
    tried_on_parent: Sequence[str]  # descriptions of children already made from parent
    notebook: str  # shared lab notebook text (bounded)
    program_md: str
    mutable_files: Sequence[str]
    seed: int  # per-proposal seed (deterministic)
    # for the merge operator only (empty otherwise): the run's wins (children that beat their
    # parent) and the donors already carried into `parent`
    wins: Sequence[Win] = ()
    carried: Sequence[str] = ()
    recent: str = ""  # table of recent results, children worse than their parent included
    in_flight: Sequence[str] = ()  # descriptions of the proposals being made or run right now
    parent_log: str = ""  # the tail of the parent's training log (untrusted text)
    facts: BriefFacts = field(default_factory=BriefFacts)
    vet: Vet | None = None  # pre-flight and novelty, run inside the conversation
    trigger: str = "drawn"  # why: drawn by weight, or the event (evolve/controller/triggers.py)
    note: str = ""  # a triggered request's note (e.g. the other line to carry)


@dataclass(frozen=True)
class Proposal:
    """A child's files and how they came about; `error` set means no child could be made."""

    files: Mapping[str, str]  # full new source of each mutable file
    description: str
    rationale: str
    mutator: str  # "heuristic", "llm", "command", "crossover"
    model: str = ""
    raw_answer: str = ""
    applied_edit: str = ""
    usage: Mapping[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    error: str = ""  # non-empty: could not make a child (stored as rejected)
    donor_id: str = ""  # a merge (or crossover): the second parent whose edit was carried
    infrastructure: bool = False  # the error is the endpoint's (outage, 429, budget), not an idea's


@runtime_checkable
class Mutator(Protocol):
    """Turns a parent (and its context) into a proposed child."""

    name: str

    async def propose(self, context: MutationContext) -> Proposal: ...


_NO_NEWLINE = "\\ No newline at end of file\n"


def unified_diff(old_files: Mapping[str, str], new_files: Mapping[str, str]) -> str:
    """A git-style unified diff (a/ and b/ paths) that `git apply` and `patch -p1` accept.

    Files only in `new_files` are additions, files only in `old_files` deletions; a last
    line without a newline gets git's "\\ No newline at end of file" marker.
    """
    chunks: list[str] = []
    for name in sorted(set(old_files) | set(new_files)):
        old, new = old_files.get(name), new_files.get(name)
        if old == new:
            continue
        header = [f"diff --git a/{name} b/{name}\n"]
        if old is None:
            header.append("new file mode 100644\n")
        elif new is None:
            header.append("deleted file mode 100644\n")
        from_name = f"a/{name}" if old is not None else "/dev/null"
        to_name = f"b/{name}" if new is not None else "/dev/null"
        lines = _file_diff(old or "", new or "", from_name, to_name)
        if not lines:  # e.g. an empty file added or removed: git shows the header alone
            chunks.extend(header)
            continue
        chunks.extend(header)
        for line in lines:
            chunks.append(line if line.endswith("\n") else line + "\n" + _NO_NEWLINE)
    return "".join(chunks)


_CONTEXT = 3  # difflib.unified_diff's lines of context
_OTHER_BREAKS = ("\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def _file_diff(old: str, new: str, from_name: str, to_name: str) -> list[str]:
    """difflib.unified_diff's lines for one file, with difflib's matching run on the lines
    that differ only: a child shares all but a few of its 900 lines with its parent, and
    difflib's cost grows with what it is given. Same output: the shared head and tail are
    the blocks difflib's matching starts from, and within the middle it matches as it would
    in the whole file (the lines it ignores as too common are counted over the whole file)."""
    a, b = _lines(old), _lines(new)
    head, tail = shared_ends(old, new) if old.endswith("\n") and new.endswith("\n") \
        else (0, 0)
    matcher = difflib.SequenceMatcher(None, a[head:len(a) - tail], b[head:len(b) - tail],
                                      autojunk=False)
    if len(b) >= 200:  # difflib's autojunk, decided on the whole of b
        enough = len(b) // 100 + 1
        for line, count in collections.Counter(b).items():
            if count > enough:
                matcher.b2j.pop(line, None)
    blocks = [(0, 0, head)] + [(i + head, j + head, k) for i, j, k in
                               matcher.get_matching_blocks()[:-1]]
    blocks += [(len(a) - tail, len(b) - tail, tail)]
    whole = difflib.SequenceMatcher(None, (), ())  # the whole file's matching, known already
    whole.a, whole.b = a, b
    whole.matching_blocks = _merged(blocks) + [(len(a), len(b), 0)]
    return list(_unified(whole, a, b, from_name, to_name))


def _merged(blocks: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Adjacent blocks as one, empty ones dropped (as difflib leaves its matching blocks)."""
    out: list[tuple[int, int, int]] = []
    for i, j, k in blocks:
        if not k:
            continue
        if out and out[-1][0] + out[-1][2] == i and out[-1][1] + out[-1][2] == j:
            out[-1] = (out[-1][0], out[-1][1], out[-1][2] + k)
        else:
            out.append((i, j, k))
    return out


def _unified(matcher: difflib.SequenceMatcher, a: list[str], b: list[str], from_name: str,
             to_name: str) -> Iterator[str]:
    """The lines of `difflib.unified_diff(a, b, from_name, to_name)` for this matching."""
    for number, group in enumerate(matcher.get_grouped_opcodes(_CONTEXT)):
        if number == 0:
            yield f"--- {from_name}\n"
            yield f"+++ {to_name}\n"
        first, last = group[0], group[-1]
        yield f"@@ -{_span(first[1], last[2])} +{_span(first[3], last[4])} @@\n"
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                yield from (" " + line for line in a[i1:i2])
                continue
            if tag in ("replace", "delete"):
                yield from ("-" + line for line in a[i1:i2])
            if tag in ("replace", "insert"):
                yield from ("+" + line for line in b[j1:j2])


def _span(start: int, stop: int) -> str:
    """A hunk's range as unified diffs write it (1-based; an empty range names the line
    before it)."""
    length = stop - start
    if length == 1:
        return f"{start + 1}"
    return f"{start if not length else start + 1},{length}"


def _lines(text: str) -> list[str]:
    """Lines split on "\\n" only (str.splitlines also splits on \\r, \\f, ... and would
    corrupt such characters inside a line)."""
    if not any(mark in text for mark in _OTHER_BREAKS):  # the same lines, at C speed
        return text.splitlines(keepends=True)
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines
