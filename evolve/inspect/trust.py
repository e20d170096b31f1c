"""How far a run's claims can be trusted, read from its store: the seed noise floor, every
confirmation decision with its evidence, and held-out test scores beside val. Shared by
`evolve status`, the report and the export (read-only; safe on a live run)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from population.candidate import Candidate, Status
from population.outcomes import Outcome, Purpose
from population.store import Store, is_copy

NOISE_META = "noise_floor"


@dataclass(frozen=True)
class Decision:
    candidate_id: str
    accepted: bool
    untrusted: bool
    trigger: str
    reason: str


@dataclass(frozen=True)
class Trust:
    sigma: float | None = None
    noise_runs: tuple[float, ...] = ()
    decisions: tuple[Decision, ...] = ()
    test: dict[str, tuple[float, float]] = field(default_factory=dict)  # id -> (val, test)
    extra_runs: int = 0

    def test_of(self, candidate: Candidate) -> float | None:
        """Its held-out test score: scored in its own run, or (runs before that) by a test run."""
        if candidate.test_bpb is not None:
            return candidate.test_bpb
        pair = self.test.get(candidate.id)
        return None if pair is None else pair[1]

    def lines(self) -> list[str]:
        """Plain-text summary lines (status, export messages)."""
        out = []
        if self.sigma is not None:
            runs = ", ".join(f"{v:.6f}" for v in self.noise_runs)
            out.append(f"seed noise: σ {self.sigma:.6f} of val_bpb (root under "
                       f"{len(self.noise_runs)} seeds: {runs})")
        if self.decisions:
            accepted = sum(d.accepted for d in self.decisions)
            untrusted = sum(d.untrusted for d in self.decisions)
            out.append(f"confirmations: {len(self.decisions)} re-run decisions, {accepted} "
                       f"confirmed, {len(self.decisions) - accepted} not credited"
                       + (f", {untrusted} untrusted (reseed themselves)" if untrusted else ""))
        if self.extra_runs:
            out.append(f"extra runs (noise, confirmation, stages): {self.extra_runs}")
        return out


def read_trust(store: Store, candidates: Iterable[Candidate]) -> Trust:
    """The trust facts of a run from its store and its candidates."""
    sigma, runs = None, ()
    raw = store.get_meta(NOISE_META)
    if raw is not None:
        noise: dict[str, Any] = json.loads(raw)
        sigma, runs = float(noise["sigma"]), tuple(float(v) for v in noise["runs"])
    decisions = []
    for c in candidates:
        confirm = c.metrics.get("confirm")
        if isinstance(confirm, dict):
            decisions.append(Decision(c.id, bool(confirm.get("accepted")),
                                      bool(confirm.get("untrusted")), str(confirm.get("trigger", "")),
                                      str(confirm.get("reason", ""))))
    test: dict[str, tuple[float, float]] = {}
    extra = store.extra_runs()
    for run in extra:
        if run.purpose == Purpose.TEST and run.outcome == Outcome.DONE and run.test_bpb is not None \
                and run.val_bpb is not None:
            test[run.candidate_id] = (run.val_bpb, run.test_bpb)
    return Trust(sigma, runs, tuple(decisions), test, len(extra))


def with_test_scores(candidates: Iterable[Candidate], trust: Trust) -> list[Candidate]:
    """The candidates with `test_bpb` set where only a held-out test run (an extra run, in runs
    from before the test split was scored in every run) scored them."""
    return [c.replace(test_bpb=trust.test[c.id][1])
            if c.test_bpb is None and c.id in trust.test else c for c in candidates]


def unsandboxed_note(candidate: Candidate, *, reason: bool = True) -> str:
    """" (unsandboxed: why)" after a score the candidate could reach, else ""."""
    if not candidate.unsandboxed:
        return ""
    return f" (unsandboxed: {candidate.sandbox_problem})" if reason else " (unsandboxed)"


def sandbox_summary(candidates: Iterable[Candidate]) -> list[str]:
    """How many scores came from runs without a working jail, and why (one line each)."""
    done = [c for c in candidates if c.status is Status.DONE and not is_copy(c)]
    marked = [c for c in done if c.unsandboxed]
    if not marked:
        return []
    reasons = Counter(str(c.sandbox_problem) for c in marked)
    lines = [f"unsandboxed scores: {len(marked)} of {len(done)} (the candidate could reach "
             "the process, files or clock that scored it; see docs/threat-model.md)"]
    lines += [f"  {n} × {reason}" for reason, n in reasons.most_common(5)]
    return lines


def mark(candidate: Candidate) -> str:
    """A short flag for tables: confirmed, not credited, untrusted, or nothing."""
    confirm = candidate.metrics.get("confirm")
    if not isinstance(confirm, dict):
        return ""
    if confirm.get("untrusted"):
        return "untrusted"
    return "confirmed" if confirm.get("accepted") else "not credited"
