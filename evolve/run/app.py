"""One run as an object, in the manner of Ray Tune's Tuner: built from a config, `start`ed,
or `resume`d from its run directory, which holds the whole truth about it."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evolve.config import Config, load_config
from evolve.controller.shell import Controller, Progress
from evolve.controller.wiring import operator_names, plan_run
from evolve.mutate.base import Mutator
from evolve.run.live import LiveDisplay
from evolve.run.outage import OFFLINE_KINDS, refusal, watch_llm, with_offline
from evolve.run.rundir import RunDir, write_atomic
from population.budget import Budget, exhausted
from population.candidate import Candidate, Status
from population.outcomes import Outcome
from population.store import Store

SECRET_ENV_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
FIRST_SIGNAL_HINT = ("stopping: no new experiments; running ones finish — Ctrl-C again to stop "
                     "now (resume re-runs them)")
# Keys a resumed run may not change: its stored results were produced and compared under them.
FROZEN_ON_RESUME: Mapping[str, str] = {
    "name": "the run directory is already named",
    "output.results_dir": "the run directory already exists",
    "profile": "every stored score was trained under it",
    "template": "every stored candidate descends from it",
    "data": "every stored score was measured on it",
    "mutable_files": "every stored candidate is a set of these files",
    "seed": "the run's seeds and proposals derive from it",
    "population.islands": "the stored candidates are assigned to its islands",
    "noise.seeds": "σ was measured with it",
    "confirm.seeds": "past confirmations were decided with it",
}


@dataclass
class RunRecorder:
    """Fans the controller's notices out to the run directory and the live display."""

    run_dir: RunDir
    display: LiveDisplay | None = None
    results: int = 0
    last: Progress | None = field(default=None, repr=False)

    def on_candidate(self, c: Candidate) -> None:
        self.run_dir.on_candidate(c)

    def on_result(self, c: Candidate, kept: bool) -> None:
        self.results += 1
        self.run_dir.on_result(c, kept)
        if self.display is not None:
            self.display.on_result(c, kept)

    def on_progress(self, snapshot: Progress) -> None:
        self.last = snapshot
        if self.display is not None:
            self.display.on_progress(snapshot)


def take_secrets_out_of_environment(needed: Sequence[str]) -> dict[str, str]:
    """Remove every credential from this process's environment (before Ray starts, so no worker
    ever inherits one, and from /proc/<driver>/environ) and return those in `needed`, the
    only ones the driver keeps: the LLM client's settings, handed to it at construction.
    Ray's own settings (token mode and path, TLS key path) stay; see `evolve.guard.environ_scrub`."""
    from evolve.guard.environ_scrub import take_secrets

    return take_secrets(needed)


def _secret_names(config: Config) -> list[str]:
    """What the LLM client reads from the environment: its key variables and, as the Anthropic
    SDK does, ANTHROPIC_* (base URL, auth token) when no base_url is configured."""
    from evolve.mutate.registry import secret_names

    names = list(SECRET_ENV_VARS)
    names += [name for name in os.environ if name.startswith("ANTHROPIC_") and name not in names]
    return names + [n for n in secret_names(config.mutation.operators) if n not in names]


def build_mutators(config: Config, store: Store) -> dict[str, Mutator]:
    """The configured operators, keyed as the controller names them; LLM operators share one
    spend ledger, resumed from what the store has already recorded."""
    from evolve.mutate.cost import SpendLedger
    from evolve.mutate.limits import mutator_deadline
    from evolve.mutate.registry import OperatorFacts
    from evolve.mutate.registry import build_mutators as build

    ledger = SpendLedger.resume(_recorded_costs(store), config.budget.max_llm_usd)
    facts = OperatorFacts(template_dir=config.template_dir,
                          max_in_flight=config.mutation.max_concurrent_proposals,
                          proposal_timeout_s=mutator_deadline(config.mutation.proposal_timeout_s),
                          down_after_s=config.mutation.llm_down_after_s, seed=config.seed)
    return build(config.mutation.operators, operator_names(config), facts=facts, ledger=ledger)


def has_offline_operator(config: Config) -> bool:
    """Whether an operator that spends no LLM money can keep the workers busy once the LLM
    budget is spent."""
    return any(op.kind in OFFLINE_KINDS and op.weight > 0 for op in config.mutation.operators)


def _recorded_costs(store: Store) -> list[float]:
    return [c.cost_usd for c in store.finished_in_order(include_rejected=True, sources=False)
            if c.cost_usd]


