"""The command mutator with real subprocesses editing a real temporary directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from evolve.mutate.base import MutationContext
from evolve.mutate.command import CommandMutator, scrubbed_environment
from evolve.mutate.kinds import CommandOperator
from evolve.mutate.registry import OperatorFacts
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
    """A Python agent in tmp_path/bin; the mutator must be given that folder (`readonly`):
    the jail shows the agent nothing it was not given."""
    path = tmp_path / "bin" / "agent.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path), "{prompt_file}"]


def command(argv: list[str], template_dir: Path | None = None, *, kill_grace_s: float = 5.0,
            readonly: list[Path | str] = (), **op) -> CommandMutator:
    """A command mutator from its config section (the `command` operator's keys) and the
    run's template folder."""
    section = CommandOperator(kind="command", argv=list(argv),
                              readonly=[str(path) for path in readonly], **op)
    return CommandMutator(section, OperatorFacts(template_dir=template_dir),
                          kill_grace_s=kill_grace_s)


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
    proposal = run(command(argv, template_dir=template, timeout_s=60,
                           readonly=[tmp_path / "bin"]))
    assert proposal.error == "", proposal.error
    assert proposal.files == {"train.py": SOURCE.replace("0.04", "0.03")}
    assert proposal.description == "lower the matrix LR" and proposal.rationale == "it diverged"
    assert "-MATRIX_LR = 0.04" in proposal.applied_edit
    assert "done editing" in proposal.raw_answer and proposal.mutator == "command"


def test_a_shell_command_works_and_description_falls_back(tmp_path, template):
    argv = ["/bin/sh", "-c", "sed -i 's/0.04/0.05/' train.py && echo 'DESCRIPTION: sed it'"]
    proposal = run(command(argv, template_dir=template))
    assert proposal.files["train.py"] == SOURCE.replace("0.04", "0.05")
    assert proposal.description == "sed it"


def test_touching_the_harness_no_change_and_failure_are_errors(tmp_path, template):
    harness = ["/bin/sh", "-c", "echo 'SEED = 1' >> prepare.py; echo x >> train.py"]
    assert "changed prepare.py" in run(command(harness, template_dir=template)).error
    assert "no change" in run(command(["true"], template_dir=template)).error
    failing = ["/bin/sh", "-c", "echo oops >&2; exit 3"]
    proposal = run(command(failing, template_dir=template))
    assert "exited with code 3" in proposal.error and "oops" in proposal.error
    assert "FileNotFoundError" in run(command(["/no/such/agent"])).error
    assert "FileNotFoundError" in run(command(["no-such-agent-on-path"])).error


def test_a_program_from_the_template_runs_and_an_unrunnable_one_is_an_error(tmp_path, template):
    tool = template / "agent.sh"
    tool.write_text("#!/bin/sh\nsed -i 's/0.04/0.06/' \"$1\"\n")
    tool.chmod(0o755)
    proposal = run(command(["./agent.sh", "{dir}/train.py"], template_dir=template))
    assert proposal.files == {"train.py": SOURCE.replace("0.04", "0.06")}, proposal.error
    tool.chmod(0o644)
    unrunnable = run(command(["./agent.sh", "train.py"], template_dir=template)).error
    assert "PermissionError" in unrunnable and "agent.sh" in unrunnable


# An agent that starts a background child and one that leaves its process group (setsid),
# each a `sleep` whose argument is the test's marker (how the test finds them on the host:
# inside the jail they have pids of their own namespace), then works "forever".
AGENT = """
import subprocess, sys, time
marker = sys.argv[1]
background = subprocess.Popen(["sleep", marker])
escaped = subprocess.Popen(["sleep", marker + "1"], start_new_session=True)
print("agent working", flush=True)
time.sleep(300)
"""


def agent(tmp_path: Path) -> tuple[list[str], str]:
    """A long-running agent command (in tmp_path/bin) and the marker its processes carry."""
    path = tmp_path / "bin" / "long_agent.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(AGENT)
    marker = f"300.{os.getpid()}{time.monotonic_ns() % 10**6}"
    return [sys.executable, str(path), marker], marker


def marked(marker: str, root: int | None = None) -> list[int]:
    """Host pids of live processes below `root` (this one by default) whose command line
    holds `marker`: the agent's, and the leader, keeper and jail that carry its argv."""
    root = os.getpid() if root is None else root
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != root:
            with contextlib.suppress(OSError):
                if marker.encode() in Path(f"/proc/{name}/cmdline").read_bytes() and alive(
                        int(name)) and root in ancestors(int(name)):
                    found.append(int(name))
    return found


def ancestors(pid: int) -> list[int]:
    """Every process above `pid` in the process tree."""
    found = []
    while pid > 1:
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat[stat.rindex(")") + 2:].split()[1])
        found.append(pid)
    return found


