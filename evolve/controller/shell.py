"""The asyncio shell for real runs: carries out the core's decisions and feeds it events.

It is the store's one writer. Mutators run as concurrent tasks (a slow or broken one never
stalls a worker), children pass pre-flight before a worker is booked, runs go to an
`Executor`, and every step is reported to a `RunRecorder` (the run directory, the display).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from evolve.controller.carry import CarryTrigger
from evolve.controller.core import (
    Cancel,
    Event,
    ExtraRunsQueued,
    GiveUp,
    Migrate,
    ProposalFailed,
    ProposalReady,
    ProposalsTriggered,
    Propose,
    RefuseWorker,
    Requeue,
    ResultArrived,
    Run,
    Scheduler,
    Stop,
    StopRequested,
    Tick,
    WorkerJoined,
    WorkerLost,
    WorkerRefused,
)
from evolve.controller.devices import device_type, island_groups
from evolve.controller.executor import Executor, Finished, Joined, Left, Refused
from evolve.controller.extra import ExtraRuns
from evolve.controller.proposals import ProposalDone, Proposals
from evolve.controller.recovery import judge, recover
from evolve.controller.repairs import repair_requests
from evolve.controller.store_index import StoreIndex
from evolve.controller.triggers import TriggeredProposal, TriggerRule
from evolve.controller.wiring import RunPlan, store_population
from evolve.mutate.base import Mutator
from evolve.workers.runner import RunRequest, RunResult
from population.candidate import Candidate, Status
from population.extra_runs import job_candidate
from population.outcomes import Outcome
from population.result import Result
from population.store import Store
from population.survival import is_score

ROOT_ID = "root"
EARLY_FAILURE_S = 30.0  # a failure this soon after start is waste pre-flight should catch
TOKENS_BUDGET_TIMEOUT_S = 900.0  # wall-clock allowance for token-budgeted (CPU) profiles
TIME_BUDGET_S = {"gpu-5min": 300.0}  # training seconds of the time-budgeted profiles
ABANDONED_STOP = "abandoned"  # the stop reason's first word after a second stop signal
ABANDONED = "abandoned by the controller (second stop signal); resume runs it again"
STOPPED_BEFORE_RUN = "the run stopped before this ran again; resume runs it"
OUTCOME_STATUS = {Outcome.DONE: Status.DONE, Outcome.CRASHED: Status.CRASHED,
                  Outcome.TIMED_OUT: Status.TIMED_OUT, Outcome.INVALID: Status.CRASHED}


class Signal(Enum):
    """The shell's own queue messages (the rest are executor and proposal events)."""

    TICK = "tick"        # time passed
    STOP = "stop"        # first stop signal: no new work, running experiments finish
    ABANDON = "abandon"  # second one: stop now, leave running experiments for resume


Message = (Signal | Joined | Left | Refused | Finished | ProposalDone | StopRequested
           | ExtraRunsQueued | ProposalsTriggered)


@dataclass(frozen=True)
class Progress:
    """What the live display shows, after every event."""

    finished: int
    budget: int | None
    running: int
    ready: int
    proposing: int
    workers: int
    best_id: str | None
    best_val_bpb: float | None
    best_description: str
    crashes: int
    rejected: int
    elapsed_s: float
    llm_usd: float
    stopping: str | None
    noise_sigma: float | None = None  # σ of val_bpb under seeds (the root's re-runs)
    held: int = 0                     # results waiting for their confirmation runs
    notices: tuple[str, ...] = ()     # so far: refused workers, nodes without network isolation


class RunRecorder(Protocol):
    """Told about every change, after the store has it (the lead's run directory + display)."""

    def on_candidate(self, c: Candidate) -> None: ...
    def on_result(self, c: Candidate, kept: bool) -> None: ...
    def on_progress(self, snapshot: Progress) -> None: ...


def _settle_heap() -> None:
    """Collect the start-up's garbage now and move everything alive (the libraries, the
    resumed state) out of the cyclic collector's way for the run: otherwise what resuming a
    large store left behind is collected in the middle of the run, and every full
    collection walks every object the imports made (~170,000, tens of ms each). Only the
    cyclic collector is affected: reference counting frees as before; `run` unfreezes."""
    gc.collect()
    gc.freeze()


