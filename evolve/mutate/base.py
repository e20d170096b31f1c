"""The mutator seam: what a mutator is given, what it hands back (docs/contracts.md §5)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from population.candidate import Candidate
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
        lines = list(
            difflib.unified_diff(
                _lines(old or ""),
                _lines(new or ""),
                fromfile=from_name,
                tofile=to_name,
            )
        )
        if not lines:  # e.g. an empty file added or removed: git shows the header alone
            chunks.extend(header)
            continue
        chunks.extend(header)
        for line in lines:
            chunks.append(line if line.endswith("\n") else line + "\n" + _NO_NEWLINE)
    return "".join(chunks)


def _lines(text: str) -> list[str]:
    """Lines split on "\\n" only (str.splitlines also splits on \\r, \\f, ... and would
    corrupt such characters inside a line)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines
