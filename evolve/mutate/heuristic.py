"""The offline mutator: research moves on the constants block of train.py, no API key needed.

It picks a move kind (weighted), then an edit of that kind not yet tried on this parent,
all from `random.Random(context.seed)`, so a proposal is deterministic. A kind that does
not apply (an LLM rewrote that part) says why and another is tried, up to `max_tries`.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Mapping, Sequence

from evolve.mutate.base import MutationContext, Proposal
from evolve.mutate.constants import find_constants, format_literal, replace_constant
from evolve.mutate.moves import MOVES, Constants, Edit, Move, NotApplicable


class HeuristicMutator:
    """Offline, deterministic research moves; what runs when there is no API key."""

    def __init__(
        self, name: str = "heuristic", *, max_tries: int = 32, moves: Sequence[Move] = MOVES
    ) -> None:
        self.name = name
        self.max_tries = max_tries
        self.moves = tuple(moves)

    async def propose(self, context: MutationContext) -> Proposal:
        return self.propose_now(context)

    def propose_now(self, context: MutationContext) -> Proposal:
        """The proposal, computed synchronously (it is cheap: no I/O)."""
        files = dict(context.parent.files)
        target = _target_file(context.mutable_files, files)
        if target is None:
            return self._failed(files, f"the parent has none of {list(context.mutable_files)}")
        try:
            constants = find_constants(files[target])
        except SyntaxError as exc:
            return self._failed(files, f"{target} does not parse (line {exc.lineno}): {exc.msg}")
        rng = random.Random(context.seed)
        tried = set(context.tried_on_parent)
        pool = list(self.moves)
        notes: list[str] = []
        for _ in range(self.max_tries):
            if not pool:
                break
            move = rng.choices(pool, weights=[m.weight for m in pool])[0]
            pool.remove(move)
            try:
                edits = move.edits(constants)
            except NotApplicable as exc:
                notes.append(f"{move.kind}: {exc}")
                continue
            fresh = [e for e in edits if e.description not in tried]
            if not fresh:
                notes.append(f"{move.kind}: all {len(edits)} variants already tried on this parent")
                continue
            edit = rng.choice(fresh)
            source, applied = _apply(files[target], constants, edit, target)
            return Proposal(
                files={**files, target: source},
                description=edit.description,
                rationale=edit.rationale,
                mutator=self.name,
                applied_edit=applied,
            )
        return self._failed(files, f"no move applies to {target}: " + "; ".join(notes))

    def _failed(self, files: Mapping[str, str], why: str) -> Proposal:
        return Proposal(
            files=files, description="", rationale="", mutator=self.name, error=f"heuristic: {why}"
        )


def _target_file(mutable_files: Sequence[str], files: Mapping[str, str]) -> str | None:
    for name in ("train.py", *mutable_files):
        if name in files and name in mutable_files:
            return name
    return None


def _apply(source: str, constants: Constants, edit: Edit, target: str) -> tuple[str, str]:
    """Apply an edit's constant changes (bottom-up, so earlier offsets stay valid)."""
    applied = []
    for name, value in sorted(edit.changes, key=lambda ch: constants[ch[0]].lineno, reverse=True):
        const = constants[name]
        source = replace_constant(source, const, value)
        applied.append(
            f"{target}:{const.lineno}: {name} = {format_literal(value)}  # was {const.source_text}"
        )
    ast.parse(source)  # only literals changed; a failure here is a bug, not a bad move
    return source, "\n".join(reversed(applied))
