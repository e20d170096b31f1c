"""Noise floor, confirmation re-runs and held-out test scoring through the real controller:
real store, real harness subprocesses (the stand-in harness), a train.py whose score moves
with the seed the harness gives it."""

from __future__ import annotations

import asyncio
import json
import random
import re
import shutil
import statistics
from pathlib import Path

import pytest

from evolve.config import config_from_dict
from evolve.controller.evidence import NOISE_META, Evidence
from evolve.controller.executor import LocalExecutor
from evolve.controller.shell import Controller, Progress
from evolve.controller.wiring import plan_run
from evolve.mutate.base import MutationContext, Proposal
from population.candidate import Candidate, Status
from population.store import Store

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "sleep_template"
NOISE_SD = 0.01

# After the constants block: the stand-in "training" drifts with the harness's seed (the
# harness seeds `random` before importing train.py), as real training does.
NOISY_TRAIN = '''

SEED_SALT = 0            # a seed-like constant: which draws the drift takes
NOISE_SD = {sd}


def train(ctx):
    steps = 0
    for _x, _y in ctx.batches(BATCH_SIZE):
        steps += 1
    time.sleep(SLEEP_S)
    for _ in range(SEED_SALT):
        random.random()
    hparams = {{name: value for name, value in globals().items() if name.isupper()}}
    hparams["steps"] = steps
    hparams["seed_noise"] = random.gauss(0.0, NOISE_SD)
    return TinyModel(hparams)
'''


def make_template(tmp_path: Path, sd: float = NOISE_SD) -> Path:
    template = tmp_path / "template"
    shutil.copytree(FIXTURE, template)
    for name in ("train.py", "train_cpu.py"):
        path = template / name
        source = path.read_text().replace("SLEEP_S = 0.5 ", "SLEEP_S = 0.05 ")
        source = source.replace("import time\n", "import random\nimport time\n")
        source = source[:source.index("\ndef train(ctx):")] + NOISY_TRAIN.format(sd=sd)
        path.write_text(source)
    return template


class Recorder:
    def __init__(self) -> None:
        self.progress: list[Progress] = []

    def on_candidate(self, c: Candidate) -> None:
        pass

    def on_result(self, c: Candidate, kept: bool) -> None:
        pass

    def on_progress(self, snapshot: Progress) -> None:
        self.progress.append(snapshot)


class SaltMutator:
    """Each child changes only SEED_SALT: a change that moves the seed and nothing else.
    `reseeding` children instead draw their drift from a generator of their own, so their
    score is the same under every seed (they reseed themselves)."""

    name = "heuristic"

    def __init__(self, salts: list[int], reseeding: dict[int, int] | None = None) -> None:
        self.salts = list(salts)
        self.reseeding = reseeding or {}
        self.made = 0

    async def propose(self, context: MutationContext) -> Proposal:
        index = self.made
        self.made += 1
        salt = self.salts[index]
        source = context.parent.files["train.py"]
        source = re.sub(r"(?m)^SEED_SALT = \d+", f"SEED_SALT = {salt}", source)
        if index in self.reseeding:
            source = source.replace("random.gauss(0.0, NOISE_SD)",
                                    f"random.Random({self.reseeding[index]}).gauss(0.0, NOISE_SD)")
        return Proposal(files={"train.py": source}, description=f"SEED_SALT -> {salt}",
                        rationale="a different seed", mutator="heuristic")


