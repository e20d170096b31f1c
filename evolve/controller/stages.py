"""Multi-fidelity stages in the controller: every child trains on a short budget first and is
promoted, the moment its result arrives, if it ranks in the top fraction of that stage's
results so far (asynchronous successive halving; `population.fidelity` decides). A promoted
child is held while its next stage runs as an extra run; one that stops early is recorded
`rejected` with its stage, so a short-budget score never competes with full-budget ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evolve.config.schema import FidelityConfig
from population.candidate import Status
from population.fidelity import Stage, ladder, next_stage
from population.outcomes import Outcome, Purpose
from population.result import Result
from population.store import Store


@dataclass
class _Climb:
    candidate_id: str
    stage: int
    history: list[dict[str, Any]] = field(default_factory=list)
    log_tail: str = ""


@dataclass(frozen=True)
class StageResult:
    """What to do with a result: run `jobs` next (held), or record it now as given."""

    jobs: tuple[str, ...] | None
    status: Status
    metrics: dict[str, Any]
    reason: str


class Stages:
    """The stage ladder of a run and the scores seen at each stage."""

    def __init__(self, store: Store, fidelity: FidelityConfig, root_id: str = "root") -> None:
        self.store = store
        self.root_id = root_id
        self.ladder: tuple[Stage, ...] = ladder(
            Stage(s.budget_fraction, s.promote_top) for s in fidelity.stages)
        self.seen: list[list[float]] = [[] for _ in self.ladder]
        self._climbs: dict[int, _Climb] = {}  # extra run id -> the child it promotes
        if self.enabled:
            for c in store.finished_in_order(include_rejected=True, sources=False):
                for step in c.metrics.get("stages", []):
                    if step.get("val_bpb") is not None and step["stage"] < len(self.seen):
                        self.seen[step["stage"]].append(float(step["val_bpb"]))

    @property
    def enabled(self) -> bool:
        return len(self.ladder) > 1

    def first_fraction(self, candidate_id: str) -> float:
        """The budget a candidate's own run trains on (the root always runs in full)."""
        if not self.enabled or candidate_id == self.root_id:
            return 1.0
        return self.ladder[0].budget_fraction

    def owns(self, run_id: int) -> bool:
        return run_id in self._climbs

    def after_first_run(self, result: Result, seed: int, now: float) -> StageResult | None:
        """None: a full-budget result (stages off, or the root). Else what stage 0 leads to."""
        if self.first_fraction(result.candidate_id) >= 1.0:
            return None
        return self._step(_Climb(result.candidate_id, 0, log_tail=result.log_tail),
                          result.status, dict(result.metrics), seed, now)

    def after_extra(self, run_id: int, outcome: str, metrics: dict[str, Any],
                    seed: int, now: float) -> StageResult:
        climb = self._climbs.pop(run_id)
        status = Status.DONE if outcome == Outcome.DONE else (
            Status.TIMED_OUT if outcome == Outcome.TIMED_OUT else Status.CRASHED)
        return self._step(climb, status, dict(metrics), seed, now)

    def _step(self, climb: _Climb, status: Status, metrics: dict[str, Any], seed: int,
              now: float) -> StageResult:
        stage = self.ladder[climb.stage]
        score = metrics.get("val_bpb") if status is Status.DONE else None
        climb.history.append({"stage": climb.stage, "budget_fraction": stage.budget_fraction,
                              "val_bpb": score, "status": status.value})
        metrics = {**metrics, "stage": climb.stage, "budget_fraction": stage.budget_fraction,
                   "stages": list(climb.history)}
        if status is not Status.DONE:
            return StageResult(None, status, metrics, f"failed at stage {climb.stage + 1} of "
                               f"{len(self.ladder)} ({stage.budget_fraction:.0%} budget)")
        if climb.stage == len(self.ladder) - 1:  # the full budget: an ordinary result now
            return StageResult(None, status, metrics, "")
        self.seen[climb.stage].append(float(score))
        following = next_stage(self.ladder, climb.stage, float(score), self.seen[climb.stage])
        if following is None:
            seen = self.seen[climb.stage]
            rank = 1 + sum(1 for s in seen if s < score)
            return StageResult(None, Status.REJECTED, metrics,
                               f"not promoted past stage {climb.stage + 1} of {len(self.ladder)} "
                               f"({stage.budget_fraction:.0%} budget): val_bpb {score:.6f} ranks "
                               f"{rank} of {len(seen)} there (top {stage.promote_top:.0%} go on)")
        # the last stage's run is the candidate's score: its test score comes with it
        run = self.store.add_extra_run(
            climb.candidate_id, purpose=Purpose.STAGE, seed=seed, splits=("val", "test"),
            budget_fraction=self.ladder[following].budget_fraction, now=now)
        self._climbs[run.id] = _Climb(climb.candidate_id, following, climb.history,
                                      climb.log_tail)
        return StageResult((run.job_id,), status, metrics, "")
