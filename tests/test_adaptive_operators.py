"""Adaptive operator weights (`mutation.adaptive_weights`): the core learns which operator's
children beat their parents, picks by UCB1-scaled weights, replays under its seed, and a
resumed run rebuilds the same statistics from the store."""

from __future__ import annotations

import asyncio
import math
import random
import re
import shutil
import subprocess
import sys
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from evolve.config import ConfigError, config_from_dict, load_config
from evolve.controller.core import (
    History,
    ProposalReady,
    Propose,
    ResultArrived,
    Run,
    Scheduler,
    Settings,
    WorkerJoined,
)
from evolve.controller.executor import LocalExecutor
from evolve.controller.recovery import judge, recover
from evolve.controller.shell import Controller
from evolve.controller.wiring import operator_labels, plan_run, settings_from_config
from evolve.inspect.status import operator_table
from evolve.mutate.base import MutationContext, Proposal
from evolve.mutate.operators import OperatorStats, tally
from population.candidate import Candidate, Status
from population.store import Store

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "sleep_template"
GOOD_BAD = (("good", 1.0), ("bad", 1.0))


class Root:
    """Every child is made from the root (parent choice is not what these tests are about)."""

    def choose_parent(self, island: int, rng: random.Random) -> str:
        return "root"


def drive(core: Scheduler, proposals: int, improves: Callable[[str], bool],
          root_done: bool = False) -> list[str]:
    """One worker, run strictly in order: every child finishes, and its operator learns whether
    it improved (before the result frees the worker, as the shell does). The operators chosen."""
    picks: list[str] = []
    operator_of: dict[str, str] = {}
    now = 0.0
    events: deque = deque([WorkerJoined(worker_id="w", now=now)])
    if not root_done:
        operator_of["root"] = ""
    while events and len(picks) < proposals:
        now += 1.0
        for decision in core.handle(events.popleft()):
            if isinstance(decision, Propose):
                picks.append(decision.operator)
                child = f"c{decision.ticket}"
                operator_of[child] = decision.operator
                events.append(ProposalReady(ticket=decision.ticket, candidate_id=child, now=now))
            elif isinstance(decision, Run):
                operator = operator_of[decision.candidate_id]
                if operator:
                    label = core.settings.operator_labels.get(operator, operator)
                    core.learn(label, improves(operator))
                events.append(ResultArrived(candidate_id=decision.candidate_id, worker_id="w",
                                            outcome="done", val_bpb=1.0, now=now))
    return picks


def good_and_bad(seed: int = 0) -> Callable[[str], bool]:
    """'good' children beat their parent 40% of the time, 'bad' ones 2%."""
    rng = random.Random(seed)
    return lambda operator: rng.random() < (0.4 if operator == "good" else 0.02)


# ------------------------------------------------------------------------------ the core


def test_an_operator_that_keeps_improving_is_chosen_more_only_when_adaptive():
    adaptive = Settings(lookahead=0, operators=GOOD_BAD, adaptive_operators=True,
                        exploration=0.5, seed=1)
    picks = Counter(drive(Scheduler(adaptive, Root(), "root"), 300, good_and_bad()))
    # weights are scaled, not argmax'd: the share follows the scores (~0.45 : ~0.15 here)
    assert picks["good"] > 2 * picks["bad"] and picks["bad"] >= 10  # still explored
    fixed = replace(adaptive, adaptive_operators=False)
    picks = Counter(drive(Scheduler(fixed, Root(), "root"), 300, good_and_bad()))
    assert 0.4 < picks["good"] / 300 < 0.6


def test_fixed_weights_ignore_what_the_core_learned():
    settings = Settings(operators=(("good", 1.0), ("bad", 3.0)))
    core = Scheduler(settings, Root(), "root")
    for _ in range(50):
        core.learn("good", True)
        core.learn("bad", False)
    assert core.operator_weights() == {"good": 1.0, "bad": 3.0}
    assert core.operator_stats() == {"good": OperatorStats(50, 50), "bad": OperatorStats(50, 0)}
    adaptive = Scheduler(replace(settings, adaptive_operators=True), Root(), "root")
    for _ in range(50):
        adaptive.learn("good", True)
        adaptive.learn("bad", False)
    weights = adaptive.operator_weights()
    assert weights["good"] > weights["bad"]  # 3:1 configured, overturned by what it learned


