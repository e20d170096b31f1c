"""Merge: carry a win from one line of the search onto another.

A *win* is a child that beat its parent; its edit is the diff from that parent to it. The
merge operator applies that edit onto a target line (the island's best, or the run's best) by
a three-way merge — base: the donor's parent, ours: the target, theirs: the donor. Hunks that
do not overlap apply; a conflict drops the merge (or, with an LLM operator configured, the two
parents go to crossover). A clean merge is a proposal like any other: pre-flight, duplicate
check and lineage follow, and the store records the donor beside the parent.

The three-way merge is the `merge3` package (Breezy's merge algorithm, maintained as its own
library): pure Python, no git binary on the controller, no temporary files, and it returns the
merge as regions, so a conflict can say where it is. `git merge-file` would need all three.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import merge3

from evolve.config.section import OperatorSection
from evolve.mutate.base import MutationContext, Mutator, Proposal
from evolve.mutate.registry import BuildContext, OperatorKind, register_operator
from population.candidate import Candidate, source_hash
from population.wins import Win, carryable

MERGE = "merge"
TARGETS = ("island", "global")  # the line a merge carries a win onto: the island's best, the run's
DESCRIPTION_LIMIT = 80  # characters of the donor's description quoted in the merge's


@dataclass(frozen=True)
class Merged:
    """The result of merging a donor's edit into a target: files, or where it conflicted."""

    files: dict[str, str]
    conflicts: tuple[str, ...]  # "train.py lines 14-15", one per conflicting region

    @property
    def clean(self) -> bool:
        return not self.conflicts


# ---------------------------------------------------------------- the three-way merge


def merge_text(base: str, ours: str, theirs: str, name: str = "") -> tuple[str, list[str]]:
    """Three-way merge of one file; returns (merged text, conflicting regions).

    merge3 treats changes to neighbouring lines as one conflict (as diff3 and git do). Where
    the three sides of such a region have the same number of lines and no line was changed
    on both sides — two constants on adjacent lines of the hyperparameter block — it is
    resolved line by line; anything else stays a conflict."""
    out: list[str] = []
    conflicts: list[str] = []
    line = 1
    for group in merge3.Merge3(_lines(base), _lines(ours), _lines(theirs)).merge_groups():
        kind = group[0]
        if kind != "conflict":
            out.extend(group[1])
            line += len(group[1])
            continue
        _, b, o, t = group
        resolved = _line_by_line(b, o, t)
        if resolved is None:
            end = line + max(len(o), 1) - 1
            conflicts.append(f"{name or 'file'} line{'s' if end > line else ''} "
                             f"{line}{f'-{end}' if end > line else ''}")
            out.extend(o)
            line += len(o)
        else:
            out.extend(resolved)
            line += len(resolved)
    return "".join(out), conflicts


def _line_by_line(base: Sequence[str], ours: Sequence[str],
                  theirs: Sequence[str]) -> list[str] | None:
    if not len(base) == len(ours) == len(theirs):
        return None
    merged = []
    for b, o, t in zip(base, ours, theirs, strict=True):
        if o != b and t != b and o != t:
            return None
        merged.append(t if o == b else o)
    return merged


def merge_files(base: Mapping[str, str], ours: Mapping[str, str],
                theirs: Mapping[str, str]) -> Merged:
    """Carry the edit base -> theirs onto ours, file by file (files the edit added or
    removed are added or removed, unless ours changed them too: a conflict)."""
    files = dict(ours)
    conflicts: list[str] = []
    for name in sorted(set(base) | set(theirs)):
        b, t = base.get(name), theirs.get(name)
        if b == t:
            continue
        o = ours.get(name)
        if b is None or t is None:  # the edit added or removed the file
            if o == b:
                if t is None:
                    files.pop(name, None)
                else:
                    files[name] = t
            elif o != t:
                conflicts.append(f"{name} (added or removed on one side, changed on the other)")
            continue
        if o is None:
            conflicts.append(f"{name} (removed on the target line)")
            continue
        text, found = merge_text(b, o, t, name)
        files[name] = text
        conflicts.extend(found)
    return Merged(files=files, conflicts=tuple(conflicts))


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


# ---------------------------------------------------------------- the description


