"""Host memory and process count of one jailed experiment: bounded, and over the bound it
alone is killed, with a reason the referee records ("host memory 5.2 GiB over the 4 GiB
limit") — never the worker, the node or another experiment.

Process count: RLIMIT_NPROC, set inside the jail (since Linux 5.14 the kernel counts it per
user namespace, so the limit covers the jail's processes and threads, not every process of
the user on the node). Memory: the `Watchdog`, a thread in the referee that sums the
proportional resident memory (PSS: a page shared by N processes counts 1/N, so DataLoader
workers are not counted N times) of every process in the jail plus what its private /tmp and
/dev/shm hold, and kills the jail when the sum passes the limit. A cgroup v2 memory.max would
be exact, but needs a delegated, writable cgroup that containers and Ray nodes rarely give.

Defaults (`ResourceLimits()`): 85% of the node's memory divided by `experiments_per_node` (1),
4096 processes+threads, 1 GiB of /tmp. Standalone (stdlib only), like jail.py.
"""

from __future__ import annotations

import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

GIB = 1 << 30
DEFAULT_MAX_PROCESSES = 4096  # tasks: torch's thread pools count too
DEFAULT_MAX_TMP_BYTES = 1 * GIB
DEFAULT_SHARE = 0.85  # of the node's memory, kept for experiments; the rest for the OS and Ray

# Run inside the jail before the command: the process-count limit has to be set there, in the
# jail's user namespace, or the kernel would count the user's processes on the whole node.
_NPROC_SHIM = ("import os, resource, sys\n"
               "n = int(sys.argv[1])\n"
               "resource.setrlimit(resource.RLIMIT_NPROC, (n, n))\n"
               "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
               "os.execvp(sys.argv[2], sys.argv[2:])\n")


