"""Evidence before credit: the noise floor and confirmation re-runs.

The shell asks `hold()` about every finished first run. A result that needs more evidence (the
root, to measure σ; a child that would be the new best or enters the population by less than
m·σ) is held back — not recorded, so it can neither be selected nor crowned — while its extra
runs go first on the workers. When the last of them is in, `on_extra_done()` hands back the
final record: the decision, its evidence and the val_bpb the candidate is ranked by. Every
extra run is a row of the store's extra_runs table. (The held-out test split needs no run of
its own: every run scores it, and only `status --test`, the report and the export show it.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from evolve.config.schema import ConfirmConfig, NoiseConfig
from population.candidate import Candidate, Status
from population.extra_runs import job_id
from population.noise import (
    credit,
    decide,
    missing_seeds,
    needs_confirmation,
    noise_floor,
    paired_seeds,
)
from population.outcomes import Outcome, Purpose
from population.result import Result
from population.store import Store
from population.survival import is_ranked

NOISE_META = "noise_floor"  # JSON: {"sigma", "mean", "seeds", "runs"}
WAITING_FOR_NOISE = "waiting for the noise floor"
WAITING_FOR_ROOT = "waiting for the baseline"  # a child of the root finished before the root
RESUME_LOST = "the controller stopped before this extra run finished; its decision is redone"


@dataclass
class Held:
    """A first run kept back until its extra runs are in."""

    candidate_id: str
    status: Status
    metrics: dict[str, Any]
    reason: str
    log_tail: str
    trigger: str                  # noise | new best | narrow margin | waiting for the noise floor
    incumbent_id: str | None = None
    jobs: set[int] = field(default_factory=set)


# What the shell records for a held candidate once its evidence is complete.
Record = Result


class Evidence:
    """Holds results, plans extra runs and decides, over one writable store."""

    def __init__(self, store: Store, *, seed: int, noise: NoiseConfig, confirm: ConfirmConfig,
                 size: int, root_id: str = "root",
                 peers: Callable[[int], list[int] | None] | None = None) -> None:
        self.store = store
        # island -> the islands scored on its device type (workers.device_groups), or None
        # for all: a "new best" is judged, and its incumbent re-run, within that group only
        self.peers = peers
        self.root_id = root_id
        self.size = size
        self.run_seed = int(seed)
        self.noise_seeds = int(noise.seeds)
        self.confirm_seeds = int(confirm.seeds)
        # the seeds of the first runs, then the fresh seeds confirmations are decided on
        self.first_seed = self.run_seed
        self.fresh_seeds = paired_seeds(self.run_seed, self.confirm_seeds + 1)[1:]
        self.margin_sigma = float(confirm.margin_sigma)
        self.z = float(confirm.z)
        self.held: dict[str, Held] = {}
        self._sigma: float | None = None
        self._root_final = False
        self._by_job: dict[int, set[str]] = {}   # extra run id -> held candidates it feeds
        if not store.readonly:
            # a controller that stopped left these; the held results they fed run again
            for run in store.extra_runs():
                if run.outcome in (Outcome.QUEUED, Outcome.RUNNING):
                    store.finish_extra_run(run.id, outcome=Outcome.LOST, reason=RESUME_LOST)

    # ------------------------------------------------------------------ reads

    def sigma(self) -> float | None:
        """σ of val_bpb under seeds, once the root's noise runs are in (None before)."""
        if self._sigma is None:
            raw = self.store.get_meta(NOISE_META)
            self._sigma = None if raw is None else float(json.loads(raw)["sigma"])
        return self._sigma

    def pending(self) -> int:
        return len(self.held)

    def root_recorded(self) -> bool:
        """Whether the baseline's result stands: survival and confirmation compare with it."""
        if not self._root_final:
            try:
                self._root_final = self.store.get(self.root_id).status.is_final
            except KeyError:
                return False
        return self._root_final

    def runs_by_seed(self, candidate: Candidate) -> dict[int, float]:
        """Full-budget val_bpb of a candidate per seed: its first run and its extra runs. An
        untrusted candidate's own runs prove nothing: it stands at its credited score."""
        if candidate.metrics.get("untrusted") and candidate.val_bpb is not None:
            return {s: candidate.val_bpb for s in (self.first_seed, *self.fresh_seeds)}
        runs: dict[int, float] = {}
        first = candidate.metrics.get("val_bpb_first", candidate.metrics.get("val_bpb"))
        if first is not None and candidate.status is Status.DONE:
            runs[int(candidate.seed)] = float(first)
        for run in self.store.extra_runs(candidate.id):
            if run.outcome == Outcome.DONE and run.val_bpb is not None and run.budget_fraction == 1.0 \
                    and run.purpose in (Purpose.NOISE, Purpose.CONFIRM):
                runs.setdefault(run.seed, run.val_bpb)
        return runs

    # ---------------------------------------------------------------- hold

    def hold(self, result: Result, now: float) -> list[str] | None:
        """None: record this result now. Otherwise it is held; run these extra jobs first."""
        if result.status is not Status.DONE:
            return None
        candidate_id = result.candidate_id
        held = Held(candidate_id, result.status, dict(result.metrics), result.reason,
                    result.log_tail, "")
        if candidate_id == self.root_id:
            if self.noise_seeds <= 1:
                return None
            held.trigger = "noise"
            seeds = paired_seeds(self.run_seed, self.noise_seeds)[1:]
            return self._plan(held, [(candidate_id, s, "noise") for s in seeds], now)
        if not self.root_recorded():  # children run beside the root; their verdicts wait
            held.trigger = WAITING_FOR_ROOT
            self.held[candidate_id] = held
            return []
        if self.confirm_seeds <= 0:
            return None
        if self.noise_seeds > 1 and self.sigma() is None:
            held.trigger = WAITING_FOR_NOISE  # decided when the root's re-runs are in
            self.held[candidate_id] = held
            return []
        return self._screen(held, now)

    def _screen(self, held: Held, now: float) -> list[str] | None:
        candidate = self.store.get(held.candidate_id)
        bpb = float(held.metrics["val_bpb"])
        best = self._best_comparable(candidate.island)
        survivors = [s for s in self.store.survivors(candidate.island, self.size) if is_ranked(s)]
        displaced = survivors[-1] if len(survivors) >= self.size else None
        trigger = needs_confirmation(
            bpb, best_bpb=best.val_bpb if best else None,
            displaced_bpb=displaced.val_bpb if displaced else None,
            sigma=self.sigma() or 0.0, margin_sigma=self.margin_sigma)
        if trigger is None:
            return None
        incumbent = best if trigger == "new best" else displaced
        assert incumbent is not None
        held.trigger, held.incumbent_id = trigger, incumbent.id
        seeds = self.fresh_seeds
        wanted = [(candidate.id, s, "confirm") for s in seeds]
        wanted += [(incumbent.id, s, "confirm")
                   for s in missing_seeds(seeds, self.runs_by_seed(incumbent))]
        return self._plan(held, wanted, now)

    def _best_comparable(self, island: int) -> Candidate | None:
        """The best scored on the island's device type (every island without groups): an
        incumbent from other hardware would compare unlike scores."""
        group = self.peers(island) if self.peers is not None else None
        if group is None:
            return self.store.best()
        bests = [b for i in group if (b := self.store.best(i)) is not None and b.val_bpb is not None]
        return min(bests, key=lambda b: (b.val_bpb, b.finished_at or 0.0)) if bests else None

    def early_noise(self, now: float) -> list[str]:
        """The root's noise seeds, queued with the root itself so they run beside it."""
        if self.noise_seeds <= 1 or self.root_recorded():
            return []
        jobs = []
        for seed in paired_seeds(self.run_seed, self.noise_seeds)[1:]:
            if not any(r.seed == seed and r.outcome in (Outcome.QUEUED, Outcome.RUNNING)
                       for r in self.store.extra_runs(self.root_id, purpose=Purpose.NOISE)):
                jobs.append(self.store.add_extra_run(self.root_id, purpose=Purpose.NOISE,
                                                     seed=seed, now=now).job_id)
        return jobs

    def _plan(self, held: Held, wanted: list[tuple[str, int, str]], now: float) -> list[str]:
        """Queue the wanted runs, reusing any already queued or running for another decision
        (and the root's noise runs that ran beside it and are already in)."""
        self.held[held.candidate_id] = held
        jobs: list[str] = []
        for cid, seed, purpose in wanted:
            runs = [r for r in self.store.extra_runs(cid)
                    if r.seed == seed and r.purpose in (Purpose.NOISE, Purpose.CONFIRM)]
            if purpose == Purpose.NOISE and any(
                    r.outcome not in (Outcome.QUEUED, Outcome.RUNNING, Outcome.LOST) for r in runs):
                continue  # the root's noise run that ran beside it is already in
            open_runs = [r for r in runs if r.outcome in (Outcome.QUEUED, Outcome.RUNNING)]
            if open_runs:
                run = open_runs[0]
            else:
                run = self.store.add_extra_run(cid, purpose=purpose, seed=seed, now=now)
                jobs.append(run.job_id)
            held.jobs.add(run.id)
            self._by_job.setdefault(run.id, set()).add(held.candidate_id)
        return jobs

    # ------------------------------------------------------------- decide

    def on_extra_done(self, run_id: int, now: float) -> tuple[list[Record], list[str]]:
        """The extra run first queued as `run_id` ended (done, or failed for good): the
        records now complete, and new extra jobs (confirmations waiting for the noise floor)."""
        records: list[Record] = []
        jobs: list[str] = []
        for cid in sorted(self._by_job.pop(run_id, set())):
            held = self.held.get(cid)
            if held is None:
                continue
            held.jobs.discard(run_id)
            if held.jobs:
                continue
            if held.trigger == "noise":
                records.append(self._noise_done(held))
            else:
                records.append(self._confirmed(held))
        return records, jobs

    def complete(self) -> list[Record]:
        """Held results whose extra runs were all in before they were held (the root's noise
        runs ran beside it): their records, now."""
        done = [h for h in self.held.values() if h.trigger == "noise" and not h.jobs]
        return [self._noise_done(h) for h in done]

    def after_recorded(self, now: float) -> tuple[list[Record], list[str]]:
        """Once the root is recorded (with its noise floor, if measured): decide the results
        that waited for it, against the population as it now stands."""
        records: list[Record] = []
        jobs: list[str] = []
        if not self.root_recorded():
            return records, jobs
        waiting_triggers = (WAITING_FOR_NOISE, WAITING_FOR_ROOT)
        for waiting in [h for h in self.held.values() if h.trigger in waiting_triggers]:
            if self.confirm_seeds <= 0 or (self.noise_seeds > 1 and self.sigma() is None):
                records.append(self._release(waiting))
                continue
            more = self._screen(waiting, now)
            if more is None:
                records.append(self._release(waiting))
            else:
                jobs += more
                if not waiting.jobs:
                    records.append(self._confirmed(waiting))
        return records, jobs

    def _release(self, held: Held) -> Record:
        self.held.pop(held.candidate_id, None)
        return Result(held.candidate_id, held.status, held.metrics, held.reason, held.log_tail)

    def _noise_done(self, held: Held) -> Record:
        root = self.store.get(self.root_id)
        runs = {int(root.seed): float(held.metrics["val_bpb"])}
        for run in self.store.extra_runs(self.root_id, purpose=Purpose.NOISE):
            if run.outcome == Outcome.DONE and run.val_bpb is not None:
                runs.setdefault(run.seed, run.val_bpb)
        floor = noise_floor(runs.values())
        self.store.set_meta(NOISE_META, json.dumps(
            {"sigma": floor.sigma, "mean": floor.mean, "seeds": list(runs), "runs": list(runs.values())}))
        metrics = dict(held.metrics)
        metrics["val_bpb_first"] = metrics["val_bpb"]
        metrics["noise"] = {"sigma": floor.sigma, "seeds": list(runs), "runs": list(runs.values())}
        if self.confirm_seeds > 0:  # ranked like a confirmed candidate: mean of its paired runs
            paired = [runs[s] for s in (self.first_seed, *self.fresh_seeds) if s in runs]
            metrics["val_bpb"] = sum(paired) / len(paired)
        held.metrics = metrics
        return self._release(held)

    def _confirmed(self, held: Held) -> Record:
        candidate = self.store.get(held.candidate_id)
        assert held.incumbent_id is not None
        incumbent = self.store.get(held.incumbent_id)
        first = float(held.metrics["val_bpb"])
        mine: dict[int, float] = {}
        for run in self.store.extra_runs(candidate.id, purpose=Purpose.CONFIRM):
            if run.outcome == Outcome.DONE and run.val_bpb is not None and run.seed in self.fresh_seeds:
                mine.setdefault(run.seed, run.val_bpb)
        everything = self.runs_by_seed(incumbent)
        theirs = {s: v for s, v in everything.items() if s in self.fresh_seeds}
        metrics = dict(held.metrics)
        metrics["val_bpb_first"] = first
        if not mine or not set(mine) & set(theirs):  # re-runs crashed: nothing to credit
            metrics["val_bpb"] = max(first, incumbent.val_bpb or first)
            metrics["confirm"] = {"incumbent": incumbent.id, "trigger": held.trigger,
                                  "accepted": False, "untrusted": False,
                                  "reason": "not confirmed: its re-runs did not finish"}
            held.metrics = metrics
            return self._release(held)
        decision = decide(candidate.id, incumbent.id, held.trigger, mine, theirs,
                          sigma=self.sigma() or 0.0, z=self.z)
        all_mine = [first, *mine.values()]
        all_theirs = [v for s, v in everything.items() if s in (self.first_seed, *self.fresh_seeds)]
        incumbent_scores = [sum(all_theirs) / len(all_theirs)]
        if incumbent.val_bpb is not None:
            incumbent_scores.append(incumbent.val_bpb)
        metrics["val_bpb"] = credit(decision.accepted, sum(all_mine) / len(all_mine),
                                    incumbent_scores)
        metrics["confirm"] = decision.to_metrics()
        if decision.untrusted:
            metrics["untrusted"] = True
        held.metrics = metrics
        return self._release(held)


__all__ = ["Evidence", "Held", "Record", "job_id"]
