"""The command mutator with real subprocesses editing a real temporary directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from evolve.mutate.base import MutationContext
from evolve.mutate.command import CommandMutator, scrubbed_environment
from population.candidate import Candidate, Status

SOURCE = "import torch\n\nMATRIX_LR = 0.04\n\n\ndef train(ctx):\n    return None\n"


@pytest.fixture
def template(tmp_path: Path) -> Path:
    root = tmp_path / "template"
    root.mkdir()
    (root / "prepare.py").write_text("# the harness\nSEED = 0\n")
    (root / "program.md").write_text("# Goal\n")
    return root


def context() -> MutationContext:
    parent = Candidate(id="c1", parent_id=None, island=0, generation=0,
                       files={"train.py": SOURCE}, status=Status.DONE,
                       metrics={"val_bpb": 1.5}, description="seed")
    return MutationContext(parent=parent, lineage=[parent], inspirations=[],
                           tried_on_parent=[], notebook="## Recent failures\n- boom",
                           program_md="# Goal\nLower val_bpb.", mutable_files=["train.py"],
                           seed=0)


def script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "agent.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path), "{prompt_file}"]


def run(mutator: CommandMutator):
    return asyncio.run(mutator.propose(context()))


def test_command_edit_becomes_the_child(tmp_path, template, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-must-not-leak")
    argv = script(tmp_path, """
        import os, pathlib, sys
        prompt = pathlib.Path(sys.argv[1]).read_text()
        assert prompt == pathlib.Path(os.environ["EVOLVE_PROMPT_FILE"]).read_text()
        assert "Lab notebook" in prompt and "MATRIX_LR = 0.04" in prompt
        assert "ANTHROPIC_API_KEY" not in os.environ
        assert pathlib.Path("prepare.py").exists()
        src = pathlib.Path("train.py").read_text()
        pathlib.Path("train.py").write_text(src.replace("0.04", "0.03"))
        pathlib.Path("DESCRIPTION.md").write_text(
            "DESCRIPTION: lower the matrix LR\\nRATIONALE: it diverged\\n")
        print("done editing")
    """)
    proposal = run(CommandMutator(argv, template_dir=template, timeout_s=60))
    assert proposal.error == "", proposal.error
    assert proposal.files == {"train.py": SOURCE.replace("0.04", "0.03")}
    assert proposal.description == "lower the matrix LR" and proposal.rationale == "it diverged"
    assert "-MATRIX_LR = 0.04" in proposal.applied_edit
    assert "done editing" in proposal.raw_answer and proposal.mutator == "command"


def test_a_shell_command_works_and_description_falls_back(tmp_path, template):
    argv = ["/bin/sh", "-c", "sed -i 's/0.04/0.05/' train.py && echo 'DESCRIPTION: sed it'"]
    proposal = run(CommandMutator(argv, template_dir=template))
    assert proposal.files["train.py"] == SOURCE.replace("0.04", "0.05")
    assert proposal.description == "sed it"


def test_touching_the_harness_no_change_and_failure_are_errors(tmp_path, template):
    harness = ["/bin/sh", "-c", "echo 'SEED = 1' >> prepare.py; echo x >> train.py"]
    assert "changed prepare.py" in run(CommandMutator(harness, template_dir=template)).error
    assert "no change" in run(CommandMutator(["true"], template_dir=template)).error
    failing = ["/bin/sh", "-c", "echo oops >&2; exit 3"]
    proposal = run(CommandMutator(failing, template_dir=template))
    assert "exited with code 3" in proposal.error and "oops" in proposal.error
    assert "FileNotFoundError" in run(CommandMutator(["/no/such/agent"])).error
    assert "FileNotFoundError" in run(CommandMutator(["no-such-agent-on-path"])).error


def test_a_program_from_the_template_runs_and_an_unrunnable_one_is_an_error(tmp_path, template):
    tool = template / "agent.sh"
    tool.write_text("#!/bin/sh\nsed -i 's/0.04/0.06/' \"$1\"\n")
    tool.chmod(0o755)
    proposal = run(CommandMutator(["./agent.sh", "{dir}/train.py"], template_dir=template))
    assert proposal.files == {"train.py": SOURCE.replace("0.04", "0.06")}, proposal.error
    tool.chmod(0o644)
    unrunnable = run(CommandMutator(["./agent.sh", "train.py"], template_dir=template)).error
    assert "PermissionError" in unrunnable and "agent.sh" in unrunnable


# An agent that starts a background child and one that leaves its process group (setsid),
# records "agent background escaped" pids atomically in argv[1], then works "forever".
AGENT = """
import os, pathlib, subprocess, sys, time
out = pathlib.Path(sys.argv[1])
background = subprocess.Popen(["sleep", "300"])
escaped = subprocess.Popen(["sleep", "301"], start_new_session=True)
out.with_suffix(".tmp").write_text(f"{os.getpid()} {background.pid} {escaped.pid}")
out.with_suffix(".tmp").rename(out)
print("agent working", flush=True)
time.sleep(300)
"""


def agent(tmp_path: Path) -> tuple[list[str], Path]:
    """A long-running agent command and the file its pids will be in."""
    path = tmp_path / "long_agent.py"
    path.write_text(AGENT)
    pid_file = tmp_path / "agent.pids"
    return [sys.executable, str(path), str(pid_file)], pid_file


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting for its reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


def survivors(pids: list[int], within_s: float = 15.0) -> list[int]:
    """The pids still alive after waiting up to `within_s` for all of them to die."""
    deadline = time.monotonic() + within_s
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:  # don't leave them behind for the rest of the suite
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def ancestors(pid: int, stop: int) -> list[int]:
    """The processes between `stop` and `pid` in the process tree (whatever starts the agent)."""
    found = []
    while True:
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat[stat.rindex(")") + 2:].split()[1])
        if pid in (stop, 0, 1):
            return found
        found.append(pid)


def test_timeout_kills_the_command_and_everything_it_started(tmp_path, template):
    argv, pid_file = agent(tmp_path)
    proposal = run(CommandMutator(argv, template_dir=template, timeout_s=4, kill_grace_s=2))
    pids = [int(pid) for pid in pid_file.read_text().split()]
    assert survivors(pids) == [], "the agent or a process it started survived the timeout"
    assert "past its 4s limit" in proposal.error
    assert "agent working" in proposal.raw_answer  # what it printed before the limit is kept


CONTROLLER = """
import asyncio, sys
from evolve.mutate.base import MutationContext
from evolve.mutate.command import CommandMutator
from population.candidate import Candidate, Status