def test_same_seed_and_history_give_the_same_choices():
    settings = Settings(lookahead=0, operators=GOOD_BAD, adaptive_operators=True, seed=7)
    history = History(root_done=True, finished=40, proposals_made=40,
                      operator_stats={"good": OperatorStats(20, 9), "bad": OperatorStats(20, 1)})
    runs = [drive(Scheduler(settings, Root(), "root", history=history), 120, good_and_bad(3),
                  root_done=True) for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 120
    # what it learned is part of the history: other statistics, other choices
    flipped = replace(history, operator_stats={"good": OperatorStats(20, 1),
                                               "bad": OperatorStats(20, 9)})
    other = drive(Scheduler(settings, Root(), "root", history=flipped), 120, good_and_bad(3),
                  root_done=True)
    assert other != runs[0]
    # and another seed makes other choices from the same history
    reseeded = drive(Scheduler(replace(settings, seed=8), Root(), "root", history=history), 120,
                     good_and_bad(3), root_done=True)
    assert reseeded != runs[0]


def test_operators_sharing_a_label_share_their_statistics():
    settings = Settings(operators=(("heuristic0", 1.0), ("heuristic1", 1.0), ("llm", 1.0)),
                        operator_labels={"heuristic0": "heuristic", "heuristic1": "heuristic",
                                         "llm": "llm:m"}, adaptive_operators=True)
    core = Scheduler(settings, Root(), "root")
    for _ in range(10):
        core.learn("heuristic", True)
    stats = core.operator_stats()
    assert stats["heuristic0"] == stats["heuristic1"] == OperatorStats(10, 10)
    assert stats["llm"] == OperatorStats()
    weights = core.operator_weights()
    assert weights["heuristic0"] == weights["heuristic1"]
    # ten trials in all, not twenty: a shared label counts once in UCB1's total
    assert weights["llm"] == pytest.approx(0.5 + math.sqrt(math.log(11)))


# ------------------------------------------------------------------- store and resume


def make_config(template: Path, **mutation):
    return config_from_dict({
        "name": "adaptive", "template": str(template), "profile": "cpu-micro", "seed": 3,
        "population": {"size": 4, "islands": 1}, "workers": {"count": 1},
        "mutation": {"operators": [{"kind": "heuristic"}, {"kind": "llm", "model": "m1", "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 5.0},
                                   {"kind": "llm", "model": "m2", "weight": 2.0, "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 5.0}],
                     "adaptive_weights": True, **mutation}})


def test_config_becomes_settings_with_labels():
    config = make_config(FIXTURE, exploration=0.25)
    settings = settings_from_config(config)
    assert settings.operators == [("heuristic", 1.0), ("llm0", 1.0), ("llm1", 2.0)]
    assert settings.operator_labels == operator_labels(config) == {
        "heuristic": "heuristic", "llm0": "llm:m1", "llm1": "llm:m2"}
    assert settings.adaptive_operators and settings.exploration == 0.25
    fixed = settings_from_config(config_from_dict({"name": "f", "template": str(FIXTURE)}))
    assert not fixed.adaptive_operators and fixed.exploration == 1.0


def _add(store: Store, cid: str, parent: str | None, mutator: str, model: str, status: Status,
         val: float | None, clock: list[float]) -> Candidate:
    clock[0] += 1.0
    store.add(Candidate(id=cid, parent_id=parent, island=0, generation=0 if parent is None else 1,
                        files={"train.py": f"X = {cid!r}\n"}, mutator=mutator, model=model,
                        created_at=clock[0]))
    if status is Status.PROPOSED:
        return store.get(cid)
    store.set_status(cid, Status.RUNNING)
    if status is Status.RUNNING:
        return store.get(cid)
    return store.record_result(cid, status=status, now=clock[0],
                               metrics={} if val is None else {"val_bpb": val})


def test_resume_rebuilds_the_statistics_the_live_core_learned(tmp_path):
    config = make_config(FIXTURE, exploration=0.5)
    settings = replace(settings_from_config(config), lookahead=0)
    store = Store.open(tmp_path / "store.db")
    clock = [1000.0]
    live = Scheduler(settings, Root(), "root", history=History(root_done=True))
    rng = random.Random(5)
    kinds = [("heuristic", ""), ("llm", "m1"), ("llm", "m2"), ("crossover", "m1")]
    _add(store, "root", None, "template", "", Status.DONE, 1.0, clock)
    parents = ["root"]
    for i in range(40):
        mutator, model = kinds[i % len(kinds)]
        status = rng.choice([Status.DONE, Status.DONE, Status.DONE, Status.CRASHED,
                             Status.REJECTED, Status.TIMED_OUT])
        parent = rng.choice(parents)
        val = 1.0 + rng.uniform(-0.1, 0.1) if status is Status.DONE else None
        child = _add(store, f"c{i}", parent, mutator, model, status, val, clock)
        verdict = judge(store, child)  # the live path: the shell's _note
        if verdict is not None:
            live.learn(*verdict)
        if status is Status.DONE:
            parents.append(child.id)
        if i == 20:  # a migration copy is a parent too, never a trial
            copy = store.add_copy(child.id if status is Status.DONE else "root", 0, now=clock[0])
            parents.append(copy.id)
    _add(store, "c40", "root", "llm", "m1", Status.RUNNING, None, clock)  # interrupted
    history = recover(store, "root", max_lost_attempts=3, now=clock[0] + 1)
    resumed = Scheduler(settings, Root(), "root", history=replace(history, queued=()))
    assert resumed.operator_stats() == live.operator_stats()
    assert resumed.operator_weights() == live.operator_weights()
    stats = live.operator_stats()
    assert all(s.trials > 3 for s in stats.values()) and any(s.improved for s in stats.values())
    # 'crossover' is no configured operator here: counted under its label, used by nobody
    assert set(history.operator_stats) == {"heuristic", "llm:m1", "llm:m2", "crossover"}
    # both go on to make the same choices
    live_next = drive(live, 30, lambda op: op == "llm1", root_done=True)
    resumed_next = drive(resumed, 30, lambda op: op == "llm1", root_done=True)
    assert live_next == resumed_next
    store.close()


# --------------------------------------------------------------------------- the config


def write(tmp_path: Path, mutation: str) -> Path:
    template = tmp_path / "tpl"
    if not template.exists():
        shutil.copytree(FIXTURE, template)
    path = tmp_path / "run.yaml"
    path.write_text(f"template: tpl\nprofile: cpu-micro\nmutation:\n{mutation}")
    return path


@pytest.mark.parametrize(("mutation", "where", "fragment"), [
    ("  adaptive_weights: yes-please\n", ":4: mutation.adaptive_weights: ", "valid boolean"),
    ("  exploration: -1\n", ":4: mutation.exploration: ", "greater than or equal to 0"),
    ("  exploration: .nan\n", ":4: mutation.exploration: ", "finite"),
    ("  adaptive_weights: true\n", ":3: mutation: ", "at least two operators with weight > 0"),
    ("  adaptive_weights: true\n  operators: [{kind: heuristic}, {kind: llm, weight: 0}]\n",
     ":3: mutation: ", "adaptive_weights: true needs at least two operators"),
    ("  adaptive_weight: true\n", ":4: mutation.adaptive_weight: ", "unknown key"),
])
def test_config_errors_name_the_key(tmp_path, mutation, where, fragment):
    path = write(tmp_path, mutation)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert f"{path}{where}" in message and fragment in message


def test_adaptive_config_loads_overrides_and_round_trips(tmp_path):
    path = write(tmp_path, "  operators: [{kind: heuristic}, {kind: llm, weight: 0.5}]\n")
    config = load_config(path, ["mutation.adaptive_weights=true", "mutation.exploration=0.3"])
    assert config.mutation.adaptive_weights and config.mutation.exploration == 0.3
    again = tmp_path / "again.yaml"
    again.write_text(config.to_yaml())
    assert load_config(again) == config
    assert not load_config(path).mutation.adaptive_weights  # off by default


def test_the_core_and_the_statistics_stay_pure():
    code = ("import sys, evolve.controller.core, evolve.mutate.operators; "
            "print(sorted(m for m in ('ray', 'torch', 'anthropic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------- a real run, end to end

OPTIMUM = {"MATRIX_LR": 0.03, "EMBED_LR": 0.5}  # the stand-in harness's (tests/fixtures)


def _constant(source: str, name: str) -> float:
    return float(re.search(rf"^{name} = ([0-9.e-]+)", source, re.M).group(1))


def _with(source: str, name: str, value: float) -> str:
    return re.sub(rf"^{name} = [0-9.e-]+", f"{name} = {value!r}", source, count=1, flags=re.M)


class Closer:
    """Always moves a learning rate part of the way to the stand-in's optimum: every child
    beats its parent."""

    name = "command"

    async def propose(self, context: MutationContext) -> Proposal:
        source = context.parent.files["train.py"]
        name = sorted(OPTIMUM)[context.seed % 2]
        step = 0.3 + 0.1 * (context.seed % 5)  # keep this share of the log distance
        value = OPTIMUM[name] * (_constant(source, name) / OPTIMUM[name]) ** step
        return Proposal(files={"train.py": _with(source, name, value)},
                        description=f"{name} towards {OPTIMUM[name]}", rationale="",
                        mutator=self.name)


class Further:
    """Always moves a learning rate away from the optimum: no child beats its parent."""

    name = "heuristic"

    async def propose(self, context: MutationContext) -> Proposal:
        source = context.parent.files["train.py"]
        name = sorted(OPTIMUM)[context.seed % 2]
        value = _constant(source, name) * (1.3 + 0.1 * (context.seed % 7))
        return Proposal(files={"train.py": _with(source, name, value)},
                        description=f"{name} x more", rationale="", mutator=self.name)


class Recorder:
    def on_candidate(self, c: Candidate) -> None: ...
    def on_result(self, c: Candidate, kept: bool) -> None: ...
    def on_progress(self, snapshot: object) -> None: ...


def test_a_real_run_shifts_proposals_to_the_operator_that_improves(tmp_path):
    template = tmp_path / "template"
    shutil.copytree(FIXTURE, template)
    for name in ("train.py", "train_cpu.py"):
        path = template / name
        path.write_text(path.read_text().replace("SLEEP_S = 0.5 ", "SLEEP_S = 0.0 "))
    config = config_from_dict({
        "name": "e2e", "template": str(template), "profile": "cpu-micro", "seed": 3,
        "population": {"size": 4, "islands": 1}, "selection": {"strategy": "tournament"},
        "workers": {"count": 1}, "budget": {"max_experiments": 13},
        "mutation": {"operators": [{"kind": "heuristic"}, {"kind": "command", "argv": ["x"]}],
                     "lookahead": 0, "adaptive_weights": True, "exploration": 0.3}})
    store = Store.open(tmp_path / "store.db")
    controller = Controller(plan_run(config), store, LocalExecutor(1),
                            {"heuristic": Further(), "command": Closer()}, Recorder(),
                            work_root=tmp_path / "work", tick_s=0.2)
    reason = asyncio.run(controller.run())
    assert "max_experiments" in reason
    stats = tally(store.finished_in_order(include_copies=True))
    closer, further = stats["command"], stats["heuristic"]
    assert closer.trials + further.trials == 12
    assert closer.improved == closer.trials and further.improved == 0
    assert closer.trials > further.trials >= 2
    # what the live core learned is what a resume rebuilds from the store
    live = controller._core
    assert live is not None
    history = recover(store, "root", max_lost_attempts=3)
    resumed = Scheduler(live.settings, Root(), "root", history=history)
    assert resumed.operator_stats() == live.operator_stats() == {"heuristic": further,
                                                                 "command": closer}
    assert resumed.operator_weights() == live.operator_weights()
    # and `evolve status` shows it
    console = Console(record=True, width=120)
    console.print(operator_table(config, store.finished_in_order(include_copies=True)))
    text = console.export_text()
    assert "adaptive weights (UCB1, exploration 0.3)" in text
    row = next(line for line in text.splitlines() if "command" in line)
    weights = live.operator_weights()
    share = weights["command"] / sum(weights.values())
    assert f" {closer.trials} " in row and "100%" in row and f"{weights['command']:.4g}" in row
    assert f"{share:.1%}" in row and share > 0.5
    store.close()
