"""After a restart the device policy decides as it did before: islands keep their GPU model
(`workers.device_groups: true`), and a one-type run keeps its type.

A core that ran "live" (its decisions mirrored into a real SQLite store, as the shell does)
is compared with one rebuilt from that store by `recover`, both fed the same events; then the
same through the real controller with local harness subprocesses.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import sys
from pathlib import Path

from evolve.controller.core import (
    Propose,
    RefuseWorker,
    ResultArrived,
    Run,
    Scheduler,
    Settings,
    WorkerJoined,
    WorkerLost,
)
from evolve.controller.devices import DevicePolicy, first_types
from evolve.controller.executor import Joined, LocalExecutor
from evolve.controller.recovery import recover
from evolve.controller.shell import Controller
from evolve.controller.wiring import plan_run
from evolve.mutate.heuristic import HeuristicMutator
from population.candidate import Candidate, Status
from population.store import Store

H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"
LIVE_WORKERS = {"h0": H100, "a0": A100, "h1": H100, "a1": A100}
NEW_WORKERS = {"a9": A100, "h9": H100}  # after the restart the A100 joins first


class Root:
    def choose_parent(self, island: int, rng: random.Random) -> str:
        return "root"


class MirroredRun:
    """A core whose decisions are written to the store as the shell writes them."""

    def __init__(self, core: Scheduler, store: Store, devices: dict[str, str]) -> None:
        self.core, self.store, self.devices = core, store, devices
        self.attempt: dict[str, int] = {}   # running candidate -> attempt id
        self.proposals: list[Propose] = []  # not answered yet
        self.placed: dict[str, str] = {}    # candidate -> device type it was started on

    def handle(self, event) -> list:
        out = self.core.handle(event)
        for decision in out:
            if isinstance(decision, Run):
                candidate = self.store.get(decision.candidate_id)
                if candidate.status is Status.PROPOSED:
                    self.store.set_status(candidate.id, Status.RUNNING)
                device = self.devices[decision.worker_id]
                self.attempt[candidate.id] = self.store.start_attempt(
                    candidate.id, worker=decision.worker_id, node="n", device=device, now=1.0)
                self.placed[candidate.id] = device
            elif isinstance(decision, Propose):
                self.proposals.append(decision)
        return out

    def answer_proposals(self) -> None:
        from evolve.controller.core import ProposalReady

        proposals, self.proposals = self.proposals, []
        for p in proposals:
            cid = f"c{p.ticket}"
            self.store.add(Candidate(id=cid, parent_id=p.parent_id, island=p.island, generation=1,
                                     files={"train.py": f"X = {p.ticket}\n"}, created_at=1.0))
            self.store.set_meta("next_ticket", str(p.ticket + 1))
            self.handle(ProposalReady(ticket=p.ticket, candidate_id=cid, now=2.0))

    def finish_all(self, val_bpb: float = 1.0) -> None:
        for cid, worker in list(self.core.running.items()):
            self.store.finish_attempt(self.attempt.pop(cid), outcome="done", now=3.0)
            self.store.record_result(cid, status=Status.DONE, metrics={"val_bpb": val_bpb}, now=3.0)
            self.handle(ResultArrived(candidate_id=cid, worker_id=worker, outcome="done",
                                      val_bpb=val_bpb, now=3.0))


def _live_run(store: Store, settings: Settings, rounds: int) -> MirroredRun:
    store.add(Candidate(id="root", parent_id=None, island=0, generation=0, files={"train.py": "X\n"}))
    live = MirroredRun(Scheduler(settings, Root(), "root"), store, dict(LIVE_WORKERS))
    for worker, device in LIVE_WORKERS.items():
        live.handle(WorkerJoined(worker_id=worker, device=device, now=0.0))
    for i in range(rounds):
        live.finish_all(val_bpb=1.0 - 0.01 * i)
        live.answer_proposals()
    return live  # killed here: what runs stays `running` in the store


def _kill(live: MirroredRun, tmp_path: Path) -> Store:
    """The controller dies: a copy of its store is what the restarted one opens (the live
    core goes on against the original, for comparison)."""
    live.store.close()
    copy = tmp_path / "restarted.sqlite"
    shutil.copyfile(live.store.path, copy)
    live.store = Store.open(live.store.path)
    return Store.open(copy)


def _after_restart(run: MirroredRun) -> tuple[dict[str, str], list[RefuseWorker]]:
    """Feed the same new workers; run whatever is queued (no new proposals are answered)."""
    run.devices.update(NEW_WORKERS)
    run.placed = {}
    refused = []
    for worker, device in NEW_WORKERS.items():
        out = run.handle(WorkerJoined(worker_id=worker, device=device, now=10.0))
        refused += [d for d in out if isinstance(d, RefuseWorker)]
    while run.core.running:
        run.finish_all()
    return run.placed, refused


def test_first_types_take_each_islands_earliest_attempt():
    assert first_types([(5, 1, A100), (2, 0, H100), (3, 1, "gpu:3"), (9, 0, A100)]) == \
        {0: H100, 1: "gpu"}
    assert DevicePolicy.resumed(True, None, {0: H100}).islands == {0: H100}
    assert DevicePolicy.resumed(False, None, {1: A100, 0: H100}).pinned == H100
    assert DevicePolicy.resumed(False, A100, {0: H100}).pinned == A100  # the recorded type wins
    assert DevicePolicy.resumed(False, None, {}).pinned is None


def test_with_device_groups_a_rebuilt_core_places_every_island_on_its_type(tmp_path):
    settings = Settings(device_groups=True, islands=4, lookahead=1, max_lost_attempts=3)
    live = _live_run(Store.open(tmp_path / "s.sqlite"), settings, rounds=4)
    bound = live.core.island_devices()
    assert set(bound) == {0, 1, 2, 3} and set(bound.values()) == {H100, A100}
    assert live.core.running  # the kill leaves attempts in flight
    with _kill(live, tmp_path) as store, live.store:
        history = recover(store, "root", max_lost_attempts=3)
        rebuilt = MirroredRun(Scheduler(settings, Root(), "root", history=history), store,
                              dict(LIVE_WORKERS))
        assert history.island_devices == bound
        assert rebuilt.core.island_devices() == bound
        for worker in LIVE_WORKERS:  # the live core hears its workers die with the controller
            live.handle(WorkerLost(worker_id=worker, reason="controller killed", now=5.0))

        live_placed, _ = _after_restart(live)
        rebuilt_placed, _ = _after_restart(rebuilt)
        assert rebuilt_placed == live_placed
        for cid, device in rebuilt_placed.items():
            assert device == bound[store.get(cid).island], (cid, device)
        assert set(rebuilt_placed.values()) == {H100, A100}


def test_a_one_type_run_rebuilt_from_its_attempts_refuses_the_other_type(tmp_path):
    settings = Settings(islands=2, lookahead=1, max_lost_attempts=3)
    live = _live_run(Store.open(tmp_path / "s.sqlite"), settings, rounds=2)
    assert set(live.placed.values()) == {H100}  # the A100s were refused when they joined
    with _kill(live, tmp_path) as store, live.store:
        history = recover(store, "root", max_lost_attempts=3)
        # No device_type in the settings (a store that never recorded it): the attempts say.
        rebuilt = MirroredRun(Scheduler(settings, Root(), "root", history=history), store,
                              dict(LIVE_WORKERS))
        for worker in LIVE_WORKERS:
            live.handle(WorkerLost(worker_id=worker, reason="controller killed", now=5.0))
        live_placed, live_refused = _after_restart(live)
        rebuilt_placed, rebuilt_refused = _after_restart(rebuilt)
        assert rebuilt_placed == live_placed and set(rebuilt_placed.values()) == {H100}
        assert [r.worker_id for r in rebuilt_refused] == [r.worker_id for r in live_refused] == ["a9"]
        assert H100 in rebuilt_refused[0].message and A100 in rebuilt_refused[0].message


# ------------------------------------------------------------------ through the controller


class TwoModels(LocalExecutor):
    """Local workers (real harness subprocesses) that say they sit on two GPU models."""

    def __init__(self, count: int, first: str, second: str) -> None:
        super().__init__(count)
        self.models = (first, second)

    async def start(self, emit) -> None:
        self._emit = emit
        for i in range(self.count):
            emit(Joined(f"{self.prefix}{i}", "node", self.models[i % 2]))


def _config(tmp_path: Path, groups: bool, experiments: int):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_controller_shell import make_config, make_template

    return make_config(make_template(tmp_path, 0.05), budget={"max_experiments": experiments},
                       population={"islands": 4, "migration_interval": 0},
                       workers={"count": 4, "device_groups": groups})


def _run_until(tmp_path: Path, config, executor, results: int | None) -> str:
    """Run the controller; with `results`, abandon it (a kill) once that many are in."""
    from test_controller_shell import Recorder

    async def go() -> str:
        stop, drop = asyncio.Event(), asyncio.Event()
        recorder = Recorder()
        with Store.open(tmp_path / "store.sqlite") as store:
            controller = Controller(plan_run(config), store, executor, {"heuristic": HeuristicMutator()},
                                    recorder, work_root=tmp_path / "work", tick_s=0.1)
            task = asyncio.create_task(controller.run(stop, drop))
            while results is not None and not task.done():
                running = any(c.status is Status.RUNNING for c in store.unfinished())
                if len(recorder.results) >= results and running:
                    stop.set()
                    drop.set()
                    break
                await asyncio.sleep(0.02)
            return await task

    return asyncio.run(go())


def _types_by_island(tmp_path: Path) -> dict[int, set[str]]:
    with Store.open(tmp_path / "store.sqlite", readonly=True) as store:
        found: dict[int, set[str]] = {}
        for c in [*store.finished_in_order(), *store.unfinished()]:
            for a in store.attempts(c.id):
                found.setdefault(c.island, set()).add(a.device)
        return found


def test_resume_with_device_groups_keeps_every_island_on_its_gpu_model(tmp_path):
    config = _config(tmp_path, groups=True, experiments=14)
    killed = _run_until(tmp_path, config, TwoModels(4, H100, A100), results=5)
    assert killed.startswith("abandoned")
    before = _types_by_island(tmp_path)
    assert {t for types in before.values() for t in types} == {H100, A100}
    # The resumed run's workers come up in the other order: island 0 (the root's, an H100
    # island) would be handed to an A100 first if the bindings were forgotten.
    assert _run_until(tmp_path, config, TwoModels(4, A100, H100), results=None) == \
        "max_experiments reached (14)"
    after = _types_by_island(tmp_path)
    assert all(len(types) == 1 for types in after.values()), after
    for island, types in before.items():
        assert after[island] == types


def test_resume_of_a_one_type_run_keeps_its_gpu_model(tmp_path):
    config = _config(tmp_path, groups=False, experiments=8)
    assert _run_until(tmp_path, config, TwoModels(2, H100, A100), results=2).startswith("abandoned")
    assert _run_until(tmp_path, config, TwoModels(2, A100, H100), results=None) == \
        "max_experiments reached (8)"
    assert {t for types in _types_by_island(tmp_path).values() for t in types} == {H100}
    with Store.open(tmp_path / "store.sqlite", readonly=True) as store:
        assert store.get_meta("device_type") == H100
        refused = store.get_meta("refused_workers") or ""
        assert refused.count("not used") == 2 and A100 in refused  # once per run
