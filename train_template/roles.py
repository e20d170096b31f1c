"""The referee's untrusted processes: how they start (jailed, fresh interpreter, one channel)
and how they end (every descendant killed, those that left their parent included).

The referee makes itself a child subreaper, so whatever a role forks stays below the referee
in the process tree even after a double fork or setsid, and sweep() finds and kills it. It
makes itself non-dumpable, so a process of the same user cannot open /proc/<referee>/fd (the
result fd, the channels) or read its memory. Stdlib only, no candidate code ever imported.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jail
from channel import Channel, socketpair

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
SWEEP_DEADLINE_S = 5.0
# What a role's environment keeps of Python's own variables (the rest could redirect imports).
_PYTHON_KEEP = ("PYTHONHASHSEED", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE")


def _prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


# Processes below this one before it became the referee: not the experiment's, so sweep()
# spares them. `prepare.py run` starts with none; a caller that runs the referee inside a
# process of its own (a test's) may have some, such as a Ray head.
_BEFORE: set[int] = set()


def become_referee() -> None:
    """Non-dumpable (no /proc/<pid>/fd or mem for same-user processes) and a subreaper."""
    _BEFORE.clear()
    _BEFORE.update(descendants(os.getpid()))
    if _PRCTL is not None:
        _PRCTL(PR_SET_DUMPABLE, 0, 0, 0, 0)
        _PRCTL(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def role_env(base: Mapping[str, str], seed: int) -> dict[str, str]:
    """The roles' environment: no PYTHON* variable but the harmless ones, no cache location."""
    env = {k: v for k, v in base.items()
           if not (k.startswith("PYTHON") and k not in _PYTHON_KEEP) and k != "EVOLVE_CACHE_DIR"}
    env["PYTHONHASHSEED"] = str(seed)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@dataclass
class Role:
    """A started role: its process (the jail's outermost), the referee's end of its channel,
    and the watchdog on its memory and process count (jailed roles only)."""

    name: str
    process: subprocess.Popen
    channel: Channel
    watchdog: object | None = None
    cgroup: object | None = None  # jail.ExperimentCgroup where the node delegates one

    def alive(self) -> bool:
        return self.process.poll() is None

    def killed_for(self) -> str | None:
        """Why the watchdog killed the role (memory, processes), or None."""
        if self.watchdog is None:
            return None
        if not self.alive():
            self.watchdog.stop()
        return self.watchdog.reason


def _die_with_referee() -> None:  # runs in the child between fork and exec
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def spawn(name: str, script: Path, args: Sequence[str], *, workdir: Path,
          readonly: Sequence[Path], hidden: Sequence[Path], env: Mapping[str, str],
          sandboxed: bool, share_pid_namespace: bool = False) -> Role:
    """Start `python -s script args --channel-fd N` in `workdir`, jailed when `sandboxed`.

    -s: no user site-packages. The script's own folder (the harness) comes first on sys.path;
    PYTHON* variables that could redirect imports were dropped from `env`. share_pid_namespace:
    the role stays in the referee's PID namespace (CUDA IPC handles do not open across them).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    mine, fd = socketpair()
    argv = [sys.executable, "-s", str(script), *args, "--channel-fd", str(fd)]
    limits = jail.ResourceLimits() if sandboxed else None  # one experiment's share of the node
    if sandboxed:
        argv = jail.jailed(argv, workdir=workdir, readonly=readonly, hidden=hidden, env=env,
                           share_pid_namespace=share_pid_namespace, limits=limits)
    group = None
    if sandboxed and jail.cgroup_problem() is None:  # exact kernel bounds where allowed
        tag = f"{os.getpid()}-{name.replace(' ', '-')}"
        try:
            group = jail.ExperimentCgroup.create(tag, limits)
        except jail.CgroupUnavailable:
            group = None

    def before_exec() -> None:  # in the child, between fork and exec
        _die_with_referee()
        if group is not None:
            group.enter()

    try:
        process = subprocess.Popen(argv, cwd=str(workdir), env=dict(env), stdin=subprocess.DEVNULL,
                                   pass_fds=(fd,), close_fds=True, preexec_fn=before_exec)
    finally:
        os.close(fd)
    watchdog = None
    if limits is not None:  # started at once: a fork bomb must not get ahead of it
        watchdog = jail.Watchdog(process.pid, limits, cgroup=group).start()
    return Role(name, process, mine, watchdog, group)


def descendants(root: int, keep: Iterable[int] = ()) -> list[int]:
    """Live processes below `root` in the process tree, except `keep` and what is below them."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                text = stat.read().decode(errors="replace")
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    spared = set(keep)
    found, frontier = [], [root]
    while frontier:
        below = [pid for pid in children.get(frontier.pop(), []) if pid not in spared]
        found.extend(below)
        frontier.extend(below)
    return found


def end(role: Role) -> int | None:
    """Kill `role` and everything it started; its exit code (negative: the signal)."""
    role.channel.close()
    if role.process.poll() is None:
        try:
            role.process.kill()
        except ProcessLookupError:
            pass
    try:
        role.process.wait(timeout=SWEEP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        pass
    if role.watchdog is not None:
        role.watchdog.stop()
        role.watchdog.reap()  # what a shared pid namespace let outlive the root
    if role.cgroup is not None:
        role.cgroup.remove()
    return role.process.returncode


def sweep(keep: Sequence[Role] = ()) -> None:
    """SIGKILL every descendant of the referee but the `keep` roles, until none is left.

    Orphans of ended roles were reparented to the referee (a subreaper), so they are found
    here whatever they did to leave their parent; their zombies are reaped too.
    """
    spared = [r.process.pid for r in keep if r.alive()] + sorted(_BEFORE)
    deadline = time.monotonic() + SWEEP_DEADLINE_S
    while (found := descendants(os.getpid(), spared)) and time.monotonic() < deadline:
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _reap(spared)
        time.sleep(0.01)
    _reap(spared)


def _reap(spared: Sequence[int]) -> None:
    """Collect dead children that are not roles still wanted (their Popen waits for them)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    me = str(os.getpid())
    for entry in entries:
        if not entry.isdigit() or int(entry) in spared:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                text = stat.read().decode(errors="replace")
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if fields[0] == "Z" and fields[1] == me:
            try:
                os.waitpid(int(entry), os.WNOHANG)
            except ChildProcessError:
                pass
