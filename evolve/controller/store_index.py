"""In-memory indexes over the store, so a proposal's context costs no more as the run grows.

Lineages come from a cache of final ancestors (they never change); the children of a parent
are read from the store once, then kept up to date as candidates are added and finish.
"""

from __future__ import annotations

from collections import OrderedDict

from evolve.mutate.notebook import tried_with_outcomes
from population.candidate import Candidate
from population.store import Store

TRIED_LIMIT = 20  # children of a parent described to its next mutation
ANCESTOR_CACHE = 4096  # final candidates kept in memory for lineages
CHAINS_KEPT = 256  # whole lineages of final parents kept (tuples sharing the candidates)


class StoreIndex:
    """What the shell remembers about the store between proposals (the store stays the truth)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._ancestors: dict[str, Candidate] = {}
        self._chains: OrderedDict[str, tuple[Candidate, ...]] = OrderedDict()
        self._children: dict[str, dict[str, Candidate]] = {}  # parent -> children, by id

    def note(self, c: Candidate) -> None:
        """A candidate was added or changed: keep the children index current."""
        if c.parent_id in self._children:
            self._children[c.parent_id][c.id] = _light(c)

    def tried_on(self, parent: Candidate) -> list[str]:
        """`notebook.tried_with_outcomes`, from an index kept up to date as children are added and
        finish: the store is read once per parent, not on every proposal (a champion can
        have hundreds of children)."""
        if parent.id not in self._children:
            self._children[parent.id] = {c.id: _light(c) for c in self.store.children_of(parent.id)}
        children = list(self._children[parent.id].values())[-TRIED_LIMIT:]
        return tried_lines(parent, children)

    def lineage(self, candidate: Candidate) -> list[Candidate]:
        """Root .. candidate. Ancestors are final, so they are cached, and so is each final
        parent's whole chain: a proposal walks no lineage hundreds of steps deep, it copies
        its parent's chain (or extends the nearest chain kept by the steps not seen yet)."""
        if candidate.parent_id is None:
            return [candidate]
        return [*self._chain(candidate.parent_id), candidate]

    def _chain(self, candidate_id: str) -> tuple[Candidate, ...]:
        """Root .. the final candidate `candidate_id`, kept for the CHAINS_KEPT latest."""
        found = self._chains.get(candidate_id)
        if found is not None:
            self._chains.move_to_end(candidate_id)
            return found
        walked: list[Candidate] = []
        base: tuple[Candidate, ...] = ()
        step_id: str | None = candidate_id
        while step_id is not None:
            if step_id in self._chains:
                base = self._chains[step_id]
                break
            ancestor = self._ancestor(step_id)
            walked.append(ancestor)
            step_id = ancestor.parent_id
            if len(walked) > 100_000:
                raise RuntimeError(f"the lineage of {candidate_id} loops")
        chain = base + tuple(reversed(walked))
        if all(step.status.is_final for step in walked):  # what is still running may change
            self._chains[candidate_id] = chain
            if len(self._chains) > CHAINS_KEPT:
                self._chains.popitem(last=False)
        return chain

    def _ancestor(self, candidate_id: str) -> Candidate:
        ancestor = self._ancestors.get(candidate_id)
        if ancestor is None:
            ancestor = self.store.get(candidate_id)
            if ancestor.status.is_final:
                if len(self._ancestors) >= ANCESTOR_CACHE:
                    self._ancestors.clear()
                self._ancestors[candidate_id] = ancestor
        return ancestor


def tried_lines(parent: Candidate, children: list[Candidate]) -> list[str]:
    """One line per child already made from `parent` and what happened to it (the format of
    `evolve.mutate.notebook.tried_with_outcomes`)."""
    return tried_with_outcomes(_Children(parent, children), parent.id)  # type: ignore[arg-type]


def _light(c: Candidate) -> Candidate:
    """A candidate without its sources and texts, for in-memory indexes."""
    return c.replace(files={}, raw_answer="", applied_edit="", diff="", log_tail="", rationale="")


class _Children:
    """The two store reads `tried_on_parent` makes, answered from memory."""

    def __init__(self, parent: Candidate, children: list[Candidate]) -> None:
        self.parent, self.children = parent, children

    def get(self, candidate_id: str) -> Candidate:
        return self.parent

    def children_of(self, parent_id: str) -> list[Candidate]:
        return self.children
