"""In-memory indexes over the store, so a proposal's context costs no more as the run grows.

Lineages come from a cache of final ancestors (they never change); the children of a parent
are read from the store once, then kept up to date as candidates are added and finish.
"""

from __future__ import annotations

from evolve.mutate.notebook import tried_with_outcomes
from population.candidate import Candidate
from population.store import Store

TRIED_LIMIT = 20  # children of a parent described to its next mutation
ANCESTOR_CACHE = 4096  # final candidates kept in memory for lineages


class StoreIndex:
    """What the shell remembers about the store between proposals (the store stays the truth)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._ancestors: dict[str, Candidate] = {}
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
        """Root .. candidate. Ancestors are final, so they are cached: a proposal costs no
        store reads for a lineage hundreds of steps deep."""
        chain = [candidate]
        while chain[-1].parent_id is not None:
            parent_id = chain[-1].parent_id
            ancestor = self._ancestors.get(parent_id)
            if ancestor is None:
                ancestor = self.store.get(parent_id)
                if ancestor.status.is_final:
                    if len(self._ancestors) >= ANCESTOR_CACHE:
                        self._ancestors.clear()
                    self._ancestors[parent_id] = ancestor
            chain.append(ancestor)
            if len(chain) > 100_000:
                raise RuntimeError(f"the lineage of {candidate.id} loops")
        return chain[::-1]


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
