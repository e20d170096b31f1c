"""Extra runs: the jobs beside the experiments (noise floor, confirmation, stages).

The shell hands every finished first run to `intercept()`; one that needs more evidence or a
longer stage is held back while its extra runs go first on the workers. When an extra run ends
(or is given up), `after()` turns it into evidence and records the candidates it completes
through the shell's `record` callback. Each extra job is a row of the store's extra_runs table,
named by `job_id`. The held-out test split needs none: every run scores it.
"""

from __future__ import annotations

from collections.abc import Callable

from evolve.config.schema import ConfirmConfig, FidelityConfig, NoiseConfig
from evolve.controller.evidence import Evidence
from evolve.controller.stages import StageResult, Stages
from evolve.controller.wiring import RunFacts
from evolve.workers.runner import RunResult
from population.candidate import Status
from population.extra_runs import ExtraRun, parse_job_id
from population.outcomes import Outcome
from population.result import Result
from population.store import Store
from population.survival import is_score

# Records a final result (the shell's `_record`).
RecordResult = Callable[[Result, float], None]


class ExtraRuns:
    """Queues, starts and closes extra runs and turns their results into recorded decisions."""

    def __init__(self, store: Store, facts: RunFacts, *, noise: NoiseConfig,
                 confirm: ConfirmConfig, fidelity: FidelityConfig,
                 record: RecordResult,
                 peers: Callable[[int], list[int] | None] | None = None) -> None:
        self.store = store
        self.evidence = Evidence(store, seed=facts.seed, noise=noise, confirm=confirm,
                                 size=facts.size, root_id=facts.root_id, peers=peers)
        self.stages = Stages(store, fidelity, root_id=facts.root_id)
        self._record = record
        self._job_rows: dict[str, int] = {}  # extra job -> its current row (a new one after a loss)

    @staticmethod
    def owns(job: str) -> bool:
        """Whether a scheduler job is an extra run rather than a candidate's first run."""
        return parse_job_id(job) is not None

    def first_fraction(self, candidate_id: str) -> float:
        """The share of the training budget a candidate's first run gets (< 1: stage 1)."""
        return self.stages.first_fraction(candidate_id)

    def sigma(self) -> float | None:
        return self.evidence.sigma()

    def pending(self) -> int:
        """Results held back until their extra runs are in."""
        return self.evidence.pending()

    # ------------------------------------------------------------ first runs

    def intercept(self, result: Result, now: float) -> list[str] | None:
        """The extra runs a first run calls for before its decision stands; None when it
        needs none and the caller records it as is (and reports its val_bpb)."""
        seed = self.store.get(result.candidate_id).seed
        staged = self.stages.after_first_run(result, seed, now)
        if staged is not None:  # multi-fidelity: a short first stage
            return self._staged(result.candidate_id, staged, result.reason, result.log_tail, now)
        held = self.evidence.hold(result, now)
        if held is not None and not held:  # evidence already in (noise runs beside the root)
            return self._record_all(self.evidence.complete(), [], now)
        return held

    def early_jobs(self, now: float) -> list[str]:
        """Extra runs that start with the root: its noise seeds."""
        return self.evidence.early_noise(now)

    def release(self, now: float) -> list[str]:
        """The root is recorded: results that waited for it are decided now; returns the extra
        runs that calls for."""
        records, jobs = self.evidence.after_recorded(now)
        return self._record_all(records, jobs, now)

    # ------------------------------------------------------------ extra runs

    def start(self, job: str, worker: str, now: float) -> ExtraRun | None:
        """The row an extra job runs as (a fresh copy when an earlier try was lost), started;
        None for a candidate's own run."""
        key = parse_job_id(job)
        if key is None:
            return None
        row = self.store.extra_run(self._job_rows.get(job, key))
        if row.outcome != Outcome.QUEUED:
            row = self.store.add_extra_run(row.candidate_id, purpose=row.purpose, seed=row.seed,
                                           splits=row.splits, budget_fraction=row.budget_fraction,
                                           now=now)
            self._job_rows[job] = row.id
        self.store.start_extra_run(row.id, worker=worker, now=now)
        return row

    def lost(self, row_id: int, reason: str, now: float) -> None:
        """Its worker left: the row is closed and the scheduler re-runs the job."""
        self.store.finish_extra_run(row_id, outcome=Outcome.LOST, reason=reason, now=now)

    def close(self, row_id: int, result: RunResult, now: float) -> str:
        """Store a finished extra run as its row; returns the outcome it counts as."""
        outcome, reason = result.outcome, result.reason
        bpb = result.metrics.get("val_bpb")
        if outcome == Outcome.DONE and not is_score(bpb):
            outcome, reason = "crashed", f"no finite val_bpb in the result ({bpb!r})"
        if outcome != Outcome.LOST:
            self.store.finish_extra_run(row_id, outcome=outcome, metrics=result.metrics,
                                        reason=reason, now=now)
        else:
            self.store.finish_extra_run(row_id, outcome=Outcome.LOST, reason=reason, now=now)
        return outcome

    def after(self, job: str, now: float) -> list[str]:
        """An extra run is over (closed, or given up): record what it completes; returns the
        extra runs that calls for."""
        key = parse_job_id(job)
        assert key is not None
        if self.stages.owns(key):  # a promoted child's next stage
            row = self.store.extra_run(self._job_rows.get(job, key))
            staged = self.stages.after_extra(key, row.outcome, dict(row.metrics), row.seed, now)
            return self._staged(row.candidate_id, staged, row.reason, "", now)
        records, jobs = self.evidence.on_extra_done(key, now)
        return self._record_all(records, jobs, now)

    def _record_all(self, records: list, jobs: list[str], now: float) -> list[str]:
        """Record each, then what waited on them; returns every extra run they call for."""
        jobs = list(jobs)
        while records:
            for record in records:
                self._record(record, now)
            records, more = self.evidence.after_recorded(now)
            jobs += more
        return jobs

    def _staged(self, candidate_id: str, staged: StageResult, reason: str, log_tail: str,
                now: float) -> list[str]:
        """Promoted: its next stage runs first. Stopped early: recorded now. The full budget
        reached: judged like any result (confirmation included)."""
        if staged.jobs is not None:
            return list(staged.jobs)
        if staged.status is Status.DONE:
            held = self.evidence.hold(
                Result(candidate_id, Status.DONE, staged.metrics, "", log_tail), now)
            if held is not None:
                return held
        why = "; ".join(r for r in (staged.reason, reason) if r)
        self._record(Result(candidate_id, staged.status, staged.metrics, why, log_tail), now)
        return []
