"""The scheduler core: a pure, event-driven state machine that keeps every worker busy.

Events come in (a result arrived, a proposal is ready, a worker joined or was lost, time
passed), decisions come out (propose from a parent, run a candidate on a worker, stop).
No I/O, no clock, no asyncio: the same code runs under the asyncio shell for real runs and
under the discrete-event simulation at a thousand workers.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from evolve.controller.devices import DevicePolicy
from evolve.controller.triggers import Trigger, TriggeredProposal, TriggerRule
from evolve.mutate.operators import OperatorStats, mix_weights
from evolve.mutate.ratelimit import TokenWindow
from population import budget
from population.extra_runs import job_candidate
from population.islands import least_busy_island, migration_due
from population.outcomes import FINISHED, Outcome
from population.selection import proposal_rng
from population.survival import lost_reason, lost_too_often

# Outcomes of one attempt, as the workers report them (module constants: the hot path).
FINISHED_OUTCOMES = FINISHED
LOST = Outcome.LOST
DONE = Outcome.DONE


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True, kw_only=True)
class WorkerJoined:
    worker_id: str
    device: str = "cpu"
    now: float


@dataclass(frozen=True, kw_only=True)
class WorkerLost:
    """The worker is gone (actor or node died); whatever ran on it is a lost attempt."""

    worker_id: str
    reason: str = "worker lost"
    now: float


@dataclass(frozen=True, kw_only=True)
class WorkerRefused:
    """The worker cannot score runs (its node's harness or data differ from the controller's):
    it leaves, and a run it refused goes back to the queue without counting as lost."""

    worker_id: str
    reason: str
    now: float


@dataclass(frozen=True, kw_only=True)
class ResultArrived:
    """An attempt ended. `outcome` is done/crashed/timed_out/invalid, or lost (worker lives)."""

    candidate_id: str
    worker_id: str
    outcome: Outcome | str  # an Outcome; a plain string of one compares equal
    val_bpb: float | None = None
    then_run: tuple[str, ...] = ()  # extra runs (re-runs, stages) to run before children
    islands: Mapping[str, int] = field(default_factory=dict)  # extra job -> island (below)
    now: float


@dataclass(frozen=True, kw_only=True)
class ExtraRunsQueued:
    """Runs that are not experiments (seed re-runs, promotions to a longer stage): they run before any
    child, do not count against max_experiments, and still run while the run is closing.

    `islands` names the island of the candidate each job re-scores, so with device groups it
    runs on that island's device type; a job left out runs on the island its candidate last
    ran on here, else island 0 (the root's)."""

    job_ids: tuple[str, ...]
    islands: Mapping[str, int] = field(default_factory=dict)
    now: float


@dataclass(frozen=True, kw_only=True)
class ProposalReady:
    """A proposal became a child that passed pre-flight and waits for a worker."""

    ticket: int
    candidate_id: str
    cost_usd: float = 0.0
    tokens: int = 0
    now: float


@dataclass(frozen=True, kw_only=True)
class ProposalFailed:
    """A proposal made no runnable child (mutator error, timeout, pre-flight rejection)."""

    ticket: int
    reason: str
    cost_usd: float = 0.0
    tokens: int = 0
    now: float


@dataclass(frozen=True, kw_only=True)
class Tick:
    now: float


@dataclass(frozen=True, kw_only=True)
class StopRequested:
    """The user asked to stop (Ctrl-C, SIGTERM): no new work; running experiments finish."""

    reason: str = "stopped by user"
    now: float


@dataclass(frozen=True, kw_only=True)
class ProposalsTriggered:
    """Proposals an event caused (`evolve.controller.triggers`): made ahead of drawn ones."""

    requests: tuple[TriggeredProposal, ...]
    now: float


Event = (WorkerJoined | WorkerLost | WorkerRefused | ResultArrived | ProposalReady
         | ProposalFailed | Tick | StopRequested | ExtraRunsQueued | ProposalsTriggered)


# -------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Propose:
    """Make a child of `parent_id` with `operator`. `trigger` says why: drawn by weight, or
    caused by an event (`evolve.controller.triggers`); `note` is a triggered request's."""

    ticket: int
    parent_id: str
    island: int
    operator: str
    seed: int
    trigger: Trigger = Trigger.DRAWN
    note: str = ""


@dataclass(frozen=True)
class Run:
    candidate_id: str
    worker_id: str
    attempt: int


@dataclass(frozen=True)
class Requeue:
    """An attempt was lost (or refused by its worker); the candidate goes back to the front of
    the queue. `lost_count` counts lost attempts only."""

    candidate_id: str
    lost_count: int


@dataclass(frozen=True)
class GiveUp:
    """Lost more than `max_lost_attempts` times: record it as crashed with this reason."""

    candidate_id: str
    reason: str


@dataclass(frozen=True)
class Cancel:
    """Stop a run in flight (its worker is free again): the baseline failed, so nothing
    measured against it can count. Not the candidate's fault: no crash, no lost attempt."""

    candidate_id: str
    worker_id: str
    reason: str


@dataclass(frozen=True)
class Migrate:
    finished: int


@dataclass(frozen=True)
class Stop:
    reason: str


@dataclass(frozen=True)
class RefuseWorker:
    """A worker of another device type joined; it gets no work (evolve/controller/devices.py)."""

    worker_id: str
    message: str


Decision = Propose | Run | Requeue | GiveUp | Cancel | Migrate | Stop | RefuseWorker


# ---------------------------------------------------------------------------- inputs


class ParentSource(Protocol):
    """The narrow read side of the population the core needs: whom to mutate next."""

    def choose_parent(self, island: int, rng: random.Random) -> str: ...


@dataclass(frozen=True)
class Settings:
    lookahead: int = 1                      # proposals ready-or-in-flight per worker; 0 = sequential
    max_concurrent_proposals: int = 16
    max_experiments: int | None = None
    max_hours: float | None = None
    target_val_bpb: float | None = None
    max_llm_usd: float | None = None
    # operators that spend no LLM money: they go on once max_llm_usd is reached (if none has
    # a weight, proposals close there)
    offline_operators: frozenset[str] = frozenset()
    tokens_per_minute: int | None = None    # LLM rate budget; None = unlimited
    tokens_per_proposal_guess: int = 10_000  # until real usage has been seen
    max_lost_attempts: int = 2
    max_consecutive_failed_proposals: int = 100
    islands: int = 1
    migration_interval: int = 0             # finished experiments between migrations; 0 = never
    operators: Sequence[tuple[str, float]] = (("heuristic", 1.0),)
    operator_labels: Mapping[str, str] = field(default_factory=dict)  # name -> label; default name
    adaptive_operators: bool = False        # scale the weights by UCB1 on improving the parent
    exploration: float = 1.0                # UCB1's exploration constant (adaptive only)
    seed: int = 0
    device_groups: bool = False             # one island group per device type (else refuse mixing)
    device_type: str | None = None          # the type a resumed run was scored on


@dataclass(frozen=True)
class History:
    """What a resumed run already did, rebuilt from the store."""

    finished: int = 0
    proposals_made: int = 0
    llm_usd: float = 0.0
    best_val_bpb: float | None = None
    root_done: bool = False
    queued: Sequence[tuple[str, int]] = ()   # (candidate id, island), front first
    lost_counts: dict[str, int] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    operator_stats: Mapping[str, OperatorStats] = field(default_factory=dict)  # by label
    island_devices: Mapping[int, str] = field(default_factory=dict)  # island -> first attempt's type
    # children of triggered proposals still to finish: kept out of the operator statistics
    triggered_children: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CoreStatus:
    finished: int
    running: int
    ready: int
    proposing: int
    workers: int
    best_val_bpb: float | None
    llm_usd: float
    elapsed_s: float
    closing: str | None      # why no new work is started, if so
    stopped: bool


# ------------------------------------------------------------------------------ core


class Scheduler:
    """Decides what happens next. Call `handle(event)`; carry out the decisions it returns."""

    def __init__(self, settings: Settings, parents: ParentSource, root_id: str, root_island: int = 0,
                 history: History | None = None, triggers: Sequence[TriggerRule] = ()) -> None:
        history = history or History()
        self._rules = tuple(triggers)
        self._triggered: deque[TriggeredProposal] = deque()  # requests waiting for room
        self._triggered_tickets: set[int] = set()
        # kept out of the operator statistics (a resumed run's come from the store's mark)
        self._triggered_children: set[str] = set(history.triggered_children)
        self.settings = settings
        self._parents = parents
        self._root_id = root_id
        self._root_done = history.root_done
        self._workers: dict[str, str | None] = {}     # worker -> running candidate
        self._free: dict[str, None] = {}               # ordered set of idle workers
        self._devices = DevicePolicy.resumed(settings.device_groups, settings.device_type,
                                             history.island_devices)
        self._running: dict[str, tuple[str, int]] = {}  # candidate -> (worker, island)
        self._ready: deque[tuple[str, int]] = deque(history.queued)
        self._proposing: dict[int, int] = {}           # ticket -> island
        self._island_load = [0] * max(1, settings.islands)
        for _, island in self._ready:
            self._island_load[island % len(self._island_load)] += 1
        self._lost = dict(history.lost_counts)
        self._attempts = dict(history.attempts)
        self._finished = history.finished
        self._next_ticket = history.proposals_made
        self._llm_usd = history.llm_usd
        self._best = history.best_val_bpb
        self._operator_stats = dict(history.operator_stats)
        # the token budget: one rule with the LLM calls' limiter (evolve/mutate/ratelimit.py)
        tpm = settings.tokens_per_minute
        self._tokens = TokenWindow(tpm) if tpm is not None else None
        self._charged: dict[int, float] = {}  # ticket -> tokens charged when it started
        self._tokens_seen = 0
        self._proposals_seen = 0
        self._failed_in_row = 0
        self._prior_elapsed = history.elapsed_s
        self._started_at: float | None = None
        self._now = 0.0
        self._closing: str | None = None        # no new runs, no new proposals
        self._no_proposals: str | None = None   # proposals closed (LLM budget), runs go on
        self._llm_spent = False  # LLM budget reached: only the offline operators propose
        self._stopped = False
        self._extra: set[str] = set()           # queued or running jobs that are extra runs
        self._islands: dict[str, int] = {}      # candidate -> island it was queued on
        if not self._root_done and all(cid != root_id for cid, _ in self._ready):
            self._ready.appendleft((root_id, root_island))
            self._island_load[root_island % len(self._island_load)] += 1
        interval = settings.migration_interval
        self._last_migration = (self._finished // interval) * interval if interval > 0 else 0

    # ------------------------------------------------------------------ public

    def handle(self, event: Event) -> list[Decision]:
        """Apply one event and return the decisions it leads to, in order."""
        if self._stopped:
            return []
        self._advance(event.now)
        out: list[Decision] = []
        match event:
            case WorkerJoined():
                if event.worker_id not in self._workers:
                    admission = self._devices.admit(event.worker_id, event.device)
                    if admission.accepted:
                        self._workers[event.worker_id] = None
                        self._free[event.worker_id] = None
                    else:
                        out.append(RefuseWorker(event.worker_id, admission.message))
            case WorkerLost() | WorkerRefused():
                self._worker_lost(event, out)
            case ResultArrived():
                self._result(event, out)
            case ProposalReady():
                self._proposal_done(event.ticket, event.cost_usd, event.tokens, event.now)
                if event.ticket in self._triggered_tickets:
                    self._triggered_tickets.discard(event.ticket)
                    self._triggered_children.add(event.candidate_id)
                island = self._proposing.pop(event.ticket, None)
                if island is None:  # not ours (resume): still a runnable child
                    island = 0
                    self._island_load[0] += 1
                self._ready.append((event.candidate_id, island))
                self._failed_in_row = 0
            case ProposalFailed():
                self._proposal_done(event.ticket, event.cost_usd, event.tokens, event.now)
                self._triggered_tickets.discard(event.ticket)
                island = self._proposing.pop(event.ticket, None)
                if island is not None:
                    self._island_load[island] -= 1
                self._failed_in_row += 1
                if self._failed_in_row >= self.settings.max_consecutive_failed_proposals:
                    self._close(f"{self._failed_in_row} proposals in a row made no runnable child "
                                f"(last: {event.reason}); check the mutator configuration")
            case StopRequested():
                self._close(event.reason)
            case ExtraRunsQueued():
                self._queue_extra(event.job_ids, event.islands)
            case ProposalsTriggered():
                self._triggered.extend(event.requests)
            case Tick():
                pass
        self._fill(out)
        return out

    def status(self) -> CoreStatus:
        return CoreStatus(
            finished=self._finished, running=len(self._running), ready=len(self._ready),
            proposing=len(self._proposing), workers=len(self._workers), best_val_bpb=self._best,
            llm_usd=self._llm_usd, elapsed_s=self.elapsed(), closing=self._closing or self._no_proposals,
            stopped=self._stopped,
        )

    def elapsed(self) -> float:
        if self._started_at is None:
            return self._prior_elapsed
        return self._prior_elapsed + (self._now - self._started_at)

    def next_wakeup(self) -> float | None:
        """The earliest virtual time at which a Tick alone could change a decision."""
        times = []
        if self.settings.max_hours is not None and self._started_at is not None:
            times.append(self._started_at + self.settings.max_hours * 3600.0 - self._prior_elapsed)
        if self._tokens is not None and (expiry := self._tokens.next_change()) is not None:
            times.append(expiry)
        return min(times) if times else None

    def learn(self, label: str, improved: bool, candidate_id: str | None = None) -> None:
        """A child's result is final: count it for its label (`evolve.mutate.operators.credit`).
        It decides nothing, so a shell calls it as soon as the result is stored — before the
        event that frees the worker, so the next operator choice already knows it. A
        triggered child (`candidate_id` made by a triggered proposal) is not counted."""
        if candidate_id is not None and candidate_id in self._triggered_children:
            self._triggered_children.discard(candidate_id)
            return
        self._operator_stats[label] = self._operator_stats.get(label, OperatorStats()).add(improved)

    def operator_weights(self) -> dict[str, float]:
        """Operator name -> the weight the next proposal chooses it by (adapted, if adaptive)."""
        settings = self.settings
        return mix_weights(dict(settings.operators), self._operator_stats,
                           labels=settings.operator_labels, adaptive=settings.adaptive_operators,
                           exploration=settings.exploration)

    def operator_stats(self) -> dict[str, OperatorStats]:
        """Operator name -> the statistics of its label (what the weights learned from)."""
        labels = self.settings.operator_labels
        return {name: self._operator_stats.get(labels.get(name, name), OperatorStats())
                for name, _ in self.settings.operators}

    def island_devices(self) -> dict[int, str]:
        """Island -> the device type it is bound to (device groups; empty otherwise)."""
        return dict(self._devices.islands)

    @property
    def stopped(self) -> bool:
        return self._stopped

    @property
    def running(self) -> dict[str, str]:
        """Candidate id -> worker id of every attempt in flight."""
        return {cid: worker for cid, (worker, _) in self._running.items()}

    # ----------------------------------------------------------------- events

    def _advance(self, now: float) -> None:
        if self._started_at is None:
            self._started_at = now
        self._now = max(self._now, now)
        hours = self.settings.max_hours
        if hours is not None and budget.hours_reached(self.elapsed(), hours):
            self._close(budget.hours_reason(hours))

    def _worker_lost(self, event: WorkerLost | WorkerRefused, out: list[Decision]) -> None:
        if event.worker_id not in self._workers:
            return
        candidate = self._workers.pop(event.worker_id)
        self._free.pop(event.worker_id, None)
        self._devices.forget(event.worker_id)
        if candidate is None:
            return
        if isinstance(event, WorkerRefused):  # the node's fault: no lost attempt is charged
            _, island = self._running.pop(candidate)
            self._ready.appendleft((candidate, island))
            out.append(Requeue(candidate, self._lost.get(candidate, 0)))
            return
        self._attempt_lost(candidate, event.reason, out)

    def _result(self, event: ResultArrived, out: list[Decision]) -> None:
        running = self._running.get(event.candidate_id)
        if running is None or running[0] != event.worker_id:
            return  # stale: the attempt was already counted lost
        if event.worker_id in self._workers:
            self._workers[event.worker_id] = None
            self._free[event.worker_id] = None
        if event.outcome == LOST:
            self._attempt_lost(event.candidate_id, "attempt lost", out)
            return
        _, island = self._running.pop(event.candidate_id)
        self._island_load[island] -= 1
        if event.candidate_id in self._extra:  # not an experiment: nothing to count
            self._extra.discard(event.candidate_id)
            self._queue_extra(event.then_run, event.islands)
            if event.val_bpb is not None:  # the best after a decision it completed
                self._note_best(event.val_bpb)
            return
        self._queue_extra(event.then_run, event.islands)
        self._count_finished(out)
        for rule in self._rules:
            self._triggered.extend(rule.on_result(event))
        if event.candidate_id == self._root_id:
            self._root_done = True
            if event.outcome != DONE:
                self._root_failed(f"the baseline (root {self._root_id}) did not finish: "
                                  f"{event.outcome}; see its log — nothing can be compared "
                                  "against it", out)
        if event.outcome == DONE and event.val_bpb is not None:
            self._note_best(event.val_bpb)

    def _root_failed(self, reason: str, out: list[Decision]) -> None:
        """Children of the root ran beside it; with no baseline they measure nothing: every run
        in flight is cancelled at once (its worker freed) and the run stops with the reason."""
        self._close(reason)
        for candidate, (worker, island) in list(self._running.items()):
            del self._running[candidate]
            self._island_load[island] -= 1
            self._extra.discard(candidate)
            if worker in self._workers:
                self._workers[worker] = None
                self._free[worker] = None
            out.append(Cancel(candidate, worker, f"cancelled: {reason}"))
        self._ready.clear()

    def _note_best(self, val_bpb: float) -> None:
        if self._best is None or val_bpb < self._best:
            self._best = val_bpb
        target = self.settings.target_val_bpb
        if target is not None and budget.target_reached(val_bpb, target):
            self._close(budget.target_reason(target, val_bpb))

    def _attempt_lost(self, candidate: str, reason: str, out: list[Decision]) -> None:
        worker_island = self._running.pop(candidate, None)
        island = worker_island[1] if worker_island else 0
        lost = self._lost.get(candidate, 0) + 1
        self._lost[candidate] = lost
        if lost_too_often(lost, self.settings.max_lost_attempts):
            self._island_load[island] -= 1
            out.append(GiveUp(candidate, f"{lost_reason(lost)}; last: {reason}"))
            if candidate in self._extra:
                self._extra.discard(candidate)
                return
            self._count_finished(out)
            if candidate == self._root_id:
                self._root_done = True
                self._root_failed("the baseline (root) was lost on every attempt; check the "
                                  "workers", out)
            return
        self._ready.appendleft((candidate, island))
        out.append(Requeue(candidate, lost))

    def _count_finished(self, out: list[Decision]) -> None:
        self._finished += 1
        if migration_due(self._finished, self._last_migration, self.settings.migration_interval):
            self._last_migration = self._finished
            if self.settings.islands > 1:
                out.append(Migrate(self._finished))

    def _charge(self, now: float, tokens: float) -> None:
        if self._tokens is not None:
            self._tokens.charge(tokens, now)

    def _proposal_done(self, ticket: int, cost: float, tokens: int, now: float) -> None:
        self._llm_usd += cost
        # The estimate was charged when the call started (as the API counts it); settle it.
        self._charge(now, tokens - self._charged.pop(ticket, 0.0))
        self._tokens_seen += tokens
        self._proposals_seen += 1
        cap = self.settings.max_llm_usd
        if cap is not None and budget.usd_reached(self._llm_usd, cap) and self._no_proposals is None:
            if any(w > 0 for n, w in self.settings.operators if n in self.settings.offline_operators):
                self._llm_spent = True  # LLM proposals stop; the offline operators go on
            else:
                self._no_proposals = budget.usd_reason(self._llm_usd, cap)

    def _queue_extra(self, job_ids: Sequence[str], islands: Mapping[str, int]) -> None:
        """Extra runs go to the front of the queue, in the order given, each on the island of
        the candidate it re-scores: with device groups a re-run or test run must use the
        device type its candidate was scored on, or it compares unlike hardware."""
        # the root's own first run goes before its noise seeds (queued with it at the start)
        at = 1 if self._ready and self._ready[0][0] == self._root_id else 0
        for job in reversed(job_ids):
            island = islands.get(job)
            if island is None:
                island = self._islands.get(job_candidate(job), 0)
            island %= len(self._island_load)
            self._extra.add(job)
            self._ready.insert(at, (job, island))
            self._island_load[island] += 1

    def _close(self, reason: str) -> None:
        if self._closing is None:
            self._closing = reason

    # ---------------------------------------------------------------- decisions

    def _remaining(self) -> int | None:
        """Experiments that may still be started without overshooting max_experiments."""
        cap = self.settings.max_experiments
        if cap is None:
            return None
        extra = sum(1 for c in self._running if c in self._extra) if self._extra else 0
        return cap - self._finished - len(self._running) + extra

    def _fill(self, out: list[Decision]) -> None:
        cap = self.settings.max_experiments
        if self._closing is None and cap is not None \
                and budget.experiments_reached(self._finished, cap):
            self._close(budget.experiments_reason(cap))
        if self._closing is None:
            self._start_runs(out)
            # Children of the root are proposed and run while it runs: their parent's source
            # is known, only its score is not (what needs the score waits in the shell).
            if self._no_proposals is None:
                self._start_proposals(out)
        else:
            self._start_runs(out, extras_only=True)
        self._maybe_stop(out)

    def _next_ready(self, remaining: int | None, extras_only: bool) -> tuple[str, int] | None:
        """The next job to start: the queue's front, or the first extra run when children
        may not start (closing, or max_experiments already in flight)."""
        if not self._ready:
            return None
        if not extras_only and (remaining is None or remaining > 0):
            return self._ready.popleft()
        if not self._extra:
            return None
        for i, (job, island) in enumerate(self._ready):
            if job in self._extra:
                del self._ready[i]
                return job, island
        return None

    def _start_runs(self, out: list[Decision], extras_only: bool = False) -> None:
        remaining = self._remaining()
        waiting: list[tuple[str, int]] = []  # no free worker of their island's device type
        while self._free:
            picked = self._next_ready(remaining, extras_only)
            if picked is None:
                break
            candidate, island = picked
            worker = self._devices.pick(island, self._free)
            if worker is None:
                waiting.append(picked)
                continue
            self._devices.started(island, worker)
            if candidate not in self._extra:
                self._islands[candidate] = island
            del self._free[worker]
            self._workers[worker] = candidate
            self._running[candidate] = (worker, island)
            attempt = self._attempts.get(candidate, 0) + 1
            self._attempts[candidate] = attempt
            out.append(Run(candidate, worker, attempt))
            if remaining is not None and candidate not in self._extra:
                remaining -= 1
        self._ready.extendleft(reversed(waiting))

    def _wanted_pipeline(self) -> int:
        if self.settings.lookahead <= 0:
            pending = len(self._ready) + len(self._proposing)
            want = 1 if self._free and pending == 0 else 0
        else:
            want = self.settings.lookahead * len(self._workers)
        remaining = self._remaining()
        return want if remaining is None else min(want, remaining)

    def _tokens_per_proposal(self) -> float:
        if self._proposals_seen:
            return self._tokens_seen / self._proposals_seen
        return float(self.settings.tokens_per_proposal_guess)

    def _token_room(self) -> bool:
        """Room in the sliding minute for one more call (always, when the minute is empty)."""
        return self._tokens is None or self._tokens.room(self._tokens_per_proposal(), self._now)

    def _start_proposals(self, out: list[Decision]) -> None:
        cap = self.settings.max_concurrent_proposals
        # a triggered proposal names its parent, which a result decided: after the root's
        while (self._root_done and self._triggered and len(self._proposing) < cap
               and self._token_room()):
            request = self._triggered.popleft()  # caused by an event: ahead of drawn ones
            island = request.island
            if island is None:
                island = least_busy_island(self._island_load)
            ticket = self._open_ticket(island % len(self._island_load))
            self._triggered_tickets.add(ticket)
            out.append(Propose(ticket, request.parent_id, island % len(self._island_load),
                               request.operator, self._seed_of(ticket), request.trigger,
                               request.note))
        want = self._wanted_pipeline()
        while (len(self._ready) + len(self._proposing) < want and len(self._proposing) < cap
               and self._token_room()):
            island = least_busy_island(self._island_load)
            ticket = self._next_ticket
            rng = proposal_rng(self.settings.seed, ticket)  # same choices whatever the arrival order
            operator = self._pick_operator(rng)
            # until the root's result is in, the root is the only parent there is
            parent = (self._parents.choose_parent(island, rng) if self._root_done
                      else self._root_id)
            self._open_ticket(island)
            out.append(Propose(ticket, parent, island, operator, self._seed_of(ticket)))

    def _open_ticket(self, island: int) -> int:
        """Take the next ticket for a proposal on `island`, charging its token estimate."""
        ticket = self._next_ticket
        self._next_ticket += 1
        self._proposing[ticket] = island
        self._island_load[island] += 1
        if self.settings.tokens_per_minute is not None:
            self._charged[ticket] = self._tokens_per_proposal()
            self._charge(self._now, self._charged[ticket])
        return ticket

    def _seed_of(self, ticket: int) -> int:
        return (self.settings.seed * 1_000_003 + ticket) % (2**31)

    def _pick_operator(self, rng: random.Random) -> str:
        operators = [(name, w) for name, w in self.operator_weights().items() if w > 0
                     and (not self._llm_spent or name in self.settings.offline_operators)]
        if len(operators) == 1:
            return operators[0][0]
        names = [name for name, _ in operators]
        weights = [w for _, w in operators]
        return rng.choices(names, weights)[0]

    def _maybe_stop(self, out: list[Decision]) -> None:
        if self._running:
            return
        if self._workers and any(job in self._extra for job, _ in self._ready):
            return  # extra runs still to do (they run while closing)
        if self._closing is not None:
            reason = self._closing
        elif self._no_proposals is not None and not self._proposing and not self._ready:
            reason = self._no_proposals
        else:
            return
        self._stopped = True
        out.append(Stop(reason))
