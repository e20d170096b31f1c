"""The lab notebook shared by the population: what worked, what broke, what was tried.

Built from the Store's read API with bounded queries (top-k, last-n) and light records of the
lineages it has already read, so its cost and size stay flat as a run grows to thousands of
candidates and lineages grow hundreds of steps deep.
"""

from __future__ import annotations

from dataclasses import dataclass

from evolve.mutate.base import INFRASTRUCTURE
from evolve.mutate.untrusted import fenced
from population.candidate import Candidate, Status
from population.store import MIGRATION, Store


@dataclass(frozen=True)
class Step:
    """What the notebook needs of one candidate, without its sources (lineages stay cheap)."""

    id: str
    parent_id: str | None
    description: str
    val_bpb: float | None
    status: Status
    copy: bool   # a migration copy: the same experiment on another island
    edits: int   # edits from the seed to here (copies add none)


class Steps:
    """Light records of candidates, final ones kept: a lineage is walked once in a run, and
    then only as far up as the notebook shows, however deep it grows."""

    def __init__(self, store: Store, limit: int = 200_000) -> None:
        self.store = store
        self.limit = limit
        self._final: dict[str, Step] = {}
        self._hashes: dict[str, str] = {}

    def note(self, c: Candidate) -> None:
        """A candidate changed: a final one is remembered (its ancestors are read on demand)."""
        if c.status.is_final and c.id not in self._final:
            parent = self._final.get(c.parent_id) if c.parent_id else None
            if parent is not None or c.parent_id is None:
                self._keep(_step(c, parent))

    def get(self, candidate_id: str) -> Step:
        """The step of a candidate; its unknown ancestors are read once (root-ward)."""
        known = self._final.get(candidate_id)
        if known is not None:
            return known
        chain: list[Candidate] = []
        cursor: str | None = candidate_id
        while cursor is not None and cursor not in self._final:
            if len(chain) > 1_000_000:
                raise RuntimeError(f"the lineage of {candidate_id} loops")
            chain.append(self.store.get(cursor))
            cursor = chain[-1].parent_id
        parent = self._final.get(cursor) if cursor is not None else None
        step = parent
        for c in reversed(chain):
            step = _step(c, step)
            if c.status.is_final:  # a result may still change the others
                self._keep(step)
        assert step is not None
        return step

    def source_hash(self, c: Candidate) -> str:
        """Normalising 25 KB of source costs a millisecond: once per final candidate."""
        if not c.status.is_final:
            return c.source_hash
        found = self._hashes.get(c.id)
        if found is None:
            found = self._hashes[c.id] = c.source_hash
        return found

    def original(self, step: Step) -> Step:
        """A migration copy stands for the experiment it copies (whose description says what)."""
        seen = 0
        while step.copy and step.parent_id and seen < 64:
            step = self.get(step.parent_id)
            seen += 1
        return step

    def path(self, step: Step, shown: int) -> list[Step]:
        """The last `shown` + 1 steps that are not copies, root-ward from `step`, root first."""
        chain = [] if step.copy else [step]
        while len(chain) <= shown and step.parent_id is not None:
            step = self.get(step.parent_id)
            if not step.copy:
                chain.append(step)
        return chain[::-1]

    def _keep(self, step: Step) -> None:
        if len(self._final) >= self.limit:
            self._final.clear()
            self._hashes.clear()
        self._final[step.id] = step


def _step(c: Candidate, parent: Step | None) -> Step:
    copy = c.mutator == MIGRATION
    edits = 0 if parent is None else parent.edits + (0 if copy else 1)
    return Step(c.id, c.parent_id, c.description, c.val_bpb, c.status, copy, edits)


def _delta(steps: Steps, child: Step) -> str:
    if child.val_bpb is None:
        return ""
    if child.parent_id is None:
        return " (seed)"
    try:
        parent = steps.get(child.parent_id)
    except KeyError:
        return ""
    if parent.val_bpb is None:
        return ""
    return f" (Δ {child.val_bpb - parent.val_bpb:+.4f} vs its parent)"


def _tail(text: str, lines: int, chars: int) -> str:
    kept = [ln.rstrip() for ln in text.strip().splitlines() if ln.strip()][-lines:]
    joined = "\n".join(kept)
    return joined[-chars:]


def build_notebook(store: Store, *, best: int = 6, path_steps: int = 8, failures: int = 6,
                   tail_lines: int = 6, max_chars: int = 6000, steps: Steps | None = None) -> str:
    """The notebook text: the best results, the path to the best, recent failures with tails.

    Every read is bounded (top-k, last-n, the last `path_steps` of the best's lineage), so it
    costs the same at 100 or 10,000 candidates; `steps` carries what earlier builds read."""
    steps = steps or Steps(store)
    sections = [_best_section(store, steps, best), _path_section(store, steps, path_steps),
                _failure_section(store, failures, tail_lines)]
    text = "\n\n".join(s for s in sections if s)
    if len(text) > max_chars:
        text = text[:max_chars].rsplit("\n", 1)[0] + "\n[... notebook cut to size ...]"
    return text