def wait_for_marked(marker: str, sleeps: int, within_s: float = 60.0,
                    root: int | None = None) -> list[int]:
    """Every marked process, once `sleeps` marked `sleep`s run (the agent's last step)."""
    deadline = time.monotonic() + within_s
    while True:
        pids = marked(marker, root)
        started = [pid for pid in pids if Path(f"/proc/{pid}/comm").read_text().strip() == "sleep"]
        if len(started) >= sleeps:
            return pids
        assert time.monotonic() < deadline, f"only {pids} of the agent's processes started"
        time.sleep(0.05)


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


def test_timeout_kills_the_command_and_everything_it_started(tmp_path, template):
    argv, marker = agent(tmp_path)
    mutator = command(argv, template_dir=template, timeout_s=8, kill_grace_s=2,
                      readonly=[tmp_path / "bin"])

    async def propose_and_watch():
        task = asyncio.ensure_future(mutator.propose(context()))
        pids = await asyncio.to_thread(wait_for_marked, marker, 2)
        return await task, pids

    proposal, pids = asyncio.run(propose_and_watch())
    assert survivors(pids) == [], "the agent or a process it started survived the timeout"
    assert "past its 8s limit" in proposal.error
    assert "agent working" in proposal.raw_answer  # what it printed before the limit is kept


CONTROLLER = """
import asyncio, sys
from evolve.mutate.base import MutationContext
from evolve.mutate.command import CommandMutator
from evolve.mutate.kinds import CommandOperator
from population.candidate import Candidate, Status

parent = Candidate(id="c1", parent_id=None, island=0, generation=0,
                   files={"train.py": "X = 1\\n"}, status=Status.DONE, metrics={"val_bpb": 1.5})
ctx = MutationContext(parent=parent, lineage=[parent], inspirations=[], tried_on_parent=[],
                      notebook="", program_md="# Goal", mutable_files=["train.py"], seed=0)
op = CommandOperator(kind="command", argv=sys.argv[2:], timeout_s=600, readonly=[sys.argv[1]])
print(asyncio.run(CommandMutator(op).propose(ctx)))
"""


def test_a_killed_controller_takes_the_agent_and_its_children_with_it(tmp_path):
    """SIGKILL leaves the controller no chance to clean up: the agent must die with it."""
    argv, marker = agent(tmp_path)
    controller = subprocess.Popen([sys.executable, "-c", CONTROLLER, str(tmp_path / "bin"), *argv],
                                  cwd=Path(__file__).resolve().parents[1],
                                  stdout=subprocess.DEVNULL)
    try:
        pids = wait_for_marked(marker, 2, root=controller.pid)
    finally:
        controller.kill()
        controller.wait()
    assert len(pids) >= 5, "no leader, keeper or jail between the controller and the agent?"
    assert survivors(pids) == [], "the agent outlived its controller"


def test_secrets_are_scrubbed_unless_kept():
    env = {"PATH": "/bin", "ANTHROPIC_API_KEY": "k", "GITHUB_TOKEN": "t", "HOME": "/h",
           "DB_PASSWORD": "p"}
    assert scrubbed_environment(env) == {"PATH": "/bin", "HOME": "/h"}
    assert "ANTHROPIC_API_KEY" in scrubbed_environment(env, keep=["ANTHROPIC_API_KEY"])