def connect_ray(config: Config, address: str | None) -> Any:
    """Attach to a cluster (`--address`, the config, RAY_ADDRESS) or start a local Ray.

    The local case says `address="local"`: a bare `ray.init()` would attach to whatever cluster
    this machine last recorded in /tmp/ray (someone else's, possibly gone or needing another
    token) and hang there retrying."""
    import ray

    if ray.is_initialized():
        return ray
    target = address or config.ray.address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "configure_logging": False}
    ray.init(address=target or "local", **kwargs)
    return ray


@dataclass
class Run:
    """A run directory, its config, and what it takes to drive it."""

    run_dir: RunDir
    config: Config

    @classmethod
    def create(cls, config_path: str | Path, overrides: Sequence[str] = ()) -> Run:
        config = load_config(config_path, overrides)
        run_dir = RunDir.create(config.output.results_dir, config.name)
        run_dir.config_path.write_text(config.to_yaml())
        Store.open(run_dir.store_path).close()
        return cls(run_dir, config)

    @classmethod
    def open(cls, path: str | Path) -> Run:
        run_dir = RunDir.open(path)
        run_dir.ensure_layout()
        return cls(run_dir, load_config(run_dir.config_path))

    @classmethod
    def resume(cls, path: str | Path, overrides: Sequence[str] = ()) -> Run:
        """A stopped run, its stored config changed by `overrides` (`key=value`, as for `run`).

        Raises ConfigError for an override of a frozen key, and BudgetSpent (before anything
        starts) when a budget is already spent: only then is the changed config written back."""
        run_dir = RunDir.open(path)
        stored = load_config(run_dir.config_path)
        config = load_config(run_dir.config_path, overrides) if overrides else stored
        _refuse_frozen(stored, config, overrides, run_dir.config_path)
        run = cls(run_dir, config)
        spent = run.budget_spent()
        if spent is not None:
            raise BudgetSpent(
                f"{run_dir.path}: nothing to resume: {spent}, and the run finished there. Extend "
                f"it, e.g. evolve resume {run_dir.path} {_extend_hint(spent, config)}")
        if overrides:
            _write_config(run_dir.config_path, config, overrides)
        run_dir.ensure_layout()
        return run

    def budget_spent(self) -> str | None:
        """Which budget of the config the stored run has used up, if it stopped cleanly with
        nothing left to run (None otherwise: then resume has work to do)."""
        if not self.run_dir.store_path.exists():
            return None
        store = Store.open(self.run_dir.store_path, readonly=True)
        try:
            if store.get_meta("status") != "stopped" or store.unfinished():
                return None
            if any(run.outcome in (Outcome.QUEUED, Outcome.RUNNING) for run in store.extra_runs()):
                return None
            return spent_budget(self.config, store)
        finally:
            store.close()

    def execute(self, *, address: str | None = None, display: LiveDisplay | None = None,
                executor: Any = None, install_signals: bool = True,
                on_store: Callable[[Store], None] | None = None) -> str:
        """Drive the run until a budget is spent or a signal stops it; returns the reason.

        First SIGINT/SIGTERM: no new proposals, running experiments finish. Second: stop now,
        leaving the running ones for `resume` to run again."""
        secrets = take_secrets_out_of_environment(_secret_names(self.config))
        store = Store.open(self.run_dir.store_path)
        try:
            self._rebuild_tsv(store)
            os.environ.update(secrets)  # the LLM client reads its key once, at construction
            try:
                mutators = build_mutators(self.config, store)
            finally:
                for name in secrets:
                    os.environ.pop(name, None)
            if executor is None:
                from evolve.controller.executor import RayExecutor

                connect_ray(self.config, address)
                workers = self.config.workers
                executor = RayExecutor(workers.count, gpus_per_worker=workers.gpus_per_worker,
                                       cpus_per_worker=workers.cpus_per_worker)
            from evolve.mutate.heuristic import HeuristicMutator

            mutators = with_offline(
                mutators, HeuristicMutator(),
                when_down=self.config.mutation.on_llm_down == "fallback",
                when_spent=has_offline_operator(self.config))
            recorder = RunRecorder(self.run_dir, display)
            controller = Controller(plan_run(self.config), store, executor, mutators, recorder,
                                    work_root=self.run_dir.work_dir)
            from evolve.guard.datahash import reference_hashes

            controller.template_hash, controller.data_hash = reference_hashes(
                store, self.config.template_dir, self.config.profile, self.config.data)
            if on_store is not None:
                on_store(store)
            notify = _notifier(display)
            return asyncio.run(self._drive(controller, mutators, install_signals, notify))
        finally:
            store.close()

    async def _drive(self, controller: Controller, mutators: Mapping[str, Mutator],
                     install_signals: bool, notify: Callable[[str], None] = print) -> str:
        stop, abandon = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        outage: list[str] = []
        watcher = asyncio.create_task(watch_llm(
            mutators, stop, outage.append,
            stop_when_down=self.config.mutation.on_llm_down == "stop",
            stop_when_spent=not has_offline_operator(self.config)))

        def on_signal() -> None:
            if stop.is_set():
                abandon.set()
                return
            stop.set()
            notify(FIRST_SIGNAL_HINT)

        installed = []
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, on_signal)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError):  # not the main thread
                    pass
        try:
            reason = await controller.run(stop, abandon)
            # A refusal (bad key, unknown model) can end the run before the watcher's next
            # poll, through the burst of failed proposals it causes: it is still the reason.
            return outage[0] if outage else (refusal(mutators) or reason)
        finally:
            watcher.cancel()
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _rebuild_tsv(self, store: Store) -> None:
        """results.tsv from the store: after a kill it may lack (or repeat) the last rows."""
        rows = [(c, bool(c.metrics.get("kept", False))) for c in store.finished_in_order(sources=False)
                if c.status in (Status.DONE, Status.CRASHED, Status.TIMED_OUT)]
        self.run_dir.rewrite_tsv(rows)