def _best_section(store: Store, steps: Steps, best: int) -> str:
    ranked: list[Candidate] = []
    for island in store.islands():
        ranked.extend(store.survivors(island, best))
    ranked.sort(key=lambda c: (c.val_bpb if c.val_bpb is not None else float("inf")))
    seen_hashes: set[str] = set()
    lines = []
    for candidate in ranked:
        digest = steps.source_hash(candidate)
        if digest in seen_hashes:
            continue
        seen_hashes.add(digest)
        original = steps.original(steps.get(candidate.id))
        what = original.description or "(no description)"
        lines.append(f"- val_bpb {candidate.val_bpb:.4f}{_delta(steps, original)} "
                     f"[island {candidate.island}, {original.id}] {what[:160]}")
        if len(lines) >= best:
            break
    return "## Best results so far\n" + "\n".join(lines) if lines else ""


def _path_section(store: Store, steps: Steps, path_steps: int) -> str:
    top = store.best()
    if top is None:
        return ""
    last = steps.original(steps.get(top.id))
    chain = steps.path(last, path_steps)
    lines = []
    for previous, step in zip(chain, chain[1:], strict=False):
        if step.val_bpb is not None and previous.val_bpb is not None:
            change = f"Δ {step.val_bpb - previous.val_bpb:+.4f}"
        else:
            change = step.status.value
        lines.append(f"- {step.description[:160] or '(no description)'} -> {change}")
    if not lines:
        return ""
    earlier = last.edits - len(lines)
    more = f"({earlier} earlier steps)\n" if earlier > 0 else ""
    return "## The steps that led to the best\n" + more + "\n".join(lines)


def _failure_section(store: Store, failures: int, tail_lines: int) -> str:
    lines = []
    # an unreachable LLM (429, outage, budget) is not an experiment: it teaches nothing
    experiments = [f for f in store.recent_failures(failures * 4)
                   if not f.reason.startswith(INFRASTRUCTURE)][:failures]
    for failed in experiments:
        what = failed.description or "(no description)"
        line = f"- {failed.status.value}: {what[:140]}"
        if failed.reason:
            line += f"\n  reason: {failed.reason.strip()[:300]}"
        if failed.status in (Status.CRASHED, Status.TIMED_OUT) and failed.log_tail.strip():
            line += "\n  log tail " + fenced(_tail(failed.log_tail, tail_lines, 600), 600)
        lines.append(line)
    return "## Recent failures (avoid repeating them)\n" + "\n".join(lines) if lines else ""


def tried_on_parent(store: Store, parent_id: str, limit: int = 50) -> list[str]:
    """Descriptions of the children already made from the parent (MutationContext field)."""
    return [c.description for c in store.children_of(parent_id)
            if c.mutator != MIGRATION and c.description
            and not c.reason.startswith(INFRASTRUCTURE)][-limit:]


def tried_with_outcomes(store: Store, parent_id: str, limit: int = 20) -> list[str]:
    """One line per child already made from the parent, with what happened to it."""
    lines = []
    parent_bpb = None
    try:
        parent_bpb = store.get(parent_id).val_bpb
    except KeyError:
        pass
    for child in store.children_of(parent_id):
        if child.mutator == MIGRATION or child.reason.startswith(INFRASTRUCTURE):
            continue
        what = child.description or "(no description)"
        if child.val_bpb is not None and parent_bpb is not None:
            verdict = "better" if child.val_bpb < parent_bpb else "not better"
            outcome = f"val_bpb {child.val_bpb:.4f} (Δ {child.val_bpb - parent_bpb:+.4f}, {verdict})"
        elif child.status in (Status.PROPOSED, Status.RUNNING):
            outcome = "running now"
        else:
            outcome = child.status.value + (f": {child.reason[:120]}" if child.reason else "")
        lines.append(f"{what[:160]} -> {outcome}")
    return lines[-limit:]


class LabNotebook:
    """Rebuilds the notebook only when the store has new final results, from bounded reads
    and the lineage steps it has seen (`note` them as they finish): cheap per proposal."""

    def __init__(self, store: Store, **options: int) -> None:
        self.store = store
        self.options = options
        self.steps = Steps(store)
        self._key: tuple[int, int] | None = None
        self._text = ""

    def note(self, c: Candidate) -> None:
        """A candidate was added or changed (the controller tells every change)."""
        self.steps.note(c)

    def text(self, parent_id: str | None = None) -> str:
        """The shared notebook, plus what became of the children of `parent_id` if given."""
        key = (self.store.count(Status.DONE, Status.CRASHED, Status.TIMED_OUT),
               self.store.count(Status.REJECTED))
        if key != self._key:
            self._text = build_notebook(self.store, steps=self.steps, **self.options)
            self._key = key
        if parent_id is None:
            return self._text
        tried = tried_with_outcomes(self.store, parent_id)
        if not tried:
            return self._text
        section = "## Already tried on this parent\n" + "\n".join(f"- {t}" for t in tried)
        return f"{self._text}\n\n{section}" if self._text else section