def node_memory_bytes() -> int:
    """MemTotal of this node (0 where /proc/meminfo is missing)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _nproc_per_namespace() -> bool:
    """Linux >= 5.14 counts RLIMIT_NPROC per user namespace (older kernels per user)."""
    try:
        major, minor = (int(part) for part in platform.release().split(".")[:2])
    except ValueError:
        return False
    return sys.platform.startswith("linux") and (major, minor) >= (5, 14)


@dataclass(frozen=True)
class ResourceLimits:
    """Bounds of one experiment: resident host memory, processes+threads, /tmp size."""

    max_rss_bytes: int = 0  # 0: DEFAULT_SHARE of the node's memory (see `for_node`)
    max_processes: int = DEFAULT_MAX_PROCESSES
    max_tmp_bytes: int = DEFAULT_MAX_TMP_BYTES

    def __post_init__(self) -> None:
        if self.max_rss_bytes == 0:
            object.__setattr__(self, "max_rss_bytes", self.for_node(1).max_rss_bytes)
        if self.max_rss_bytes <= 0 or self.max_processes <= 0 or self.max_tmp_bytes <= 0:
            raise ValueError(f"resource limits must be positive: {self}")

    @classmethod
    def for_node(cls, experiments_per_node: int, **overrides: int) -> ResourceLimits:
        """An equal share of DEFAULT_SHARE of this node's memory per concurrent experiment."""
        total = node_memory_bytes() or 16 * GIB
        share = int(total * DEFAULT_SHARE / max(1, experiments_per_node))
        return cls(max_rss_bytes=overrides.pop("max_rss_bytes", share), **overrides)

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv` started under the process-count limit (set inside the jail)."""
        if not _nproc_per_namespace():
            return argv  # the watchdog alone counts processes on older kernels
        return [sys.executable, "-I", "-S", "-c", _NPROC_SHIM, str(self.max_processes), *argv]


@dataclass(frozen=True)
class Usage:
    """One look at a jail: its processes, their threads, memory (PSS + tmpfs) in bytes."""

    pids: tuple[int, ...]
    tasks: int
    memory_bytes: int


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read().decode(errors="replace")
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # the command name may hold spaces


def _user_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/user")
    except OSError:
        return None


def _memory_of(pid: int) -> int:
    """Proportional resident memory of `pid` (PSS; its RSS where smaps_rollup is unreadable)."""
    for path, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            with open(path) as source:
                for line in source:
                    if line.startswith(key):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue
    return 0


def _tmpfs_bytes(pids: Sequence[int]) -> int:
    """What the jail's private /tmp and /dev/shm hold (memory no process maps any more).

    Read through a member's root; a member still being set up has the host's root, whose
    /tmp is not the jail's, so those whose /tmp is the host's own are passed over."""
    ours = set()
    for folder in ("/", "/tmp", "/dev/shm"):
        try:
            ours.add(os.stat(folder).st_dev)
        except OSError:
            pass
    for pid in pids:
        used, seen = 0, True
        for folder in ("tmp", "dev/shm"):
            try:
                path = f"/proc/{pid}/root/{folder}"
                if os.stat(path).st_dev in ours:
                    seen = False
                    break
                info = os.statvfs(path)
            except OSError:
                seen = False
                break
            used += (info.f_blocks - info.f_bfree) * info.f_frsize
        if seen:
            return used
    return 0


def _size(size: int) -> str:
    """5.2 GiB, 350 MiB."""
    return f"{size / GIB:.1f} GiB" if size >= GIB else f"{size / (1 << 20):.0f} MiB"


class Watchdog:
    """Watches the jail started as `root_pid` (the bwrap process) and kills all of it, alone,
    when it passes its limits; `reason` then says why. Run it in a thread (`start`), or call
    `check` from the referee's own loop."""

    def __init__(self, root_pid: int, limits: ResourceLimits, *, interval_s: float = 0.25,
                 on_kill: Callable[[str], None] | None = None, cgroup: Any = None) -> None:
        self.root_pid = root_pid
        self.cgroup = cgroup  # a jail_cgroup.ExperimentCgroup: its OOM kills are ours to report
        self.limits = limits
        self.interval_s = interval_s
        self.on_kill = on_kill
        self.reason: str | None = None
        self.peak_memory_bytes = 0
        self.peak_tasks = 0
        self._namespace: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def members(self) -> list[int]:
        """The jail's processes: every descendant of the root, and every process in the jail's
        user namespace (one that left the tree by double-forking still lives there)."""
        parents: dict[int, list[int]] = {}
        namespaced: list[int] = []
        try:
            entries = [int(name) for name in os.listdir("/proc") if name.isdigit()]
        except OSError:
            return []
        for pid in entries:
            fields = _stat_fields(pid)
            if fields is None or fields[0] == "Z":
                continue
            parents.setdefault(int(fields[1]), []).append(pid)
            if self._namespace is not None and _user_namespace(pid) == self._namespace:
                namespaced.append(pid)
        found, frontier = [], [self.root_pid]
        while frontier:
            below = parents.get(frontier.pop(), [])
            found.extend(below)
            frontier.extend(below)
        if self._namespace is None and found:
            outside = _user_namespace(os.getpid())
            inner = [ns for ns in map(_user_namespace, found) if ns and ns != outside]
            self._namespace = inner[0] if inner else None
        grouped = self.cgroup.members() if self.cgroup is not None else []
        return sorted(set(found) | set(namespaced) | set(grouped))

    def usage(self) -> Usage:
        pids = self.members()
        tasks = 0
        for pid in pids:
            fields = _stat_fields(pid)
            tasks += int(fields[17]) if fields and len(fields) > 17 else 1  # num_threads
        memory = sum(_memory_of(pid) for pid in pids)
        memory += _tmpfs_bytes(pids)
        return Usage(tuple(pids), tasks, memory)

    def check(self) -> str | None:
        """One look: the reason it killed the jail now, or None while within the limits."""
        usage = self.usage()
        self.peak_memory_bytes = max(self.peak_memory_bytes, usage.memory_bytes)
        self.peak_tasks = max(self.peak_tasks, usage.tasks)
        reason = None
        if self.cgroup is not None and self.cgroup.oom_kills() > 0:
            reason = (f"host memory over the {_size(self.limits.max_rss_bytes)} limit (the "
                      "kernel's OOM killer acted in the experiment's cgroup)")
        elif usage.memory_bytes > self.limits.max_rss_bytes:
            reason = (f"host memory {_size(usage.memory_bytes)} over the "
                      f"{_size(self.limits.max_rss_bytes)} limit")
        elif usage.tasks >= self.limits.max_processes:
            reason = (f"{usage.tasks} processes and threads reached the limit of "
                      f"{self.limits.max_processes}")
        if reason is not None:
            self.kill(reason)
        return reason

    def kill(self, reason: str) -> None:
        """SIGKILL the whole jail, root first (its pid namespace dies with it), until none is
        left; record `reason` before, so whoever sees the exit knows why."""
        if self.reason is None:
            self.reason = reason
        deadline = time.monotonic() + 10.0
        while True:
            for pid in [self.root_pid, *self.members()]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if not self.members() or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if self.on_kill is not None:
            self.on_kill(self.reason)

    def run(self) -> None:
        """Check every `interval_s` until the jail's root has exited, or `stop`."""
        while not self._stop.is_set():
            if _stat_fields(self.root_pid) is None or _is_zombie(self.root_pid):
                self._after_exit()
                return
            if self.check() is not None:
                return
            self._stop.wait(self.interval_s)

    def start(self) -> Watchdog:
        self._thread = threading.Thread(target=self.run, name=f"watchdog-{self.root_pid}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the watch (once the jail's root has exited: then with a last look for why)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if _stat_fields(self.root_pid) is None or _is_zombie(self.root_pid):
            self._after_exit()

    def _after_exit(self) -> None:
        """The root has exited: if the kernel's OOM killer was first, that is the reason."""
        if self.reason is None and self.cgroup is not None and self.cgroup.oom_kills() > 0:
            self.kill(f"host memory over the {_size(self.limits.max_rss_bytes)} limit (the "
                      "kernel's OOM killer acted in the experiment's cgroup)")


def _is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] == "Z"
