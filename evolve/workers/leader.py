"""Process-group leader of one experiment: runs the harness, and takes everything it started
down with it — processes that left the group (setsid, daemons) included.

A parent-death signal reaches only the direct child, and Ray SIGKILLs a dying worker's direct
children itself, so the process that cleans up must not be the direct child. Hence:

    runner --(parent-death SIGKILL)--> leader --(parent-death SIGUSR2)--> keeper --> harness

The keeper is a child subreaper (Linux `PR_SET_CHILD_SUBREAPER`): whatever the harness forks
stays in the keeper's process tree even after its parent exits or it calls setsid, so the
keeper can find it. When the harness ends, or the leader dies however it dies, the keeper
SIGKILLs every descendant and then the whole process group. The runner's own kills go
through the leader (see sandbox.reap_group), never straight at the keeper. Standalone (stdlib
only) so it starts under `python -I`.

    python -I leader.py [--pass-fd N] <runner pid> <harness argv...>

--pass-fd N: an open descriptor (the result pipe's write end) the harness inherits under the
same number; leader and keeper close their own copies as soon as the harness has it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
SWEEP_DEADLINE_S = 5.0  # a descendant that forks faster than we kill gets this long


def _prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _die_with(parent: int, sig: int, prctl) -> None:
    """Ask for `sig` when `parent` dies; act at once if it already has."""
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


def descendants(root: int) -> list[int]:
    """Every live process below `root` in the process tree (from /proc; empty without it)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                text = stat.read().decode(errors="replace")
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(name))
    found, frontier = [], [root]
    while frontier:
        below = children.get(frontier.pop(), [])
        found.extend(below)
        frontier.extend(below)
    return found


def _sweep(me: int) -> None:
    """SIGKILL every descendant, until none is left (or the deadline passes)."""
    deadline = time.monotonic() + SWEEP_DEADLINE_S
    while (found := descendants(me)) and time.monotonic() < deadline:
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _reap_children()
        time.sleep(0.01)


def _leader_died(*_: object) -> None:
    """The leader is gone (killed with the runner, or by the runner): take everything down."""
    _sweep(os.getpid())
    try:
        os.killpg(0, signal.SIGKILL)  # the group's rest, this process included
    finally:
        os._exit(1)


def _reap_children() -> None:
    """Collect dead children (orphans the subreaper inherited) without blocking."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _wait_for(harness: int) -> int:
    """Wait for the harness, reaping inherited orphans meanwhile; a shell-style exit code."""
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == harness:
            return os.waitstatus_to_exitcode(status)


def keeper(leader: int, command: list[str], prctl, passed: tuple[int, ...] = ()) -> None:
    """In a child of the leader: run the harness, then leave nothing of it alive."""
    if prctl is not None:
        prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    signal.signal(signal.SIGUSR2, _leader_died)
    _die_with(leader, signal.SIGUSR2, prctl)
    if prctl is None:  # no parent-death signal on this platform: poll for the leader instead
        def watch() -> None:
            while os.getppid() == leader:
                time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGUSR2)
        threading.Thread(target=watch, daemon=True).start()
    me = os.getpid()
    harness = subprocess.Popen(command, preexec_fn=lambda: _die_with(me, signal.SIGKILL, prctl),
                               pass_fds=passed)
    for fd in passed:  # only the harness holds the result pipe now
        os.close(fd)
    code = _wait_for(harness.pid)
    _sweep(me)
    if code < 0:  # mirror a signal death, so the leader (and the runner) see what killed it
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(me, -code)
    os._exit(code)


def main(argv: list[str]) -> int:
    passed: tuple[int, ...] = ()
    if argv[:1] == ["--pass-fd"]:
        passed, argv = (int(argv[1]),), argv[2:]
    runner_pid, command = int(argv[0]), argv[1:]
    prctl = _prctl()
    # A group-wide SIGTERM (the runner's timeout) is meant for the harness; leader and keeper
    # wait it out. A handler, not SIG_IGN: handlers reset at exec, so the harness still feels it.
    signal.signal(signal.SIGTERM, lambda *_: None)
    if os.getppid() != runner_pid:  # the runner is already gone
        os.killpg(0, signal.SIGKILL)
    leader = os.getpid()
    child = os.fork()
    if child == 0:
        try:
            keeper(leader, command, prctl, passed)
        except BaseException as exc:  # e.g. the harness could not be started
            print(f"leader: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        finally:
            os._exit(1)
    for fd in passed:
        os.close(fd)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # mirror the keeper's (that is, the harness's) signal death
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
