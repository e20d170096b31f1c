"""How an experiment process is started and ended: its own process group, death with its
parent, no secrets in its environment, and a group kill that leaves nothing behind."""

from __future__ import annotations

import ctypes
import ctypes.util
import fnmatch
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

# Variable names that may carry credentials. Matched case-insensitively against the whole name.
SECRET_PATTERNS: tuple[str, ...] = (
    "ANTHROPIC_*", "OPENAI_*", "CLAUDE_*", "GEMINI_*", "MISTRAL_*", "COHERE_*",
    "*API_KEY*", "*APIKEY*", "*_KEY", "*_TOKEN", "*_TOKEN_*", "TOKEN", "*SECRET*",
    "*PASSWORD*", "*PASSWD*", "*CREDENTIAL*", "*PRIVATE_KEY*", "*_AUTH", "*_AUTH_*",
    "AWS_*", "AZURE_*", "GOOGLE_APPLICATION_CREDENTIALS", "GCP_*", "HF_TOKEN*",
    "HUGGING_FACE_HUB_TOKEN", "GITHUB_*", "GH_*", "WANDB_API_KEY", "RAY_AUTH*",
    "SSH_AUTH_SOCK", "NETRC", "KUBECONFIG",
)

# Thread-count variables set to the run's thread budget so two runs on one node don't fight.
THREAD_VARIABLES: tuple[str, ...] = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
)

LEADER = Path(__file__).with_name("leader.py")
KILL_GRACE_S = 2.0  # between SIGTERM and SIGKILL of a timed-out group
KEEPER_SWEEP_S = 6.0  # for the leader's keeper to kill every descendant (leader.SWEEP_DEADLINE_S)

_PR_SET_PDEATHSIG = 1


# Words that mark a credential anywhere in a name (e.g. DB_PASSWORD, SESSION_COOKIE).
SECRET_WORDS = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH|COOKIE|SESSION",
                          re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """True if an environment variable of this name could hold a credential."""
    upper = name.upper()
    return bool(SECRET_WORDS.search(upper)) or any(
        fnmatch.fnmatchcase(upper, pattern) for pattern in SECRET_PATTERNS)


def without_secrets(environ: Mapping[str, str], keep: Sequence[str] = ()) -> dict[str, str]:
    """`environ` without any variable that could hold a credential, except names in `keep`."""
    return {name: value for name, value in environ.items()
            if name in keep or not is_secret_name(name)}


def scrubbed_env(base: Mapping[str, str], *, threads: int, seed: int) -> dict[str, str]:
    """The experiment's environment: `base` without secrets, with thread counts and hash seed."""
    env = without_secrets(base)
    for name in THREAD_VARIABLES:
        env[name] = str(max(1, threads))
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONHASHSEED"] = str(seed)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _parent_death_hook(sig: int) -> Callable[[], None] | None:
    """A preexec_fn that sends the child `sig` when its parent dies (Linux only).

    libc and prctl are looked up here, before fork, so the hook itself only makes calls.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def start_in_group(
    argv: Sequence[str], *, cwd: str | Path, env: Mapping[str, str], log: IO[bytes],
    pass_fd: int | None = None,
) -> subprocess.Popen:
    """Start `argv` in a new session/process group that is SIGKILLed whole if we die.

    The group's leader is `leader.py`: it dies with us (parent-death SIGKILL), and its keeper
    (a child subreaper) then kills every process the experiment started, those that left the
    group included, so nothing of the experiment outlives the worker. `pass_fd` (the result
    pipe) reaches the harness under the same number, and nothing else of ours does.
    """
    passing = ["--pass-fd", str(pass_fd)] if pass_fd is not None else []
    command = [sys.executable, "-I", str(LEADER), *passing, str(os.getpid()), *argv]
    return subprocess.Popen(
        command, cwd=str(cwd), env=dict(env), stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=_parent_death_hook(signal.SIGKILL), close_fds=True,
        pass_fds=(pass_fd,) if pass_fd is not None else (),
    )


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of `pid` from /proc, or None where /proc can't tell."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces
    return fields[0], int(fields[2])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group; empty where /proc is missing."""
    members = []
    proc = Path("/proc")
    if not proc.is_dir():
        return members
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is not None and stat[1] == pgid and stat[0] != "Z":
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the group; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(process: subprocess.Popen, *, grace_s: float = KILL_GRACE_S) -> None:
    """SIGTERM the process's group, wait up to `grace_s`, then SIGKILL until none remains."""
    pgid = process.pid  # start_new_session makes the leader's pid the group id
    if _signal_group(pgid, signal.SIGTERM):
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if process.poll() is not None and not group_members(pgid):
                break
            time.sleep(0.05)
    reap_group(process)


def reap_group(process: subprocess.Popen, *, deadline_s: float = 10.0) -> None:
    """SIGKILL whatever is left of the process's group (stray background children too).

    The leader goes first, alone: its death makes its keeper kill every descendant, those that
    left the group (setsid, daemons) included, which a group-wide SIGKILL would orphan by
    killing the keeper at the same moment. The group-wide SIGKILL is the backstop.
    """
    pgid = process.pid
    if process.poll() is None:
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        sweep_end = time.monotonic() + KEEPER_SWEEP_S
        while group_members(pgid) and time.monotonic() < sweep_end:
            time.sleep(0.02)
    deadline = time.monotonic() + deadline_s
    while True:
        alive = _signal_group(pgid, signal.SIGKILL)
        if process.poll() is None:
            try:
                process.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
        if not alive or (process.poll() is not None and not group_members(pgid)):
            return
        if time.monotonic() > deadline:
            return  # e.g. a process stuck in uninterruptible sleep: nothing more a signal can do
        time.sleep(0.05)
