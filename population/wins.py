"""Wins: children that beat their parent, and which of them are worth carrying to a target.

Pure decisions for the merge operator (evolve/mutate/merge.py): a win's edit is the diff from
its parent to it; carrying it onto another line is a three-way merge made elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from population.candidate import Candidate


@dataclass(frozen=True)
class Win:
    """A child (`donor`) that beat its parent (`base`): the edit worth carrying elsewhere."""

    donor: Candidate
    base: Candidate

    @property
    def gain(self) -> float:
        """How much lower the donor's val_bpb is than its parent's."""
        return (self.base.val_bpb or 0.0) - (self.donor.val_bpb or 0.0)


def carryable(wins: Iterable[Win], target: Candidate, lineage_ids: Iterable[str],
              carried: Iterable[str]) -> list[Win]:
    """The wins worth trying on `target`, largest gain first (ties: the older donor).

    Left out: a win on the target's own line (`lineage_ids`, root .. target: it has that edit
    already), a child of the target (carrying it back rebuilds the donor), a donor with the
    target's very code, a donor already carried into the target (`carried`: the donors
    recorded on the target's children, clean, conflicting or crossed), and a donor that is
    itself a merge: its edit is another win's, and carrying it again would pass one edit on
    from merge to merge (the original stays carryable)."""
    on_line = set(lineage_ids)
    done = set(carried)
    found = [w for w in wins
             if w.donor.donor_id is None  # a merge's win is its donor's edit: carry that one
             and w.donor.id not in on_line and w.donor.id not in done
             and w.donor.parent_id != target.id and w.donor.source_hash != target.source_hash]
    return sorted(found, key=lambda w: (-w.gain, w.donor.id))


def carry_after(child: Candidate, parent: Candidate, best_before: Candidate | None,
                best_after: Candidate) -> tuple[str, str] | None:
    """The merge a finished child triggers, as (target id, donor id), or None.

    Asynchronous greedy: with several workers a child may beat its parent after another win
    has already moved the island's best elsewhere. Then the two wins sit on different lines:
    if the child did not become the best, its edit is carried onto the best; if it did, the
    edit of the best it displaced is carried onto it (the caller checks that one was a win).
    Nothing is triggered when the parent was the best (the plain greedy step), when the
    child did not beat its parent, or when the child is itself a merge (its edit is another
    win's, already carried once)."""
    if child.donor_id is not None:
        return None
    if child.val_bpb is None or parent.val_bpb is None or not child.val_bpb < parent.val_bpb:
        return None
    if best_after.id != child.id:
        if best_after.source_hash == parent.source_hash:
            return None
        return best_after.id, child.id
    if best_before is None or best_before.source_hash in (parent.source_hash, child.source_hash):
        return None
    return child.id, best_before.id
