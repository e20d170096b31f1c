"""What a report shows, read once from the run directory (read-only, safe on a live run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evolve.inspect.runview import (
    all_candidates,
    config_get,
    file_diff,
    kept_flags,
    load_config,
    open_run_dir,
    open_store,
)
from evolve.inspect.trust import Trust, read_trust, with_test_scores
from population.candidate import Candidate, Status
from population.store import is_copy

TOP_IN_TABLE = 15
TOP_IN_TREE = 6
FAILURES_SHOWN = 10


@dataclass(frozen=True)
class RunSnapshot:
    """A run as the report sees it; candidates are immutable snapshots from the store."""

    name: str
    path: Path
    config: dict[str, Any]
    config_text: str
    experiments: list[Candidate]        # done/crashed/timed_out, in finish order, no copies
    done_with_copies: list[Candidate]   # every done candidate, copies too, in finish order
    kept: dict[str, bool]
    by_id: dict[str, Candidate]
    best: Candidate | None
    best_lineage: list[Candidate]       # root first, copies folded away
    top: list[Candidate]                # best distinct experiments, best first
    failures: list[Candidate]           # newest first
    counts: dict[str, int]
    floor: float | None
    total_cost: float
    trust: Trust = field(default_factory=Trust)  # seed noise, confirmations, test scores

    def parent(self, candidate: Candidate) -> Candidate | None:
        """The candidate whose files this one edited (migration copies skipped)."""
        parent = self.by_id.get(candidate.parent_id or "")
        while parent is not None and is_copy(parent):
            parent = self.by_id.get(parent.parent_id or "")
        return parent

    def diff(self, candidate: Candidate) -> str:
        """The edit against its parent: the stored diff, or one made now when none was kept."""
        parent = self.parent(candidate)
        if candidate.diff.strip():
            return candidate.diff
        return file_diff(dict(parent.files) if parent else None, dict(candidate.files))

    def lineage_of(self, candidate: Candidate) -> list[Candidate]:
        """Root first, copies folded away."""
        chain = [candidate]
        while (parent := self.parent(chain[-1])) is not None and len(chain) <= len(self.by_id):
            chain.append(parent)
        return chain[::-1]


def read_run(run_path: Path) -> RunSnapshot:
    """Read everything the report needs in one read-only pass over the store."""
    run_dir = open_run_dir(run_path)
    config, config_text = load_config(run_dir)
    with open_store(run_dir) as store:
        everything = all_candidates(store)
        best = store.best()
        trust = read_trust(store, everything)
    # runs from before the in-run test score kept it in test extra runs
    everything = with_test_scores(everything, trust)
    if best is not None:
        best = next(c for c in everything if c.id == best.id)
    by_id = {c.id: c for c in everything}
    experiments = [c for c in everything
                   if c.status in (Status.DONE, Status.CRASHED, Status.TIMED_OUT) and not is_copy(c)]
    done_all = [c for c in everything if c.status is Status.DONE and c.val_bpb is not None]
    size = int(config_get(config, "population.size", 1) or 1)
    kept = kept_flags(run_dir, done_all, size)
    if best is not None and is_copy(best):  # a copy ties with its original; show the original
        while is_copy(best) and best.parent_id in by_id:
            best = by_id[best.parent_id]
    top: list[Candidate] = []
    seen_hashes: set[str] = set()
    for candidate in sorted((c for c in done_all if not is_copy(c)),
                            key=lambda c: (c.val_bpb, c.finished_at or 0.0)):
        if candidate.source_hash not in seen_hashes:
            seen_hashes.add(candidate.source_hash)
            top.append(candidate)
    counts = {status.value: 0 for status in Status}
    for candidate in everything:
        if not is_copy(candidate):
            counts[candidate.status.value] += 1
    floors = [float(c.metrics["entropy_floor_bpb"]) for c in done_all
              if isinstance(c.metrics.get("entropy_floor_bpb"), int | float)]
    failures = sorted((c for c in everything
                       if c.status in (Status.CRASHED, Status.TIMED_OUT, Status.REJECTED)),
                      key=lambda c: c.finished_at or 0.0, reverse=True)
    snapshot = RunSnapshot(
        name=run_dir.path.resolve().name, path=run_dir.path, config=config,
        config_text=config_text, experiments=experiments, done_with_copies=done_all, kept=kept,
        by_id=by_id, best=best, best_lineage=[], top=top[:TOP_IN_TABLE],
        failures=failures[:FAILURES_SHOWN], counts=counts,
        floor=floors[-1] if floors else None,
        total_cost=sum(c.cost_usd for c in everything), trust=trust)
    if best is not None:
        snapshot.best_lineage.extend(snapshot.lineage_of(best))
    return snapshot