class BudgetSpent(Exception):
    """`resume` of a run whose budget is used up: the message says how to extend it."""


def spent_budget(config: Config, store: Store) -> str | None:
    """The first budget in `config` the stored run has reached, phrased as the controller's
    stop reason; None when every budget has room left (or there is none)."""
    limits = config.budget
    best = store.best()
    return exhausted(
        Budget(limits.max_experiments, limits.max_hours, limits.target_val_bpb,
               limits.max_llm_usd),
        finished=store.count(Status.DONE, Status.CRASHED, Status.TIMED_OUT),
        elapsed_s=float(store.get_meta("elapsed_s", "0") or 0),
        best_val_bpb=best.val_bpb if best is not None else None,
        llm_usd=float(store.get_meta("llm_usd_total", "0") or 0))


def extend_hint(reason: str, config: Config) -> str | None:
    """`--set ...` that lifts the budget a stop reason names (None for other stops)."""
    budget = config.budget
    if reason.startswith("max_experiments") and budget.max_experiments is not None:
        return f"--set budget.max_experiments={2 * budget.max_experiments}"
    if reason.startswith("max_hours") and budget.max_hours is not None:
        return f"--set budget.max_hours={2 * budget.max_hours:g}"
    if reason.startswith("target") and budget.target_val_bpb is not None:
        return "--set budget.target_val_bpb=null"
    if reason.startswith(("max_llm_usd", "LLM budget")) and budget.max_llm_usd is not None:
        return f"--set budget.max_llm_usd={2 * budget.max_llm_usd:g}"
    return None


def _extend_hint(spent: str, config: Config) -> str:
    return extend_hint(spent, config) or "--set budget.<key>=<larger value>"


def _refuse_frozen(stored: Config, config: Config, overrides: Sequence[str], path: Path) -> None:
    for key, why in FROZEN_ON_RESUME.items():
        old, new = _get(stored, key), _get(config, key)
        if old == new:
            continue
        item = next((o for o in overrides
                     if o.partition("=")[0].strip().split(".")[: key.count(".") + 1]
                     == key.split(".")), key)
        from evolve.config import ConfigError

        raise ConfigError(
            f"--set {item}: {key} cannot change when resuming ({why}; it is {old!r} in {path}); "
            "start a new run with `evolve run` for that")


def _get(config: Config, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _write_config(path: Path, config: Config, overrides: Sequence[str]) -> None:
    """The changed config, its earlier `# resumed ... with` lines kept above it: on record."""
    import shlex
    import time

    history = [line for line in path.read_text().splitlines() if line.startswith("# resumed ")]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    history.append(f"# resumed {stamp} with " + " ".join(f"--set {shlex.quote(o)}"
                                                        for o in overrides))
    write_atomic(path, "\n".join(history) + "\n" + config.to_yaml())


def _notifier(display: LiveDisplay | None) -> Callable[[str], None]:
    """One line to the user: above the live panel when there is one, else to stderr."""
    if display is not None:
        return lambda message: display.console.print(message, soft_wrap=True, highlight=False,
                                                     markup=False)
    import sys

    return lambda message: print(message, file=sys.stderr, flush=True)
