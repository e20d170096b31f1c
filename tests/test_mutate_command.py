"""The command mutator with real subprocesses editing a real temporary directory."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
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


def test_timeout_kills_the_whole_process_group(tmp_path, template):
    pid_file = tmp_path / "grandchild.pid"
    argv = ["/bin/sh", "-c", f"sleep 300 & echo $! > {pid_file}; wait"]
    proposal = run(CommandMutator(argv, template_dir=template, timeout_s=1, kill_grace_s=2))
    assert "past its 1s limit" in proposal.error
    grandchild = int(pid_file.read_text())
    for _ in range(50):
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        asyncio.run(asyncio.sleep(0.1))
    else:
        pytest.fail("the command's background child survived the timeout")


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
