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
from evolve.controller.resume import operator_names
from evolve.controller.shell import Controller, Progress
from evolve.live import LiveDisplay
from evolve.mutate.base import Mutator
from evolve.outage import stop_when_down, with_fallback
from evolve.rundir import RunDir
from population.candidate import Candidate, Status
from population.store import Store

SECRET_ENV_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")


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
    Ray's own settings (token mode and path, TLS key path) stay; see `evolve.environ_scrub`."""
    from evolve.environ_scrub import take_secrets

    return take_secrets(needed)


def _secret_names(config: Config) -> list[str]:
    """What the LLM client reads from the environment: its key variables and, as the Anthropic
    SDK does, ANTHROPIC_* (base URL, auth token) when no base_url is configured."""
    names = list(SECRET_ENV_VARS)
    names += [name for name in os.environ if name.startswith("ANTHROPIC_") and name not in names]
    for op in config.mutation.operators:
        env = getattr(op, "api_key_env", None)
        if env and env not in names:
            names.append(env)
    return names


def build_mutators(config: Config, store: Store) -> dict[str, Mutator]:
    """The configured operators, keyed as the controller names them; LLM operators share one
    spend ledger, resumed from what the store has already recorded."""
    from evolve.mutate.cost import SpendLedger
    from evolve.mutate.operators import build_mutators as build

    ledger = SpendLedger.resume(_recorded_costs(store), config.budget.max_llm_usd)
    return build(config.mutation.operators, operator_names(config),
                 template_dir=config.template_dir, ledger=ledger,
                 max_in_flight=config.mutation.max_concurrent_proposals,
                 proposal_timeout_s=0.9 * config.mutation.proposal_timeout_s, seed=config.seed)


def _recorded_costs(store: Store) -> list[float]:
    return [c.cost_usd for c in store.finished_in_order(include_rejected=True) if c.cost_usd]


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
            if self.config.mutation.on_llm_down == "fallback":
                from evolve.mutate.heuristic import HeuristicMutator

                mutators = with_fallback(mutators, HeuristicMutator())
            recorder = RunRecorder(self.run_dir, display)
            controller = Controller(self.config, store, executor, mutators, recorder,
                                    work_root=self.run_dir.work_dir)
            from evolve.datahash import reference_hashes

            controller.template_hash, controller.data_hash = reference_hashes(
                store, self.config.template_dir, self.config.profile, self.config.data)
            if on_store is not None:
                on_store(store)
            return asyncio.run(self._drive(controller, mutators, install_signals))
        finally:
            store.close()

    async def _drive(self, controller: Controller, mutators: Mapping[str, Mutator],
                     install_signals: bool) -> str:
        stop, abandon = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        outage: list[str] = []
        watcher = None
        if self.config.mutation.on_llm_down == "stop":
            watcher = asyncio.create_task(stop_when_down(mutators, stop, outage.append))

        def on_signal() -> None:
            (abandon if stop.is_set() else stop).set()

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
            return outage[0] if outage else reason
        finally:
            if watcher is not None:
                watcher.cancel()
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _rebuild_tsv(self, store: Store) -> None:
        """results.tsv from the store: after a kill it may lack (or repeat) the last rows."""
        rows = [(c, bool(c.metrics.get("kept", False))) for c in store.finished_in_order()
                if c.status in (Status.DONE, Status.CRASHED, Status.TIMED_OUT)]
        self.run_dir.rewrite_tsv(rows)