def make_config(template: Path, **sections):
    data = {"name": "t", "template": str(template), "profile": "cpu-micro", "seed": 3,
            "population": {"size": 4, "islands": 1}, "selection": {"strategy": "tournament"},
            "workers": {"count": 2}, "noise": {"seeds": 3},
            "confirm": {"seeds": 2, "margin_sigma": 1.0, "z": 2.0}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return config_from_dict(data)


def run(config, store, mutator, tmp_path) -> tuple[str, Recorder]:
    recorder = Recorder()
    controller = Controller(plan_run(config), store, LocalExecutor(2), {"heuristic": mutator}, recorder,
                            work_root=tmp_path / "work", tick_s=0.2)
    return asyncio.run(controller.run()), recorder


def lucky_salt_for_reseeding() -> int:
    """A private seed whose drift is well below the noise: a child using it looks like a win."""
    return next(s for s in range(1000) if random.Random(s).gauss(0.0, NOISE_SD) < -2.5 * NOISE_SD)


def test_seed_only_changes_are_not_credited_and_self_reseeding_is_flagged(tmp_path):
    template = make_template(tmp_path)
    config = make_config(template, budget={"max_experiments": 9})
    reseeding = {2: lucky_salt_for_reseeding()}
    with Store.open(tmp_path / "store.sqlite") as store:
        reason, recorder = run(config, store, SaltMutator(list(range(1, 9)), reseeding), tmp_path)
        assert "max_experiments" in reason

        # the noise floor: the root under 3 seeds, σ stored and shown
        root = store.get("root")
        noise_runs = store.extra_runs("root", purpose="noise")
        assert [r.outcome for r in noise_runs] == ["done", "done"]
        seeds = {root.seed, *(r.seed for r in noise_runs)}
        assert len(seeds) == 3
        values = root.metrics["noise"]["runs"]
        assert len(values) == 3 and len(set(values)) == 3
        sigma = json.loads(store.get_meta(NOISE_META))["sigma"]
        assert sigma == statistics.stdev(values) > 0
        assert recorder.progress[-1].noise_sigma == sigma
        assert recorder.progress[-1].held == 0

        children = [c for c in store.finished_in_order() if c.id != "root"]
        assert len(children) == 8 and all(c.status is Status.DONE for c in children)
        confirmed = [c for c in children if "confirm" in c.metrics]
        assert confirmed, "no child drew a lucky first run: the test would prove nothing"
        for child in confirmed:
            decision = child.metrics["confirm"]
            assert decision["accepted"] is False, decision
            assert len(decision["runs"]) == 2 and len(decision["incumbent_runs"]) == 2
            assert child.val_bpb >= store.get(decision["incumbent"]).val_bpb
            assert {r.seed for r in store.extra_runs(child.id, purpose="confirm")} == \
                set(decision["seeds"])
        # nothing was crowned: every "gain" was the seed; none slipped past while σ was unknown
        assert store.best().id == "root"
        assert all("confirm" in c.metrics for c in children if c.val_bpb < root.val_bpb)

        # the child that ignores the harness's seed came back identical: flagged, not trusted
        reseeder = store.get("c00002")  # the third proposal
        assert reseeder.metrics.get("untrusted") is True
        assert "reseeds itself" in reseeder.metrics["confirm"]["reason"]

        # the held-out test split was scored in the root's own run: no retraining for it
        root = store.get("root")  # its val_bpb is the seeds' mean; test is its own run's
        assert root.test_bpb == pytest.approx(root.metrics["noise"]["runs"][0] + 0.01)
        assert not store.extra_runs(purpose="test")


def test_a_real_gain_is_confirmed_and_crowned(tmp_path):
    """The same machinery lets a real improvement through: a better MATRIX_LR wins by far
    more than σ and is crowned after its re-runs; its test score came with its own run, so
    `test.every_new_best` trains nothing more."""
    template = make_template(tmp_path, sd=0.001)
    config = make_config(template, budget={"max_experiments": 2},
                         test={"every_new_best": True}, workers={"count": 1})

    class Better:
        name = "heuristic"

        async def propose(self, context: MutationContext) -> Proposal:
            source = context.parent.files["train.py"].replace(
                "MATRIX_LR = 0.04 ", "MATRIX_LR = 0.03 ").replace(
                "WARMDOWN_FRAC = 0.5 ", "WARMDOWN_FRAC = 0.4 ")
            return Proposal(files={"train.py": source}, description="two constants to the optimum",
                            rationale="closer to the optimum", mutator="heuristic")

    with Store.open(tmp_path / "store.sqlite") as store:
        run(config, store, Better(), tmp_path)
        best = store.best()
        assert best.id != "root"
        decision = best.metrics["confirm"]
        assert decision["accepted"] is True and decision["trigger"] == "new best"
        assert decision["gain"] > decision["threshold"] > 0
        assert best.test_bpb is not None and not store.extra_runs(purpose="test")


def test_extra_runs_left_open_by_a_stopped_controller_are_closed_as_lost(tmp_path):
    config = make_config(make_template(tmp_path))
    with Store.open(tmp_path / "store.sqlite") as store:
        store.add(Candidate(id="root", parent_id=None, island=0, generation=0,
                            files={"train.py": "x = 1\n"}))
        queued = store.add_extra_run("root", purpose="noise", seed=5)
        running = store.add_extra_run("root", purpose="confirm", seed=6)
        store.start_extra_run(running.id, worker="w0")
        Evidence(store, seed=config.seed, noise=config.noise, confirm=config.confirm,
                 size=4)
        assert [r.outcome for r in store.extra_runs("root")] == ["lost", "lost"]
        assert "redone" in store.extra_run(queued.id).reason


def test_the_roots_noise_seeds_run_beside_it_and_its_children_wait_for_its_record(tmp_path):
    config = make_config(make_template(tmp_path), budget={"max_experiments": 4},
                         workers={"count": 4}, confirm={"seeds": 0})
    with Store.open(tmp_path / "store.sqlite") as store:
        controller = Controller(plan_run(config), store, LocalExecutor(4),
                                {"heuristic": SaltMutator(list(range(1, 9)), {})}, Recorder(),
                                work_root=tmp_path / "work", tick_s=0.2)
        assert "max_experiments" in asyncio.run(controller.run())
        root_run = store.attempts("root")[0]
        noise_runs = store.extra_runs("root", purpose="noise")
        assert [r.outcome for r in noise_runs] == ["done", "done"]
        assert all(r.started_at < root_run.ended_at for r in noise_runs)  # beside, not after
        root = store.get("root")
        assert len(root.metrics["noise"]["runs"]) == 3 and store.get_meta(NOISE_META)
        # every child is recorded after the root (judged against it), never before
        children = [c for c in store.finished_in_order() if c.id != "root"]
        assert children and all(c.finished_at >= root.finished_at for c in children)