def test_cancelled_proposal_kills_the_command(tmp_path, template):
    marker = f"300.{os.getpid()}7"
    argv = ["/bin/sh", "-c", f"sleep {marker} & wait"]
    mutator = command(argv, template_dir=template, timeout_s=600, kill_grace_s=2)

    async def cancel_soon():
        task = asyncio.ensure_future(mutator.propose(context()))
        pids = await asyncio.to_thread(wait_for_marked, marker, 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pids

    pids = asyncio.run(cancel_soon())
    assert survivors(pids) == [], "the cancelled command's child is still running"


SNOOP = """
import os, pathlib, socket, sys
for path in sys.argv[2:]:
    try:
        print("READ", path, pathlib.Path(path).read_text())
    except OSError as exc:
        print("hidden", path, type(exc).__name__)
print("ENV", sorted(os.environ))
print("KEY", os.environ.get("ANTHROPIC_API_KEY"))
print("jail cmdline holds the key:", b"sk-named" in open("/proc/1/cmdline", "rb").read())
port = int(os.environ["SNOOP_PORT"])
socket.create_connection(("127.0.0.1", port), timeout=5).close()
print("network: reached the host")
src = pathlib.Path("train.py").read_text()
pathlib.Path("train.py").write_text(src.replace("0.04", "0.02"))
"""


def test_the_agent_sees_no_data_or_store_and_only_its_named_secret(tmp_path, template,
                                                                   monkeypatch):
    """A planted val split and a store outside the working copy do not exist for the agent;
    of the parent's secrets it gets the one its config names; it keeps the network."""
    val = tmp_path / "cache" / "val.bin"
    val.parent.mkdir()
    val.write_text("VAL-SPLIT-TEXT")
    store = tmp_path / "results" / "run" / "store.sqlite"
    store.parent.mkdir(parents=True)
    store.write_text("STORE-ROWS")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    monkeypatch.setenv("SNOOP_PORT", str(listener.getsockname()[1]))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-named")
    monkeypatch.setenv("GITHUB_TOKEN", "gh-not-named")
    monkeypatch.setenv("HF_TOKEN", "hf-not-named")
    argv = [*script(tmp_path, SNOOP), str(val), str(store)]
    try:
        proposal = run(command(argv, template_dir=template, secrets=["ANTHROPIC_API_KEY"],
                               readonly=[tmp_path / "bin"], sandbox="require"))
    finally:
        listener.close()
    out = proposal.raw_answer
    assert proposal.error == "", proposal.error + out
    assert "VAL-SPLIT-TEXT" not in out and "STORE-ROWS" not in out
    assert f"hidden {val} FileNotFoundError" in out and f"hidden {store} FileNotFoundError" in out
    assert "KEY sk-named" in out
    assert "GITHUB_TOKEN" not in out and "HF_TOKEN" not in out and "-not-named" not in out
    assert "jail cmdline holds the key: False" in out
    assert "network: reached the host" in out


def test_a_named_secret_that_is_not_set_is_a_config_error(monkeypatch):
    monkeypatch.delenv("NO_SUCH_AGENT_KEY", raising=False)
    with pytest.raises(ValueError, match="NO_SUCH_AGENT_KEY"):
        command(["true"], secrets=["NO_SUCH_AGENT_KEY"])


REFUSING_CONTROLLER = CONTROLLER.replace("readonly=[sys.argv[1]]", 'sandbox="require"')


def test_sandbox_require_refuses_where_there_is_no_jail(tmp_path):
    """No bwrap (EVOLVE_BWRAP names none): `sandbox: require` makes no proposal."""
    env = {**os.environ, "EVOLVE_BWRAP": str(tmp_path / "no-bwrap")}
    done = subprocess.run([sys.executable, "-c", REFUSING_CONTROLLER, "unused", "true"],
                          cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True,
                          text=True, timeout=120)
    assert "requires a sandbox" in done.stdout and "no bubblewrap" in done.stdout, done


def test_the_operator_config_names_its_secrets_and_sandbox(template):
    from evolve.config import ConfigError, config_from_dict
    from evolve.mutate.registry import build_mutators

    (template / "train_cpu.py").write_text(SOURCE)
    (template / "train.py").write_text(SOURCE)

    def operator(**fields) -> dict:
        return {"name": "agents", "template": str(template), "mutation": {"operators": [
            {"kind": "command", "argv": ["agent"], **fields}]}}

    config = config_from_dict(operator(secrets=["AGENT_KEY"], sandbox="require"))
    op = config.mutation.operators[0]
    assert op.secrets == ["AGENT_KEY"] and op.sandbox == "require" and op.readonly == []
    os.environ["AGENT_KEY"] = "k"
    try:
        mutator = build_mutators(config.mutation.operators, ["command"])["command"]
    finally:
        del os.environ["AGENT_KEY"]
    assert mutator.secrets == {"AGENT_KEY": "k"} and mutator.sandbox == "require"
    with pytest.raises(ConfigError, match=r"secrets"):
        config_from_dict(operator(secrets=["NOT A NAME"]))
    with pytest.raises(ConfigError, match=r"sandbox"):
        config_from_dict(operator(sandbox="off"))


WARNING_CONTROLLER = CONTROLLER.replace("readonly=[sys.argv[1]]", 'sandbox="warn"')


def test_sandbox_warn_runs_the_agent_unjailed_and_says_so(tmp_path):
    env = {**os.environ, "EVOLVE_BWRAP": str(tmp_path / "no-bwrap")}
    edit = ["/bin/sh", "-c", "echo 'X = 2' > train.py"]
    done = subprocess.run([sys.executable, "-c", WARNING_CONTROLLER, "unused", *edit],
                          cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True,
                          text=True, timeout=120)
    assert "error=''" in done.stdout and "X = 2" in done.stdout, done
    assert "WITHOUT a sandbox" in done.stderr and "no bubblewrap" in done.stderr, done.stderr
