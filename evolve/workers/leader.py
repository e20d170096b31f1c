"""Process-group leader of one experiment: runs the harness, and takes the group down with it.

A parent-death signal reaches only the direct child, and Ray SIGKILLs a dying worker's direct
children itself, so a harness that simply died with the worker would leave its own children
(data loaders, compile workers, anything the candidate forked) running on the GPU. Hence:

    runner --(parent-death SIGKILL)--> leader --(parent-death SIGKILL)--> harness
                                              \\-(parent-death SIGUSR2)--> sentinel

The sentinel sleeps; when the leader dies, however it dies, the sentinel SIGKILLs the whole
process group. Standalone (stdlib only) so it starts under `python -I`.

    python -I leader.py <runner pid> <harness argv...>
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1


def _prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _kill_group(*_: object) -> None:
    os.killpg(0, signal.SIGKILL)  # every process of the experiment, the caller included


def _die_with(parent: int, sig: int, prctl) -> None:
    """Ask for `sig` when `parent` dies; act at once if it already has."""
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


def _sentinel(leader: int, prctl) -> None:
    """In a forked child: wait for the leader's death, then kill the group."""
    signal.signal(signal.SIGUSR2, _kill_group)
    _die_with(leader, signal.SIGUSR2, prctl)
    if prctl is None:  # no parent-death signal on this platform: poll for the leader instead
        while os.getppid() == leader:
            time.sleep(0.5)
        _kill_group()
    while True:
        signal.pause()


def main(argv: list[str]) -> int:
    runner_pid, command = int(argv[0]), argv[1:]
    prctl = _prctl()
    # A group-wide SIGTERM (the runner's timeout) is meant for the harness; leader and sentinel
    # wait it out. A handler, not SIG_IGN: handlers reset at exec, so the harness still feels it.
    signal.signal(signal.SIGTERM, lambda *_: None)
    if os.getppid() != runner_pid:  # the runner is already gone
        _kill_group()
    leader = os.getpid()
    if os.fork() == 0:
        try:
            _sentinel(leader, prctl)
        finally:
            os._exit(0)
    harness = subprocess.Popen(command, preexec_fn=lambda: _die_with(leader, signal.SIGKILL, prctl))
    code = harness.wait()
    if code < 0:  # mirror a signal death, so the runner sees what killed the harness
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