parent = Candidate(id="c1", parent_id=None, island=0, generation=0,
                   files={"train.py": "X = 1\\n"}, status=Status.DONE, metrics={"val_bpb": 1.5})
ctx = MutationContext(parent=parent, lineage=[parent], inspirations=[], tried_on_parent=[],
                      notebook="", program_md="# Goal", mutable_files=["train.py"], seed=0)
print(asyncio.run(CommandMutator(sys.argv[1:], timeout_s=600).propose(ctx)))
"""


def test_a_killed_controller_takes_the_agent_and_its_children_with_it(tmp_path):
    """SIGKILL leaves the controller no chance to clean up: the agent must die with it."""
    argv, pid_file = agent(tmp_path)
    controller = subprocess.Popen([sys.executable, "-c", CONTROLLER, *argv],
                                  cwd=Path(__file__).resolve().parents[1],
                                  stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists():
            assert controller.poll() is None, "the controller ended before the agent started"
            assert time.monotonic() < deadline, "the agent never started"
            time.sleep(0.05)
        pids = [int(pid) for pid in pid_file.read_text().split()]
        between = ancestors(pids[0], stop=controller.pid)
    finally:
        controller.kill()
        controller.wait()
    assert survivors(pids + between) == [], "the agent outlived its controller"


def test_secrets_are_scrubbed_unless_kept():
    env = {"PATH": "/bin", "ANTHROPIC_API_KEY": "k", "GITHUB_TOKEN": "t", "HOME": "/h",
           "DB_PASSWORD": "p"}
    assert scrubbed_environment(env) == {"PATH": "/bin", "HOME": "/h"}
    assert "ANTHROPIC_API_KEY" in scrubbed_environment(env, keep=["ANTHROPIC_API_KEY"])


def test_cancelled_proposal_kills_the_command(tmp_path, template):
    pid_file = tmp_path / "agent.pid"
    argv = ["/bin/sh", "-c", f"sleep 300 & echo $! > {pid_file}; wait"]
    mutator = CommandMutator(argv, template_dir=template, timeout_s=600, kill_grace_s=2)

    async def cancel_soon():
        task = asyncio.ensure_future(mutator.propose(context()))
        while not pid_file.exists():
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_soon())
    sleeper = int(pid_file.read_text())
    for _ in range(50):
        try:
            os.kill(sleeper, 0)
        except ProcessLookupError:
            return
        asyncio.run(asyncio.sleep(0.1))
    pytest.fail("the cancelled command's child is still running")
