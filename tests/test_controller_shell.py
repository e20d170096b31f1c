"""The asyncio shell end to end: real store, real harness subprocesses, the heuristic mutator."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evolve.config import config_from_dict
from evolve.controller.executor import LocalExecutor
from evolve.controller.shell import Controller, Progress
from evolve.controller.wiring import operator_names, plan_run
from evolve.mutate.base import MutationContext, Proposal
from evolve.mutate.heuristic import HeuristicMutator
from population.candidate import Candidate, Status
from population.store import Store, StoreError

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "sleep_template"
FINISHED = (Status.DONE, Status.CRASHED, Status.TIMED_OUT)


def make_template(tmp_path: Path, sleep_s: float) -> Path:
    template = tmp_path / "template"
    shutil.copytree(FIXTURE, template)
    for name in ("train.py", "train_cpu.py"):
        path = template / name
        path.write_text(path.read_text().replace("SLEEP_S = 0.5 ", f"SLEEP_S = {sleep_s} "))
    return template


def make_config(template: Path, **sections):
    data = {"name": "t", "template": str(template), "profile": "cpu-micro", "seed": 3,
            "population": {"size": 4, "islands": 1}, "workers": {"count": 2, "max_lost_attempts": 2}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return config_from_dict(data)


class Recorder:
    """Collects what the controller reports (the lead's run directory does more with it)."""

    def __init__(self) -> None:
        self.candidates: list[Candidate] = []
        self.results: list[tuple[Candidate, bool]] = []
        self.progress: list[Progress] = []

    def on_candidate(self, c: Candidate) -> None:
        self.candidates.append(c)

    def on_result(self, c: Candidate, kept: bool) -> None:
        self.results.append((c, kept))

    def on_progress(self, snapshot: Progress) -> None:
        self.progress.append(snapshot)


def run(config, store, executor, recorder, tmp_path, mutators=None, stop=None, abandon=None):
    mutators = mutators or {"heuristic": HeuristicMutator()}
    controller = Controller(plan_run(config), store, executor, mutators, recorder,
                            work_root=tmp_path / "work", tick_s=0.2)
    return asyncio.run(controller.run(stop, abandon)) if stop is None else controller


def finished_once(store: Store) -> list[Candidate]:
    """Every finished candidate has exactly one attempt that ran to its outcome (lost,
    refused and abandoned ones aside)."""
    done = [c for c in store.finished_in_order()]
    for c in done:
        if c.mutator == "migration":
            continue
        outcomes = [a.outcome for a in store.attempts(c.id)
                    if a.outcome not in ("lost", "refused", "abandoned")]
        assert len(outcomes) == 1, (c.id, outcomes)
    return done


def test_end_to_end_with_local_workers(tmp_path):
    config = make_config(make_template(tmp_path, 0.2), budget={"max_experiments": 8})
    recorder = Recorder()
    with Store.open(tmp_path / "store.sqlite") as store:
        reason = run(config, store, LocalExecutor(2), recorder, tmp_path)
        assert reason == "max_experiments reached (8)"
        assert store.count(*FINISHED) == 8
        finished = finished_once(store)
        # The baseline ran first, its children beside it (from its source), and its result
        # was recorded before theirs (which are judged against it).
        root_attempt = store.attempts("root")[0]
        assert finished[0].id == "root"
        firsts = {c.id: store.attempts(c.id)[0] for c in finished[1:]}
        assert all(a.started_at >= root_attempt.started_at for a in firsts.values())
        assert any(a.started_at < root_attempt.ended_at for a in firsts.values())
        for c in finished[1:]:
            assert c.parent_id is not None and c.description
            assert c.finished_at >= finished[0].finished_at
        assert [c.id for c, _ in recorder.results] == [c.id for c in finished]
        assert recorder.results[0][1] is True  # the baseline is kept
        assert all(store.get(c.id).metrics["kept"] is kept for c, kept in recorder.results)
        assert float(store.get_meta("worker_seconds")) > 0
        assert store.get_meta("early_failure_share") is not None
        assert recorder.progress[-1].finished == 8
        assert recorder.progress[-1].best_val_bpb == min(c.val_bpb for c in finished if c.val_bpb)


def test_lookahead_zero_runs_the_one_agent_loop(tmp_path):
    config = make_config(make_template(tmp_path, 0.05), selection={"strategy": "greedy"},
                         population={"size": 1}, workers={"count": 1},
                         mutation={"lookahead": 0}, budget={"max_experiments": 5})
    with Store.open(tmp_path / "store.sqlite") as store:
        assert run(config, store, LocalExecutor(1), Recorder(), tmp_path) == \
            "max_experiments reached (5)"
        finished = finished_once(store)
        # Strictly sequential: each child was made after the previous experiment ended,
        # from the champion of that moment.
        for before, child in zip(finished, finished[1:], strict=False):
            assert child.created_at >= before.finished_at
            champion = min((c for c in finished if c.finished_at <= child.created_at
                            and c.status is Status.DONE), key=lambda c: (c.val_bpb, c.finished_at))
            assert child.parent_id == champion.id


class Hanging:
    name = "command"

    async def propose(self, context: MutationContext) -> Proposal:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


class Broken:
    name = "command"

    async def propose(self, context: MutationContext) -> Proposal:
        raise RuntimeError("the agent CLI exited with status 2")


@pytest.mark.parametrize("bad", [Hanging(), Broken()], ids=["hanging", "raising"])
def test_a_bad_mutator_never_stalls_the_run(tmp_path, bad):
    config = make_config(
        make_template(tmp_path, 0.05), budget={"max_experiments": 5},
        mutation={"proposal_timeout_s": 0.3, "operators": [
            {"kind": "heuristic", "weight": 1.0}, {"kind": "command", "argv": ["x"], "weight": 1.0}]})
    assert operator_names(config) == ["heuristic", "command"]
    with Store.open(tmp_path / "store.sqlite") as store:
        reason = run(config, store, LocalExecutor(2), Recorder(), tmp_path,
                     mutators={"heuristic": HeuristicMutator(), "command": bad})
        assert reason == "max_experiments reached (5)"
        rejected = [c for c in store.finished_in_order(include_rejected=True)
                    if c.status is Status.REJECTED]
        assert rejected and all(c.mutator == "command" for c in rejected)
        expected = "timed out after 0.3 s" if isinstance(bad, Hanging) else "exited with status 2"
        assert all(expected in c.reason for c in rejected)


def test_stop_then_resume_counts_every_result_once(tmp_path):
    config = make_config(make_template(tmp_path, 0.3), budget={"max_experiments": 12})
    path = tmp_path / "store.sqlite"

    async def stop_after(n: int, abandon: bool) -> str:
        stop, drop = asyncio.Event(), asyncio.Event()
        with Store.open(path) as store:
            recorder = Recorder()
            controller = run(config, store, LocalExecutor(2), recorder, tmp_path, stop=stop,
                             abandon=drop)
            task = asyncio.create_task(controller.run(stop, drop))
            def ready() -> bool:
                running = any(c.status is Status.RUNNING for c in store.unfinished())
                return len(recorder.results) >= n and (running or not abandon)

            while not ready() and not task.done():
                await asyncio.sleep(0.02)
            stop.set()
            if abandon:
                drop.set()
            return await task

    assert asyncio.run(stop_after(2, abandon=False)) == "stopped by user"
    with Store.open(path) as store:
        assert store.count(Status.RUNNING) == 0
        first = store.count(*FINISHED)
        assert 2 <= first <= 8  # what finished by the stop, and what was running then
    # Second stop abandons what runs: back to proposed, its attempt abandoned, for the
    # resume to re-run.
    assert asyncio.run(stop_after(1, abandon=True)).startswith("abandoned")
    with Store.open(path) as store:
        assert store.count(Status.RUNNING) == 0
        left_running = [c.id for c in store.unfinished()
                        if any(a.outcome == "abandoned" for a in store.attempts(c.id))]
        assert left_running
        recorder = Recorder()
        assert run(config, store, LocalExecutor(2), recorder, tmp_path) == \
            "max_experiments reached (12)"
        assert store.count(*FINISHED) == 12
        finished_once(store)
        for cid in left_running:
            outcomes = [a.outcome for a in store.attempts(cid)]
            assert outcomes[0] == "abandoned" and outcomes[-1] not in ("lost", "abandoned")
        assert len({c.id for c, _ in recorder.results}) == len(recorder.results)


DRIVER = """
import asyncio, sys
sys.path.insert(0, {tests!r})
from test_controller_shell import Recorder, make_config
from pathlib import Path
from evolve.controller.executor import LocalExecutor
from evolve.controller.shell import Controller
from evolve.controller.wiring import plan_run
from evolve.mutate.heuristic import HeuristicMutator
from population.store import Store
config = make_config(Path({template!r}).parent, budget={{"max_experiments": 9}})
store = Store.open({store!r})
controller = Controller(plan_run(config), store, LocalExecutor(2), {{"heuristic": HeuristicMutator()}},
                        Recorder(), work_root={work!r}, tick_s=0.2)
asyncio.run(controller.run())
"""


def test_kill_9_of_the_controller_then_resume(tmp_path):
    template = make_template(tmp_path, 0.3)
    path = tmp_path / "store.sqlite"
    script = DRIVER.format(tests=str(REPO / "tests"), template=str(template / "train.py"),
                           store=str(path), work=str(tmp_path / "work"))
    driver = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.1)
            if not path.exists():
                continue
            try:
                with Store.open(path, readonly=True) as view:
                    if view.count(*FINISHED) >= 3 and view.count(Status.RUNNING) >= 1:
                        break
            except StoreError:  # the writer is still creating the schema
                continue
        assert driver.poll() is None, "the driver ended before it could be killed"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
    finally:
        if driver.poll() is None:
            driver.kill()
    with Store.open(path) as store:
        before = {c.id for c in store.finished_in_order()}
        in_flight = [c.id for c in store.unfinished() if c.status is Status.RUNNING]
        assert in_flight
        config = make_config(template, budget={"max_experiments": 9})
        recorder = Recorder()
        assert run(config, store, LocalExecutor(2), recorder, tmp_path) == \
            "max_experiments reached (9)"
        assert store.count(*FINISHED) == 9
        finished_once(store)
        # Nothing finished before the kill is reported again; what was in flight ran again.
        assert not before & {c.id for c, _ in recorder.results}
        for cid in in_flight:
            assert store.attempts(cid)[0].outcome == "lost"
            assert store.get(cid).status in FINISHED


