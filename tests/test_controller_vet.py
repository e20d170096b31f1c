"""The shell's pre-flight after a mutator vetted its edit inside the conversation: the verdict
on the files the mutator vetted is reused, and only on exactly those files."""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_controller_shell import Recorder, make_config, make_template  # noqa: E402,I001

from evolve.controller.executor import LocalExecutor  # noqa: E402
from evolve.controller.shell import Controller  # noqa: E402
from evolve.controller.wiring import plan_run  # noqa: E402
from evolve.mutate.base import MutationContext, Proposal  # noqa: E402
from population.candidate import Status  # noqa: E402
from population.store import Store  # noqa: E402


CONSTANTS = ("DEPTH", "MODEL_DIM", "BATCH_SIZE", "MLP_RATIO", "HEAD_DIM", "GRAD_CLIP")


class Vetting:
    """A mutator that asks the shell to vet one edit, then hands back `returned` (the same
    edit or another): what the store says must be the verdict on what was handed back."""

    name = "command"

    def __init__(self, returned: str) -> None:
        self.returned = returned  # "same", "swapped" (vetted clean, hands back a broken one)
        self.verdicts: list[str] = []
        self.count = 0

    async def propose(self, context: MutationContext) -> Proposal:
        name = CONSTANTS[self.count % len(CONSTANTS)]
        self.count += 1
        source = context.parent.files["train.py"]
        clean = source.replace(f"\n{name} = ", f"\n{name} = 2 * ", 1)
        broken = clean.replace("import time", "import time\nimport prepare", 1)
        vetted = {"train.py": clean}
        description = f"double {name.lower()}"  # distinct ideas: the novelty filter passes them
        assert context.vet is not None
        self.verdicts.append(context.vet(vetted, description))
        files = vetted if self.returned == "same" else {"train.py": broken}
        return Proposal(files=files, description=description, rationale="", mutator=self.name)


def run_with(tmp_path: Path, mutator: Vetting) -> tuple[str, list]:
    config = make_config(make_template(tmp_path, 0.05), budget={"max_experiments": 3},
                         mutation={"operators": [{"kind": "command", "argv": ["x"]}]},
                         workers={"count": 1})
    with Store.open(tmp_path / "store.sqlite") as store:
        controller = Controller(plan_run(config), store, LocalExecutor(1), {"command": mutator},
                                Recorder(), work_root=tmp_path / "work", tick_s=0.2)
        reason = asyncio.run(controller.run())
        assert gc.get_freeze_count() == 0  # the run froze its start-up heap, and let it go
        return reason, [c for c in store.finished_in_order(include_rejected=True)
                        if c.id != "root"]


def test_the_files_vetted_clean_run(tmp_path):
    mutator = Vetting("same")
    reason, children = run_with(tmp_path, mutator)
    assert reason == "max_experiments reached (3)"
    assert children and all(c.status is Status.DONE for c in children)
    assert mutator.verdicts and all(v == "" for v in mutator.verdicts)


def test_other_files_than_the_vetted_ones_are_checked_again(tmp_path):
    mutator = Vetting("swapped")
    reason, children = run_with(tmp_path, mutator)
    assert "proposals in a row made no runnable child" in reason and "'prepare'" in reason
    assert children and all(c.status is Status.REJECTED for c in children)
    harness = [c for c in children if "duplicate" not in c.reason]  # the ideas cycle
    assert len(harness) >= len(CONSTANTS)
    assert all(c.reason.startswith("train.py:") and "'prepare'" in c.reason for c in harness)
    assert mutator.verdicts[:len(CONSTANTS)] == [""] * len(CONSTANTS)  # vetted clean (then
    # the same ideas come round again, and the novelty filter says so)
