"""The lab notebook shared by the population: what worked, what broke, what was tried.

Built from the Store's read API with bounded queries (top-k, last-n), so its cost and size
stay flat as a run grows to thousands of candidates.
"""

from __future__ import annotations

from evolve.mutate.base import INFRASTRUCTURE
from evolve.mutate.untrusted import fenced
from population.candidate import Candidate, Status
from population.store import MIGRATION, Store


def _delta(store: Store, child: Candidate) -> str:
    if child.val_bpb is None:
        return ""
    if child.parent_id is None:
        return " (seed)"
    try:
        parent = store.get(child.parent_id)
    except KeyError:
        return ""
    if parent.val_bpb is None:
        return ""
    return f" (Δ {child.val_bpb - parent.val_bpb:+.4f} vs its parent)"


def _tail(text: str, lines: int, chars: int) -> str:
    kept = [ln.rstrip() for ln in text.strip().splitlines() if ln.strip()][-lines:]
    joined = "\n".join(kept)
    return joined[-chars:]


def _original(store: Store, candidate: Candidate) -> Candidate:
    """A migration copy stands for the experiment it copies (whose description says what)."""
    seen = 0
    while candidate.mutator == MIGRATION and candidate.parent_id and seen < 64:
        try:
            candidate = store.get(candidate.parent_id)
        except KeyError:
            break
        seen += 1
    return candidate


def build_notebook(store: Store, *, best: int = 6, path_steps: int = 8, failures: int = 6,
                   tail_lines: int = 6, max_chars: int = 6000) -> str:
    """The notebook text: the best results, the path to the best, recent failures with tails."""
    sections: list[str] = []
    ranked: list[Candidate] = []
    for island in store.islands():
        ranked.extend(store.survivors(island, best))
    ranked.sort(key=lambda c: (c.val_bpb if c.val_bpb is not None else float("inf")))
    seen_hashes: set[str] = set()
    lines = []
    for candidate in ranked:
        if candidate.source_hash in seen_hashes:
            continue
        seen_hashes.add(candidate.source_hash)
        original = _original(store, candidate)
        what = original.description or "(no description)"
        lines.append(f"- val_bpb {candidate.val_bpb:.4f}{_delta(store, original)} "
                     f"[island {candidate.island}, {original.id}] {what[:160]}")
        if len(lines) >= best:
            break
    if lines:
        sections.append("## Best results so far\n" + "\n".join(lines))
    top = store.best()
    if top is not None:
        chain = [c for c in store.lineage(_original(store, top).id) if c.mutator != MIGRATION]
        steps = []
        for previous, step in zip(chain, chain[1:], strict=False):
            if step.val_bpb is not None and previous.val_bpb is not None:
                change = f"Δ {step.val_bpb - previous.val_bpb:+.4f}"
            else:
                change = step.status.value
            steps.append(f"- {step.description[:160] or '(no description)'} -> {change}")
        if steps:
            shown = steps[-path_steps:]
            more = f"({len(steps) - len(shown)} earlier steps)\n" if len(steps) > len(shown) else ""
            sections.append("## The steps that led to the best\n" + more + "\n".join(shown))
    fail_lines = []
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
        fail_lines.append(line)
    if fail_lines:
        sections.append("## Recent failures (avoid repeating them)\n" + "\n".join(fail_lines))
    text = "\n\n".join(sections)
    if len(text) > max_chars:
        text = text[:max_chars].rsplit("\n", 1)[0] + "\n[... notebook cut to size ...]"
    return text


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
    """Rebuilds the notebook only when the store has new final results (cheap per proposal)."""

    def __init__(self, store: Store, **options: int) -> None:
        self.store = store
        self.options = options
        self._key: tuple[int, int] | None = None
        self._text = ""

    def text(self, parent_id: str | None = None) -> str:
        """The shared notebook, plus what became of the children of `parent_id` if given."""
        key = (self.store.count(Status.DONE, Status.CRASHED, Status.TIMED_OUT),
               self.store.count(Status.REJECTED))
        if key != self._key:
            self._text = build_notebook(self.store, **self.options)
            self._key = key
        if parent_id is None:
            return self._text
        tried = tried_with_outcomes(self.store, parent_id)
        if not tried:
            return self._text
        section = "## Already tried on this parent\n" + "\n".join(f"- {t}" for t in tried)
        return f"{self._text}\n\n{section}" if self._text else section
