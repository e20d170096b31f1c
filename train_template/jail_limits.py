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

import fcntl
import os
import platform
import signal
import sys
import threading
import time
import weakref
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


NS_GET_PARENT = 0xB702  # ioctl on a namespace fd: the fd of its parent (linux/nsfs.h)


def _user_namespace(pid: int) -> int | None:
    """The inode of `pid`'s user namespace."""
    try:
        return os.stat(f"/proc/{pid}/ns/user").st_ino
    except OSError:
        return None


def _in_user_namespace(pid: int, namespace: int) -> bool:
    """Whether `pid` lives in user namespace `namespace` or one nested inside it (bwrap's
    --disable-userns itself puts the command one level further down)."""
    try:
        fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY)
    except OSError:
        return False
    try:
        for _ in range(33):  # the kernel nests at most 32 deep
            if os.fstat(fd).st_ino == namespace:
                return True
            try:
                parent = fcntl.ioctl(fd, NS_GET_PARENT)
            except OSError:  # the initial namespace, or one above ours
                return False
            os.close(fd)
            fd = parent
        return False
    finally:
        os.close(fd)


def _resident(pid: int) -> int:
    """Resident memory of `pid` from statm: cheap, but counts shared pages in every process."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _proportional(pid: int) -> int:
    """Proportional resident memory of `pid` (PSS: a page shared by N processes counts 1/N);
    walks its page tables, so only asked for when the cheap sum is over the limit."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as source:
            for line in source:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return _resident(pid)


def _children(pid: int) -> list[int]:
    """The children of every thread of `pid` (/proc/<pid>/task/<tid>/children)."""
    found: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as children:
                found.extend(int(child) for child in children.read().split())
        except (OSError, ValueError):
            continue
    return found


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


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
        self._namespace: int | None = None
        self._own_pid_namespace: bool | None = None
        # Who the root is: a pid is reused once its process is reaped, and a namespace's inode
        # once it is freed (so an fd pins the jail's namespace while we may scan for it).
        self._root_start = (_stat_fields(root_pid) or [""] * 20)[19]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def members(self) -> list[int]:
        """The jail's processes: every descendant of the root, and every process in the jail's
        user namespace (one that left the tree by double-forking still lives there)."""
        found, frontier = [], [self.root_pid] if self._root_is_ours() else []
        while frontier:
            below = _children(frontier.pop())
            found.extend(below)
            frontier.extend(below)
        if found and self._own_pid_namespace is None:
            self._own_pid_namespace = _pid_namespace(found[0]) not in (
                None, _pid_namespace(self.root_pid))
        grouped = self.cgroup.members() if self.cgroup is not None else []
        if not self._own_pid_namespace:  # orphans may have left the tree: scan every process
            found += self._scan_namespace(found)
        return sorted(set(found) | set(grouped))

    def _scan_namespace(self, tree: list[int]) -> list[int]:
        """Processes in the jail's user namespace (or nested in it), found by a scan of /proc:
        the tree walk is complete only when the jail has a pid namespace, whose init adopts
        its orphans. The jail's namespace is that of the root's first child, which bwrap
        creates in it before anything of the command runs."""
        if self._namespace is None and tree:
            try:
                pin = os.open(f"/proc/{tree[0]}/ns/user", os.O_RDONLY)
            except OSError:
                return []
            inner = os.fstat(pin).st_ino
            if inner == _user_namespace(os.getpid()):
                os.close(pin)
                return []
            self._namespace = inner
            weakref.finalize(self, os.close, pin)
        if self._namespace is None:
            return []
        try:
            entries = [int(name) for name in os.listdir("/proc") if name.isdigit()]
        except OSError:
            return []
        return [pid for pid in entries if _in_user_namespace(pid, self._namespace)
                and not _is_zombie(pid)]

    def usage(self) -> Usage:
        pids = self.members()
        tasks = 0
        for pid in pids:
            fields = _stat_fields(pid)
            tasks += int(fields[17]) if fields and len(fields) > 17 else 1  # num_threads
        tmpfs = _tmpfs_bytes(pids)
        memory = sum(_resident(pid) for pid in pids) + tmpfs
        if memory > self.limits.max_rss_bytes:  # shared pages may be counted N times: look closer
            memory = sum(_proportional(pid) for pid in pids) + tmpfs
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
        self.reap()
        if self.on_kill is not None:
            self.on_kill(self.reason)

    def reap(self) -> None:
        """SIGKILL whatever is left of the jail, giving no reason: after a normal exit, for
        daemons that a shared pid namespace let outlive the root."""
        deadline = time.monotonic() + 10.0
        while True:
            root = [self.root_pid] if self._root_is_ours() else []
            for pid in [*root, *self.members()]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if not self.members() or time.monotonic() > deadline:
                break
            time.sleep(0.02)

    def _root_is_ours(self) -> bool:
        """The root is still the process we watch (not reaped, its pid not reused)."""
        fields = _stat_fields(self.root_pid)
        return fields is not None and len(fields) > 19 and fields[19] == self._root_start

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
