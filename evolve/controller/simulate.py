"""A discrete-event shell: the real scheduler core driven in virtual time by simulated workers.

It measures the decision code itself (utilisation, controller CPU per experiment) at scales
no test machine has: 1,000 workers on 5-minute evaluations, an LLM that answers in 10-90 s,
crashes, lost workers, a tokens-per-minute budget. Run `python -m evolve.controller.simulate`.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from evolve.controller.core import (
    DONE,
    Event,
    GiveUp,
    Migrate,
    ProposalFailed,
    ProposalReady,
    Propose,
    ResultArrived,
    Run,
    Scheduler,
    Settings,
    Stop,
    Tick,
    WorkerJoined,
    WorkerLost,
)
from population.candidate import Candidate, Status
from population.outcomes import Outcome
from population.port import MemoryPopulation
from population.result import Result
from population.selection import make_selector


@dataclass(frozen=True)
class SimSpec:
    workers: int
    hours: float = 12.0                    # the run's max_hours budget (virtual)
    max_experiments: int | None = None
    eval_s: float = 300.0                  # mean evaluation time
    eval_jitter_s: float = 30.0            # standard deviation
    proposal_s: tuple[float, float] = (10.0, 90.0)
    crash_rate: float = 0.05               # children that fail in their first seconds
    crash_s: tuple[float, float] = (3.0, 30.0)
    reject_rate: float = 0.05              # proposals pre-flight rejects
    loss_rate: float = 0.002               # attempts whose worker dies mid-run
    rejoin_s: float = 120.0                # a replacement worker joins after this long
    tokens_per_proposal: int = 12_000
    tokens_per_minute: int | None = None
    usd_per_proposal: float = 0.05
    lookahead: int = 1
    max_concurrent_proposals: int | None = None  # None: enough for the LLM latency (see below)
    islands: int = 4
    population_size: int = 8
    strategy: str = "tournament"
    selection: Mapping[str, Any] = field(default_factory=dict)  # the strategy's parameters
    migration_interval: int = 50
    seed: int = 0

    def concurrent_proposals(self) -> int:
        """Enough proposals in flight to keep up: workers / eval time x the slowest answer."""
        if self.max_concurrent_proposals is not None:
            return self.max_concurrent_proposals
        return max(8, math.ceil(self.workers * self.proposal_s[1] / self.eval_s * 1.5))


@dataclass
class SimReport:
    workers: int
    experiments: int
    crashed: int
    lost_attempts: int
    rejected: int
    span_h: float
    utilisation: float              # sum of attempt seconds / (workers x first start..last end)
    utilisation_after_root: float   # the same, from the baseline's end (the root runs alone)
    core_ms_per_experiment: float   # CPU in Scheduler.handle (incl. parent selection)
    sim_ms_per_experiment: float    # CPU of the whole simulation, per experiment
    llm_tokens_per_minute: float
    max_concurrent_proposals: int
    best_val_bpb: float
    stop_reason: str
    wall_s: float


@dataclass(order=True)
class _Timed:
    at: float
    seq: int
    event: Event = field(compare=False)
    serial: int = field(compare=False, default=0)


class Simulation:
    """Virtual clock + simulated workers and mutators around one `Scheduler`."""

    def __init__(self, spec: SimSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        islands = spec.islands if spec.workers > 1 else 1
        self.population = MemoryPopulation(
            make_selector(spec.strategy, **dict(spec.selection)), size=spec.population_size,
            islands=islands)
        self.groups = [list(range(islands))]
        self.settings = Settings(
            lookahead=spec.lookahead, max_concurrent_proposals=spec.concurrent_proposals(),
            max_experiments=spec.max_experiments, max_hours=spec.hours,
            tokens_per_minute=spec.tokens_per_minute,
            tokens_per_proposal_guess=spec.tokens_per_proposal, islands=islands,
            migration_interval=spec.migration_interval, seed=spec.seed,
        )
        self.core = Scheduler(self.settings, self.population, "root")
        self.queue: list[_Timed] = []
        self.seq = 0
        self.now = 0.0
        self.info: dict[str, tuple[str, int, float]] = {"root": ("", 0, 1.0)}  # id -> parent, island, val
        self.started: dict[str, tuple[float, int]] = {}  # worker -> (start, serial)
        self.serial = 0
        self.busy_s = 0.0
        self.busy_after_root = 0.0
        self.root_end: float | None = None
        self.first_start: float | None = None
        self.last_end = 0.0
        self.counts = {"experiments": 0, "crashed": 0, "lost": 0, "rejected": 0}
        self.tokens = 0
        self.core_cpu = 0.0
        self.next_worker = 0
        self.stop_reason = ""
        self.tick_at: float | None = None

    def _at(self, at: float, event: Event, serial: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.queue, _Timed(at, self.seq, event, serial))

    def _join(self, at: float) -> None:
        self.next_worker += 1
        self._at(at, WorkerJoined(worker_id=f"w{self.next_worker}", now=at))

    def run(self) -> SimReport:
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(self.spec.workers):
            self._join(0.0)
        while self.queue and not self.core.stopped:
            timed = heapq.heappop(self.queue)
            self.now = timed.at
            event = timed.event
            if isinstance(event, ResultArrived | WorkerLost) and not self._current(event, timed.serial):
                continue
            self._account_end(event)
            started = time.process_time()
            decisions = self.core.handle(event)
            self.core_cpu += time.process_time() - started
            for decision in decisions:
                self._carry_out(decision)
            wake = self.core.next_wakeup()
            if wake is not None and wake > self.now and wake != self.tick_at:
                self.tick_at = wake
                self._at(wake + 1e-6, Tick(now=wake + 1e-6))
        return self._report(time.perf_counter() - wall, time.process_time() - cpu)

    def _current(self, event: ResultArrived | WorkerLost, serial: int) -> bool:
        started = self.started.get(event.worker_id)
        return started is not None and started[1] == serial

    def _account_end(self, event: Event) -> None:
        if not isinstance(event, ResultArrived | WorkerLost):
            return
        start, _ = self.started.pop(event.worker_id)
        self.busy_s += self.now - start
        if self.root_end is not None:
            self.busy_after_root += self.now - max(start, self.root_end)
        self.last_end = max(self.last_end, self.now)
        if isinstance(event, WorkerLost):
            self.counts["lost"] += 1
            self._join(self.now + self.spec.rejoin_s)
            return
        self.counts["experiments"] += 1
        parent, island, val = self.info[event.candidate_id]
        if event.candidate_id == "root":
            self.root_end = self.now
        if event.outcome == DONE:
            self.population.add(Candidate(id=event.candidate_id, parent_id=parent or None,
                                          island=island, generation=0, files={}))
            self.population.record(Result(event.candidate_id, Status.DONE, {"val_bpb": val}),
                                   self.now)
        else:
            self.counts["crashed"] += 1

    def _carry_out(self, decision: object) -> None:
        spec, rng, now = self.spec, self.rng, self.now
        match decision:
            case Propose():
                at = now + rng.uniform(*spec.proposal_s)
                self.tokens += spec.tokens_per_proposal
                if rng.random() < spec.reject_rate:
                    self.counts["rejected"] += 1
                    self._at(at, ProposalFailed(ticket=decision.ticket, reason="duplicate",
                                                tokens=spec.tokens_per_proposal,
                                                cost_usd=spec.usd_per_proposal, now=at))
                    return
                child = f"c{decision.ticket}"
                parent_val = self.info[decision.parent_id.split("@")[0]][2]
                self.info[child] = (decision.parent_id, decision.island,
                                    parent_val + rng.gauss(0.002, 0.01))
                self._at(at, ProposalReady(ticket=decision.ticket, candidate_id=child,
                                           tokens=spec.tokens_per_proposal,
                                           cost_usd=spec.usd_per_proposal, now=at))
            case Run():
                self.serial += 1
                self.started[decision.worker_id] = (now, self.serial)
                if self.first_start is None:
                    self.first_start = now
                eval_s = max(1.0, rng.gauss(spec.eval_s, spec.eval_jitter_s))
                if rng.random() < spec.loss_rate:
                    at = now + rng.uniform(0, eval_s)
                    self._at(at, WorkerLost(worker_id=decision.worker_id, now=at), self.serial)
                elif rng.random() < spec.crash_rate and decision.candidate_id != "root":
                    at = now + rng.uniform(*spec.crash_s)
                    self._at(at, ResultArrived(candidate_id=decision.candidate_id,
                                               worker_id=decision.worker_id, outcome=Outcome.CRASHED,
                                               now=at), self.serial)
                else:
                    at = now + eval_s
                    self._at(at, ResultArrived(candidate_id=decision.candidate_id,
                                               worker_id=decision.worker_id, outcome=Outcome.DONE,
                                               val_bpb=self.info[decision.candidate_id][2], now=at),
                             self.serial)
            case GiveUp():
                self.counts["crashed"] += 1
                self.counts["experiments"] += 1
            case Migrate():
                self.population.migrate(self.groups, self.now)
            case Stop():
                self.stop_reason = decision.reason

    def _report(self, wall: float, cpu: float) -> SimReport:
        spec = self.spec
        span = self.last_end - (self.first_start or 0.0)
        after = self.last_end - (self.root_end or 0.0)
        experiments = max(1, self.counts["experiments"])
        return SimReport(
            workers=spec.workers, experiments=self.counts["experiments"],
            crashed=self.counts["crashed"], lost_attempts=self.counts["lost"],
            rejected=self.counts["rejected"], span_h=span / 3600.0,
            utilisation=self.busy_s / (spec.workers * span) if span else 0.0,
            utilisation_after_root=self.busy_after_root / (spec.workers * after) if after else 0.0,
            core_ms_per_experiment=1000.0 * self.core_cpu / experiments,
            sim_ms_per_experiment=1000.0 * cpu / experiments,
            llm_tokens_per_minute=self.tokens / (span / 60.0) if span else 0.0,
            max_concurrent_proposals=self.settings.max_concurrent_proposals,
            best_val_bpb=self.core.status().best_val_bpb or math.nan,
            stop_reason=self.stop_reason, wall_s=wall,
        )


def simulate(spec: SimSpec) -> SimReport:
    return Simulation(spec).run()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8, 64, 1000])
    parser.add_argument("--hours", type=float, default=12.0)
    parser.add_argument("--lookahead", type=int, default=1)
    parser.add_argument("--tokens-per-minute", type=int, default=None)
    parser.add_argument("--max-concurrent-proposals", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    for workers in args.workers:
        report = simulate(SimSpec(workers=workers, hours=args.hours, lookahead=args.lookahead,
                                  tokens_per_minute=args.tokens_per_minute,
                                  max_concurrent_proposals=args.max_concurrent_proposals,
                                  seed=args.seed))
        if args.json:
            print(json.dumps(asdict(report)), flush=True)
        else:
            print(f"{workers:5d} workers: {report.experiments:7d} experiments in {report.span_h:.1f} h, "
                  f"utilisation {report.utilisation:.4f} (after root {report.utilisation_after_root:.4f}), "
                  f"core {report.core_ms_per_experiment:.3f} ms/exp, sim {report.sim_ms_per_experiment:.3f} "
                  f"ms/exp, {report.llm_tokens_per_minute:,.0f} LLM tok/min, lost {report.lost_attempts}, "
                  f"crashed {report.crashed}; stop: {report.stop_reason}", flush=True)


if __name__ == "__main__":
    main()