def describe(donor: Candidate, target: Candidate) -> str:
    """'merge c00004 (DEPTH 3 -> 4) into c00014'."""
    what = " ".join(donor.description.split()) or "its edit"
    if len(what) > DESCRIPTION_LIMIT:
        what = what[: DESCRIPTION_LIMIT - 1] + "…"
    return f"merge {donor.id} ({what}) into {target.id}"


# ---------------------------------------------------------------- the operator


class MergeMutator:
    """Carries the largest win not yet tried on the target (the context's parent) onto it.

    `context.wins` holds the run's wins (the shell fills it for this operator). With nothing
    left to carry, the proposal goes to `otherwise` (the run's first other operator), so a
    merge weight never leaves a worker without a child; on a conflict it goes to `crossover`
    when one is configured (an LLM combines the two parents), else it is dropped: a rejected
    proposal that records the donor, so that pair is not tried again."""

    name = MERGE

    def __init__(self, *, target: str = "island", otherwise: Mutator | None = None,
                 crossover: Mutator | None = None) -> None:
        if target not in TARGETS:
            raise ValueError(f"merge target must be one of {TARGETS}, not {target!r}")
        self.target = target
        self.otherwise = otherwise
        self.crossover = crossover

    async def propose(self, context: MutationContext) -> Proposal:
        target = context.parent
        wins = carryable(context.wins, target, (c.id for c in context.lineage),
                         context.carried)
        for win in wins:
            merged = merge_files(win.base.files, target.files, win.donor.files)
            if merged.clean and (_same(merged.files, target.files)
                                 or _same(merged.files, win.donor.files)):
                continue  # one line already holds the other's edit: nothing new to try
            return await self._from(win, merged, context)
        if self.otherwise is not None:
            return await self.otherwise.propose(context)
        return Proposal(files={}, description="", rationale="", mutator=self.name,
                        error=f"merge: no win to carry into {target.id} (no finished child off "
                              "its line has beaten its parent, or all were tried)")

    async def _from(self, win: Win, merged: Merged, context: MutationContext) -> Proposal:
        target, donor = context.parent, win.donor
        description = describe(donor, target)
        if merged.clean:
            return Proposal(
                files=merged.files, description=description, mutator=self.name,
                rationale=(f"{donor.id} beat its parent {win.base.id} by {win.gain:.6f} "
                           f"val_bpb; its edit is carried onto {target.id} by a three-way merge"),
                applied_edit=donor.diff, donor_id=donor.id)
        where = ", ".join(merged.conflicts)
        if self.crossover is not None:
            crossed = await self.crossover.propose(_with_second_parent(context, donor))
            return _replace(crossed, donor_id=donor.id,
                            rationale=f"{description} conflicted ({where}); crossover of the two "
                                      f"parents instead.\n{crossed.rationale}")
        return Proposal(files={}, description=description, rationale="", mutator=self.name,
                        donor_id=donor.id, error=f"merge conflict: {description}: {where}")


def _same(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    return source_hash(a) == source_hash(b)


def _with_second_parent(context: MutationContext, donor: Candidate) -> MutationContext:
    return dataclasses.replace(context, inspirations=(donor,))


def _replace(proposal: Proposal, **changes: object) -> Proposal:
    return dataclasses.replace(proposal, **changes)  # type: ignore[arg-type]


# ---------------------------------------------------------------- its registry row


class MergeOperator(OperatorSection):
    """Carry a win (a child that beat its parent) onto the island's or the run's best by a
    three-way merge; offline, no API key needed."""

    kind: Literal["merge"]
    target: Literal["island", "global"] = "island"


def build_merge(op: MergeOperator, context: BuildContext) -> Mutator:
    """With nothing to carry, the first other weighted operator makes the child; a conflict
    goes to crossover over the first LLM operator's client when the config has one."""
    from evolve.mutate.crossover import CrossoverMutator

    others = [i for i, other in enumerate(context.operators)
              if other.kind != MERGE and other.weight > 0]
    llm: Any = context.first_of("llm")
    return MergeMutator(target=op.target,
                        otherwise=context.build(others[0]) if others else None,
                        crossover=CrossoverMutator(llm) if llm is not None else None)


register_operator(OperatorKind(MERGE, MergeOperator, build_merge))

__all__ = ["MERGE", "MergeMutator", "MergeOperator", "Merged", "Win", "describe", "merge_files", "merge_text"]