@dataclass
class _Running:
    candidate_id: str
    attempt_id: int
    started: float


def experiment_timeout_s(profile: str, grace_s: float) -> float:
    """Hard wall clock of one run: the training budget (time profiles; a fixed allowance for
    token-budgeted CPU profiles) + the grace period for start-up, compilation and scoring."""
    return TIME_BUDGET_S.get(profile, TOKENS_BUDGET_TIMEOUT_S) + grace_s


class Controller:
    """One run: `await Controller(plan_run(config), ...).run(stop, abandon)` returns why it
    stopped. It takes the plan (`wiring.RunPlan`: run-wide facts, the core's settings and the
    sections its parts take), never the whole config."""

    def __init__(self, plan: RunPlan, store: Store, executor: Executor,
                 mutators: Mapping[str, Mutator], recorder: RunRecorder, *, work_root: str | Path,
                 cache_dir: str | None = None, tick_s: float = 1.0,
                 clock: Callable[[], float] = time.time,
                 triggers: Sequence[TriggerRule] = ()) -> None:
        self.triggers = tuple(triggers)  # rules for triggered proposals (controller/triggers.py)
        self.plan = plan
        self.store = store
        self.executor = executor
        self.mutators = dict(mutators)
        self.recorder = recorder
        self.work_root = str(work_root)
        self.cache_dir = cache_dir
        self.data_hash = ""      # the controller's data fingerprint (evolve/guard/datahash.py)
        self.template_hash = ""  # and its harness's; workers refuse to score with others
        self.tick_s = tick_s
        self.clock = clock
        self.facts = plan.facts  # run-wide facts, built once
        self.population = store_population(store, plan.selection, plan.population,
                                           plan.facts.root_id)
        self.carry = CarryTrigger(store, plan.merge_operator)  # the asynchronous-greedy trigger
        self.size = self.facts.size
        self.timeout_s = experiment_timeout_s(plan.facts.profile, plan.workers.timeout_grace_s)
        self.extra = ExtraRuns(store, self.facts, noise=plan.noise, confirm=plan.confirm,
                               fidelity=plan.fidelity, record=self._record,
                               peers=self._peers)
        self.template = plan.facts.template
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._workers: dict[str, Joined] = {}
        self._running: dict[str, _Running] = {}      # worker -> run in flight
        self._released: list[str] = []                # extra runs released, for the core next
        self._core: Scheduler | None = None
        self._best: Candidate | None = None
        self.memory = StoreIndex(store)
        self.proposals = Proposals(store, self.facts, mutators, self.memory,
                                   timeout_s=plan.proposal_timeout_s,
                                   post=self._queue.put_nowait, clock=clock)
        self._crashes = 0
        self._rejected = 0
        self._cancelled = False                # runs were cancelled: the executor must kill them
        self._notices: list[str] = []          # what the operator must hear about, once each
        self._unisolated: set[str] = set()     # nodes already warned about
        self._unsandboxed: set[str] = set()    # nodes already warned about (workers.sandbox)

    # ------------------------------------------------------------------- run

    def idle(self) -> bool:
        """Nothing left to react to: no proposal in flight, no event waiting. A deterministic
        executor (benchmarks/virtual_executor.py) hands over its next result only then."""
        return not self.proposals.tasks and self._queue.empty()

    async def run(self, stop: asyncio.Event | None = None,
                  abandon: asyncio.Event | None = None) -> str:
        """Run until a budget is spent or `stop` is set (then running experiments finish;
        setting `abandon` too stops them, their attempts `abandoned`, for resume to re-run)."""
        self._ensure_root()
        history = recover(self.store, ROOT_ID, now=self.clock(),
                          max_lost_attempts=self.plan.workers.max_lost_attempts)
        settings = dataclasses.replace(self.plan.settings,
                                       device_type=self.store.get_meta("device_type"))
        self._best = self.store.best()
        self._crashes = self.store.count(Status.CRASHED, Status.TIMED_OUT)
        self._rejected = self.store.count(Status.REJECTED)
        self._core = Scheduler(settings, self.population, ROOT_ID,
                               root_island=0, history=history, triggers=self.triggers)
        self.store.set_meta("status", "running")
        watchers = [asyncio.create_task(self._ticker())]
        if stop is not None:
            watchers.append(asyncio.create_task(self._on_set(stop, Signal.STOP)))
        if abandon is not None:
            watchers.append(asyncio.create_task(self._on_set(abandon, Signal.ABANDON)))
        reason, stopped = "stopped", False
        early = self.extra.early_jobs(self.clock())  # the root's noise seeds run beside it
        if early:
            self._queue.put_nowait(ExtraRunsQueued(job_ids=tuple(early),
                                                   islands=self._islands_of(early),
                                                   now=self.clock()))
        _settle_heap()
        try:
            await self.executor.start(self._queue.put_nowait)
            reason = await self._loop()
            stopped = True
        finally:
            gc.unfreeze()
            for task in watchers + list(self.proposals.tasks):
                task.cancel()
            for task in watchers + list(self.proposals.tasks):
                with contextlib.suppress(BaseException):
                    await task
            in_flight = bool(self._running) or self._cancelled
            if stopped:  # not after an error: that stays as it was for resume to sort out
                self._leave_for_resume(reason.startswith(ABANDONED_STOP), self.clock())
            await self.executor.close(abandon=in_flight)
            self._save_clock()
            self.store.set_meta("status", "stopped")
            self.store.set_meta("stop_reason", reason)
            self._progress()
        return reason

    async def _loop(self) -> str:
        core = self._core
        assert core is not None
        while True:
            item = await self._queue.get()
            if item is Signal.ABANDON:
                return f"{ABANDONED_STOP}: experiments still running were left for resume"
            for event in self._released_first(self._translate(item)):
                for decision in core.handle(event):
                    if isinstance(decision, Stop):
                        return decision.reason
                    self._carry_out(decision)
            self._progress()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self._queue.put_nowait(Signal.TICK)

    def trigger(self, *requests: TriggeredProposal) -> None:
        """Ask for proposals an event caused (`evolve.controller.triggers`); the core makes
        them ahead of drawn ones and keeps them out of the operator statistics."""
        self._queue.put_nowait(ProposalsTriggered(requests=requests, now=self.clock()))

    async def _on_set(self, flag: asyncio.Event, what: Signal) -> None:
        await flag.wait()
        self._queue.put_nowait(what)

    # ---------------------------------------------------------------- events

    def _translate(self, item: Message) -> list[Event]:
        """One queue message as the core events it stands for (none, one, or two)."""
        now = self.clock()
        if item is Signal.TICK:
            self._save_clock()
            return [Tick(now=now)]
        if item is Signal.STOP:
            return [StopRequested(now=now)]
        if isinstance(item, Joined):
            self._workers[item.worker_id] = item
            self._warn_isolation(item)
            return [WorkerJoined(worker_id=item.worker_id, device=item.device, now=now)]
        if isinstance(item, Left):
            self._close_run(item.worker_id, item.reason, now)
            return [WorkerLost(worker_id=item.worker_id, reason=item.reason, now=now)]
        if isinstance(item, Refused):
            self._close_run(item.worker_id, f"refused: {item.reason}", now, outcome=Outcome.REFUSED)
            self._notice("refused_workers", item.reason)
            refused = WorkerRefused(worker_id=item.worker_id, reason=item.reason, now=now)
            if item.fatal:  # close first: the requeued run must not start on the next worker
                return [StopRequested(reason=item.reason, now=now), refused]
            return [refused]
        if isinstance(item, StopRequested | ExtraRunsQueued | ProposalsTriggered):
            return [item]
        if isinstance(item, Finished):
            event = self._finished(item.worker_id, item.result, now)
        elif isinstance(item, ProposalDone):
            event = self._proposal_done(item, now)
        else:
            raise TypeError(f"unexpected message {item!r}")
        return [] if event is None else [event]

    def _released_first(self, events: list[Event]) -> list[Event]:
        """Confirmation runs that recording the root released go to the core ahead of the
        event that released them (`_record`)."""
        if not self._released:
            return events
        jobs, self._released = self._released, []
        now = self.clock()
        return [ExtraRunsQueued(job_ids=tuple(jobs), islands=self._islands_of(jobs), now=now),
                *events]

    def _close_run(self, worker_id: str, reason: str, now: float, *,
                   outcome: Outcome = Outcome.LOST) -> None:
        """The worker is gone (`lost`) or refused to score (`refused`, not charged to the
        candidate on resume either): its attempt in flight, if any, ends so. An extra run's
        row has no refused outcome; the core does not charge it either way."""
        self._workers.pop(worker_id, None)
        run = self._running.pop(worker_id, None)
        if run is not None and self.extra.owns(run.candidate_id):
            self.extra.lost(run.attempt_id, reason, now)
        elif run is not None:
            self.store.finish_attempt(run.attempt_id, outcome=outcome, reason=reason, now=now)
            self._add_worker_seconds(now - run.started, wasted=False)

    def _leave_for_resume(self, abandoned: bool, now: float) -> None:
        """The run stopped on purpose: nothing of it runs any more, and the store says so.

        Experiments still in flight (a second stop signal) end `abandoned` — not lost, so
        resume does not charge them against max_lost_attempts. Every candidate still
        `running` (those, results held for extra runs, runs requeued after a refusal) goes
        back to proposed for resume to run once more. A controller killed without this step
        leaves them for `recover` as before."""
        why = ABANDONED if abandoned else STOPPED_BEFORE_RUN
        for worker_id in list(self._running):
            run = self._running.pop(worker_id)
            if self.extra.owns(run.candidate_id):
                self.extra.lost(run.attempt_id, ABANDONED, now)
            else:
                self.store.finish_attempt(run.attempt_id, outcome=Outcome.ABANDONED, reason=ABANDONED,
                                          now=now)
                self._add_worker_seconds(now - run.started, wasted=False)
        for candidate in self.store.unfinished():
            if candidate.status is Status.RUNNING:
                self.recorder.on_candidate(self.store.requeue(candidate.id, reason=why))

    def _warn_isolation(self, joined: Joined) -> None:
        """Once per node: experiments there run with the network although isolation was asked."""
        if (not joined.isolation_problem or self.plan.workers.network != "isolate"
                or joined.node in self._unisolated):
            return
        self._unisolated.add(joined.node)
        where = joined.node[:12] + (f" ({joined.ip})" if joined.ip else "")
        self._notice("network_warnings", f"network: NOT isolated on node {where} "
                                         f"({joined.isolation_problem}); its experiments can "
                                         "reach the network")

    def _warn_sandbox(self, worker_id: str, result: RunResult) -> None:
        """Once per node: its runs are not sandboxed, so their scores are marked so."""
        if result.metrics.get("sandboxed") is not False:
            return
        joined = self._workers.get(worker_id)
        node = joined.node if joined is not None else worker_id
        if node in self._unsandboxed:
            return
        self._unsandboxed.add(node)
        where = node[:12] + (f" ({joined.ip})" if joined is not None and joined.ip else "")
        problem = str(result.metrics.get("sandbox_problem", ""))
        self._notice("sandbox_warnings", f"sandbox: NOT working on node {where} ({problem}); "
                                         "its scores are marked unsandboxed")

    def _notice(self, meta_key: str, message: str) -> None:
        """Keep a message for the live output and for `evolve status` (store meta, one a line)."""
        if message in self._notices:
            return
        self._notices.append(message)
        kept = self.store.get_meta(meta_key, "") or ""
        if message not in kept.splitlines():
            self.store.set_meta(meta_key, (kept + message + "\n")[-20000:])

    def _finished(self, worker_id: str, result: RunResult, now: float) -> ResultArrived | None:
        run = self._running.get(worker_id)
        if run is None or run.candidate_id != result.candidate_id:
            return None  # a run already counted lost
        del self._running[worker_id]
        self._warn_sandbox(worker_id, result)
        if self.extra.owns(result.candidate_id):
            return self._extra_finished(worker_id, run, result, now)
        outcome = result.outcome
        status = OUTCOME_STATUS.get(outcome, Status.CRASHED)
        metrics = dict(result.metrics)
        bpb = metrics.get("val_bpb")
        reason = result.reason
        if status is Status.DONE and not is_score(bpb):
            status, outcome, reason = Status.CRASHED, Outcome.CRASHED, f"no finite val_bpb in the result ({bpb!r})"
        if outcome == Outcome.INVALID:
            reason = f"invalid: {reason}"
        self.store.finish_attempt(run.attempt_id, outcome=result.outcome, reason=reason, now=now)
        seconds = max(0.0, result.ended_at - result.started_at) or (now - run.started)
        self._add_worker_seconds(seconds, wasted=status is not Status.DONE and seconds < EARLY_FAILURE_S)
        if status is Status.DONE:
            metrics.setdefault("device", result.device)
        final = Result(result.candidate_id, status, metrics, reason, result.log_tail)
        held = self.extra.intercept(final, now)
        if held is not None:  # recorded once its extra runs (stages, noise, confirmation) are in
            return ResultArrived(candidate_id=result.candidate_id, worker_id=worker_id,
                                 outcome=outcome, val_bpb=None, then_run=tuple(held),
                                 islands=self._islands_of(held), now=now)
        self._record(final, now)
        return ResultArrived(candidate_id=result.candidate_id, worker_id=worker_id, outcome=outcome,
                             val_bpb=float(bpb) if status is Status.DONE else None, now=now)

    def _record(self, result: Result, now: float) -> None:
        """Record a final result (the held-out test score came with it: no run is queued)."""
        status = result.status
        # Judged against the survivors when the result arrives; stored with the metrics so
        # results.tsv can be rebuilt from the store after a kill.
        stale = self.carry.before(result.candidate_id)  # the island's best before this result
        candidate, said = self.population.record(result, now)
        kept = said == "keep"
        self._note(candidate)
        self.recorder.on_candidate(candidate)
        if status is not Status.REJECTED:  # stopped at a short stage: not a results.tsv row
            self.recorder.on_result(candidate, kept)
        if status is Status.CRASHED:  # a traceback gets one fix (evolve/mutate/repair.py)
            requests = repair_requests(candidate, self.plan.repair_operator)
            if requests:
                self.trigger(*requests)
        if candidate.id == ROOT_ID and status is Status.DONE \
                and not self.plan.workers.device_groups:
            # each island of a device group starts from its first child instead, scored on
            # its own device type
            self._copies(self.population.seed(candidate, now))
        if status is Status.DONE:
            self._copies(self.population.reseed(self._groups(), now))
            if (carry := self.carry.after(candidate, stale)) is not None:
                self.trigger(carry)  # a win on a stale line: merge it onto the best now
            if self._best is candidate:  # a new best: gossip sends it to every island
                self._copies(self.population.spread(candidate, self._groups(), now))
        if candidate.id == ROOT_ID and status is Status.DONE:
            # its children's results that waited for it are decided now; their
            # confirmation runs, if any, go to the queue like any extra runs
            # Handed to the core with the event that recorded the root, ahead of it: a
            # message behind it on the queue would come too late if that event ends the run.
            self._released.extend(self.extra.release(now))

    def _extra_finished(self, worker_id: str, run: _Running, result: RunResult,
                        now: float) -> ResultArrived:
        """A re-run ended: stored as its own row; a decision it completes is recorded now."""
        outcome = self.extra.close(run.attempt_id, result, now)
        seconds = max(0.0, result.ended_at - result.started_at) or (now - run.started)
        self._add_worker_seconds(seconds, wasted=False)
        jobs = self.extra.after(result.candidate_id, now) if outcome != Outcome.LOST else []
        best = self._best.val_bpb if self._best is not None else None  # for target_val_bpb
        return ResultArrived(candidate_id=result.candidate_id, worker_id=worker_id,
                             outcome=Outcome(result.outcome), val_bpb=best, then_run=tuple(jobs),
                             islands=self._islands_of(jobs), now=now)

    def _proposal_done(self, done: ProposalDone, now: float) -> ProposalReady | ProposalFailed:
        child = self.proposals.child(done, now)
        proposal, reason = done.proposal, child.reason
        tokens = sum(int(v) for v in proposal.usage.values())
        self.store.add(child)
        self._note(child)
        if proposal.cost_usd:
            spent = float(self.store.get_meta("llm_usd_total", "0") or 0) + proposal.cost_usd
            self.store.set_meta("llm_usd_total", repr(spent))
        self.recorder.on_candidate(child)
        if reason:
            return ProposalFailed(ticket=done.ticket, reason=reason, cost_usd=proposal.cost_usd,
                                  tokens=tokens, now=now)
        return ProposalReady(ticket=done.ticket, candidate_id=child.id, cost_usd=proposal.cost_usd,
                             tokens=tokens, now=now)

    # ------------------------------------------------------------- decisions

    def _carry_out(self, decision: Any) -> None:
        match decision:
            case Propose():
                self.proposals.start(decision)
            case Run():
                self._run(decision)
            case Requeue():
                pass  # the lost attempt is already closed in the store; the core re-runs it
            case Cancel():
                self._cancel(decision)
            case RefuseWorker():  # another device type: kept for `evolve status` and the log
                self._notice("refused_workers", decision.message)
            case GiveUp() if self.extra.owns(decision.candidate_id):
                now = self.clock()  # an extra run lost too often: decide without it
                jobs = self.extra.after(decision.candidate_id, now)
                self._queue.put_nowait(ExtraRunsQueued(job_ids=tuple(jobs),
                                                       islands=self._islands_of(jobs), now=now))
            case GiveUp():
                now = self.clock()
                candidate = self.store.record_result(decision.candidate_id, status=Status.CRASHED,
                                                     metrics={"kept": False}, reason=decision.reason,
                                                     now=now)
                self._note(candidate)
                self.recorder.on_candidate(candidate)
                self.recorder.on_result(candidate, False)
            case Migrate():
                self._copies(self.population.migrate(self._groups(), self.clock()))

    def _run(self, decision: Run) -> None:
        now = self.clock()
        slot = self._workers[decision.worker_id]
        if not self.plan.workers.device_groups and self.store.get_meta("device_type") is None:
            self.store.set_meta("device_type", device_type(slot.device))  # resume keeps to it
        extra = self.extra.start(decision.candidate_id, slot.worker_id, now)
        if extra is not None:
            candidate = self.store.get(extra.candidate_id)
            self._running[decision.worker_id] = _Running(decision.candidate_id, extra.id, now)
        else:
            candidate = self.store.get(decision.candidate_id)
            if candidate.status is Status.PROPOSED:
                candidate = self.store.set_status(candidate.id, Status.RUNNING)
                self.recorder.on_candidate(candidate)
            attempt_id = self.store.start_attempt(candidate.id, worker=slot.worker_id,
                                                  node=slot.node, device=slot.device, now=now)
            self._running[decision.worker_id] = _Running(candidate.id, attempt_id, now)
        workers = self.plan.workers
        request = RunRequest(
            candidate_id=candidate.id, files=dict(candidate.files), template_dir=str(self.template),
            profile=self.facts.profile, data=self.plan.data, seed=candidate.seed,
            timeout_s=self.timeout_s, work_root=self.work_root, cache_dir=self.cache_dir,
            torch_threads=workers.torch_threads, attempt=decision.attempt,
            network=workers.network, sandbox=workers.sandbox, data_hash=self.data_hash,
            template_hash=self.template_hash,
        )
        if extra is not None:  # a re-run or test run: its own job name, seed and splits
            request = dataclasses.replace(
                request, candidate_id=decision.candidate_id, seed=extra.seed,
                splits=extra.splits, budget_fraction=extra.budget_fraction)
        elif self.extra.first_fraction(candidate.id) < 1.0:  # multi-fidelity: stage 1 first
            request = dataclasses.replace(
                request, budget_fraction=self.extra.first_fraction(candidate.id))
        self.executor.submit(decision.worker_id, request)

    def _cancel(self, decision: Cancel) -> None:
        """The baseline failed: a run beside it ends `abandoned` (not the candidate's fault, and
        resume would run it again); the executor kills it when the run closes, right after."""
        run = self._running.pop(decision.worker_id, None)
        if run is None:
            return
        self._cancelled = True
        now = self.clock()
        if self.extra.owns(run.candidate_id):
            self.extra.lost(run.attempt_id, decision.reason, now)
        else:
            self.store.finish_attempt(run.attempt_id, outcome=Outcome.ABANDONED,
                                      reason=decision.reason, now=now)
            self._add_worker_seconds(now - run.started, wasted=False)

    def _islands_of(self, jobs: list[str] | tuple[str, ...]) -> dict[str, int]:
        """Extra job -> the island of the candidate it re-scores: it runs on that island's
        device type (device groups), so its score compares with the candidate's own."""
        return {job: self.store.get(job_candidate(job)).island for job in jobs}

    def _peers(self, island: int) -> list[int] | None:
        """The islands scored on `island`'s device type (device groups), else None (all)."""
        if not self.plan.workers.device_groups:
            return None
        groups = island_groups(self.facts.islands, self._island_devices(), True)
        return next((group for group in groups if island in group), [island])

    def _groups(self) -> list[list[int]]:
        """The islands whose scores compare (one device type each with device groups): copies
        move only inside a group."""
        return island_groups(self.facts.islands, self._island_devices(),
                             self.plan.workers.device_groups)

    def _copies(self, made: list[Candidate]) -> None:
        for copy in made:
            self.recorder.on_candidate(copy)

    def _island_devices(self) -> dict[int, str]:
        return self._core.island_devices() if self._core is not None else {}

    # ------------------------------------------------------------ bookkeeping

    def _ensure_root(self) -> None:
        try:
            self.store.get(ROOT_ID)
            return
        except KeyError:
            pass
        files = {}
        for name in self.facts.mutable_files:
            source = self.template / (self.plan.seed_script if name == "train.py" else name)
            files[name] = source.read_text()
        root = Candidate(id=ROOT_ID, parent_id=None, island=0, generation=0, files=files,
                         description="baseline: the unmodified template", mutator="template",
                         seed=self.facts.seed, created_at=self.clock())
        self.store.add(root)
        self.store.set_meta("seed", str(self.facts.seed))
        self.recorder.on_candidate(self.store.get(ROOT_ID))

    def _add_worker_seconds(self, seconds: float, *, wasted: bool) -> None:
        total = float(self.store.get_meta("worker_seconds", "0") or 0) + seconds
        self.store.set_meta("worker_seconds", repr(total))
        if wasted:
            early = float(self.store.get_meta("early_failure_seconds", "0") or 0) + seconds
            self.store.set_meta("early_failure_seconds", repr(early))
        early = float(self.store.get_meta("early_failure_seconds", "0") or 0)
        self.store.set_meta("early_failure_share", repr(early / total if total else 0.0))

    def _note(self, c: Candidate) -> None:
        """Keep the display's counters, the best and the memory's indexes without querying
        the store per event; a finished child (one read: its parent) teaches the core's
        operator statistics before the event that frees its worker is handled."""
        self.memory.note(c)
        self.proposals.notebook.note(c)  # its lineage steps, kept as they finish
        if self._core is not None and (verdict := judge(self.store, c)) is not None:
            self._core.learn(*verdict, candidate_id=c.id)
        if c.status in (Status.CRASHED, Status.TIMED_OUT):
            self._crashes += 1
        elif c.status is Status.REJECTED:
            self._rejected += 1
        elif c.status is Status.DONE and c.val_bpb is not None and (
                self._best is None or c.val_bpb < (self._best.val_bpb or math.inf)):
            self._best = c

    def _save_clock(self) -> None:
        if self._core is not None:
            self.store.set_meta("elapsed_s", repr(self._core.elapsed()))

    def _progress(self) -> None:
        core = self._core
        if core is None:
            return
        status = core.status()
        best = self._best
        self.recorder.on_progress(Progress(
            finished=status.finished, budget=self.plan.settings.max_experiments,
            running=status.running, ready=status.ready, proposing=status.proposing,
            workers=status.workers, best_id=best.id if best else None,
            best_val_bpb=best.val_bpb if best else None,
            best_description=best.description if best else "",
            crashes=self._crashes, rejected=self._rejected, elapsed_s=status.elapsed_s,
            llm_usd=status.llm_usd, stopping=status.closing,
            noise_sigma=self.extra.sigma(), held=self.extra.pending(),
            notices=tuple(self._notices),
        ))

