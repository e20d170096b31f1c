"""A triggered child stays out of the operator statistics across a resume: a real run whose
rule triggers one proposal (its child improves, so counting it would show), stopped, then
resumed by a new controller on the same store: the resumed core learned only from drawn
children. (The child still in flight at a kill: tests/test_store_migration_v3.py.)"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from test_adaptive_operators import FIXTURE, Closer, Further, Recorder

from evolve.config import config_from_dict
from evolve.controller.core import ResultArrived
from evolve.controller.executor import LocalExecutor
from evolve.controller.shell import Controller
from evolve.controller.triggers import Trigger, TriggeredProposal
from evolve.controller.wiring import plan_run
from evolve.inspect.status import operator_table
from evolve.mutate.operators import tally
from population.candidate import Status
from population.store import Store


class OneCarry:
    """Triggers one `command` proposal (it always improves) on the first child's result."""

    def __init__(self) -> None:
        self.fired = False

    def on_result(self, event: ResultArrived) -> list[TriggeredProposal]:
        if self.fired or event.candidate_id == "root" or event.outcome != "done":
            return []
        self.fired = True
        return [TriggeredProposal(event.candidate_id, "command", Trigger.OTHER)]


def config(template: Path, experiments: int):
    return config_from_dict({
        "name": "triggered", "template": str(template), "profile": "cpu-micro", "seed": 3,
        "population": {"size": 4, "islands": 1}, "workers": {"count": 1},
        "budget": {"max_experiments": experiments},
        "mutation": {"operators": [{"kind": "heuristic"}, {"kind": "command", "argv": ["x"]}],
                     "lookahead": 0, "adaptive_weights": True}})


def run(store: Store, template: Path, work: Path, experiments: int, triggers=()) -> Controller:
    controller = Controller(plan_run(config(template, experiments)), store, LocalExecutor(1),
                            {"heuristic": Further(), "command": Closer()}, Recorder(),
                            work_root=work, tick_s=0.2, triggers=triggers)
    assert "max_experiments" in asyncio.run(controller.run())
    return controller


def test_a_resumed_run_does_not_learn_from_a_triggered_child(tmp_path):
    template = tmp_path / "template"
    shutil.copytree(FIXTURE, template)
    for name in ("train.py", "train_cpu.py"):
        path = template / name
        path.write_text(path.read_text().replace("SLEEP_S = 0.5 ", "SLEEP_S = 0.0 "))
    rule = OneCarry()
    with Store.open(tmp_path / "store.db") as store:
        first = run(store, template, tmp_path / "work", 6, triggers=[rule])
        assert rule.fired
        (carried,) = [c for c in store.finished_in_order() if c.triggered_by]
        assert carried.triggered_by == Trigger.OTHER.value and carried.status is Status.DONE
        assert carried.mutator == "command" and carried.val_bpb < store.get(carried.parent_id).val_bpb
        resumed = run(store, template, tmp_path / "work", 9)  # `evolve resume` with more budget
        finished = store.finished_in_order()
        assert len(finished) == 9
        drawn = tally(finished, drawn_only=True)
        assert tally(finished) != drawn  # counting the triggered child would show
        assert resumed._core.operator_stats() == {"heuristic": drawn["heuristic"],
                                                  "command": drawn["command"]}
        # `evolve status` shows the weights the core has: learned from drawn children only
        table = operator_table(config(template, 9), finished)
        rows = {cells[0]: cells for cells in zip(*(col._cells for col in table.columns),
                                                  strict=True)}
        weights = resumed._core.operator_weights()
        assert {name: rows[name][5] for name in weights} == {
            name: f"{w:.4g}" for name, w in weights.items()}
        assert rows["command"][2] == str(drawn["command"].trials + 1)  # its trials: all shown
        before = tally(finished[:6], drawn_only=True)  # what the first run had finished
        assert first._core.operator_stats() == {name: before[name] for name in before}