class Priced:
    """The heuristic mutator billed like an LLM call."""

    name = "heuristic"

    def __init__(self, cost_usd: float) -> None:
        self.cost_usd = cost_usd
        self.calls = 0

    async def propose(self, context: MutationContext) -> Proposal:
        self.calls += 1
        proposal = HeuristicMutator().propose_now(context)
        return Proposal(**{**proposal.__dict__, "cost_usd": self.cost_usd,
                           "usage": {"input_tokens": 900, "output_tokens": 100}})


def test_llm_dollar_cap_stops_proposals_and_lets_children_finish(tmp_path):
    # the only operator spends LLM money (an llm operator): at the cap, proposals close
    config = make_config(make_template(tmp_path, 0.05), workers={"count": 1},
                         mutation={"lookahead": 0, "operators": [{"kind": "llm"}]},
                         budget={"max_llm_usd": 1.0})
    mutator = Priced(0.4)
    with Store.open(tmp_path / "store.sqlite") as store:
        reason = run(config, store, LocalExecutor(1), Recorder(), tmp_path,
                     mutators={"llm": mutator})
        assert reason == "LLM budget spent ($1.20 of $1)"
        assert mutator.calls == 3
        assert float(store.get_meta("llm_usd_total")) == pytest.approx(1.2)
        assert store.count(*FINISHED) == 4  # the baseline and the three paid-for children
