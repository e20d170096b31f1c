"""Exact bounds where the node gives us cgroups: one group per experiment, whose memory limit
makes the kernel's OOM killer act inside that group only, and whose pids limit stops a fork
bomb at the limit (root included, whom RLIMIT_NPROC exempts).

cgroup v2 (one unified tree) where our own group delegates the memory and pids controllers to
sub-groups; cgroup v1 where the memory and pids hierarchies are mounted writable (some
container runtimes). Elsewhere `cgroup_problem()` says why, and the watchdog alone bounds the
experiment. Standalone (stdlib only), like jail.py.

    group = ExperimentCgroup.create("exp-42", limits)      # raises CgroupUnavailable
    process = subprocess.Popen(jailed(...), preexec_fn=group.enter)
    Watchdog(process.pid, limits, cgroup=group).start()
    ...
    group.remove()
"""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

ROOT = Path("/sys/fs/cgroup")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class CgroupUnavailable(RuntimeError):
    """No writable cgroup with memory and pids here; the message says why."""


def _own_groups() -> dict[str, str]:
    """Our cgroup per controller ("" for the v2 unified tree), from /proc/self/cgroup."""
    groups: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return groups
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            groups[name] = path
    return groups


def _v2_base() -> Path:
    """Our v2 group, ready to hold sub-groups with memory and pids; else CgroupUnavailable."""
    if not (ROOT / "cgroup.controllers").is_file():
        raise CgroupUnavailable("no cgroup v2 tree at /sys/fs/cgroup")
    base = ROOT / _own_groups().get("", "/").lstrip("/")
    controllers = (base / "cgroup.controllers").read_text().split()
    missing = {"memory", "pids"} - set(controllers)
    if missing:
        raise CgroupUnavailable(f"cgroup v2 group {base} is not given the "
                                f"{' and '.join(sorted(missing))} controller(s)")
    control = base / "cgroup.subtree_control"
    if not {"memory", "pids"} <= set(control.read_text().split()):
        try:
            control.write_text("+memory +pids")
        except OSError as exc:
            raise CgroupUnavailable(
                f"cannot delegate memory and pids below cgroup v2 group {base} ({exc.strerror}); "
                "start the worker in a delegated group (systemd: Delegate=yes)") from exc
    return base


def _v1_bases() -> tuple[Path, Path]:
    """Our memory and pids groups in writable v1 hierarchies; else CgroupUnavailable."""
    groups = _own_groups()
    bases = []
    for controller in ("memory", "pids"):
        if controller not in groups or not (ROOT / controller).is_dir():
            raise CgroupUnavailable(f"no cgroup v1 {controller} hierarchy")
        base = ROOT / controller / groups[controller].lstrip("/")
        if not os.access(base, os.W_OK):
            raise CgroupUnavailable(f"cgroup v1 group {base} is not writable")
        bases.append(base)
    return bases[0], bases[1]


@dataclass
class ExperimentCgroup:
    """The cgroup(s) of one experiment: one folder on v2; a memory and a pids folder on v1."""

    memory: Path
    pids: Path
    version: int
    max_rss_bytes: int

    @classmethod
    def create(cls, name: str, limits) -> ExperimentCgroup:
        """A fresh group `evolve-<name>` under ours with `limits` (a jail.ResourceLimits)."""
        if not _NAME.match(name):
            raise ValueError(f"cgroup name {name!r}: letters, digits, '_', '.', '-' only")
        try:
            base = _v2_base()
            group = cls(base / f"evolve-{name}", base / f"evolve-{name}", 2,
                        limits.max_rss_bytes)
        except (CgroupUnavailable, OSError) as v2_problem:
            try:
                memory, pids = _v1_bases()
            except (CgroupUnavailable, OSError) as v1_problem:
                raise CgroupUnavailable(f"{v2_problem}; {v1_problem}") from None
            group = cls(memory / f"evolve-{name}", pids / f"evolve-{name}", 1,
                        limits.max_rss_bytes)
        try:
            group._configure(limits)
        except OSError as exc:
            group.remove()
            raise CgroupUnavailable(f"cannot set limits in {group.memory}: {exc}") from exc
        return group

    def _configure(self, limits) -> None:
        for folder in {self.memory, self.pids}:
            folder.mkdir(exist_ok=True)
        if self.version == 2:
            (self.memory / "memory.max").write_text(str(limits.max_rss_bytes))
            if (self.memory / "memory.swap.max").exists():
                (self.memory / "memory.swap.max").write_text("0")  # no escape into swap
            (self.memory / "memory.oom.group").write_text("1")  # the OOM killer takes it all
        else:
            (self.memory / "memory.limit_in_bytes").write_text(str(limits.max_rss_bytes))
            memsw = self.memory / "memory.memsw.limit_in_bytes"
            if memsw.exists():
                memsw.write_text(str(limits.max_rss_bytes))
        (self.pids / "pids.max").write_text(str(limits.max_processes))

    def enter(self) -> None:
        """Move the calling process in (a subprocess preexec_fn: before bwrap starts, so
        everything it starts is in the group)."""
        for folder in {self.memory, self.pids}:
            with open(folder / "cgroup.procs", "w") as procs:
                procs.write("0")

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer has killed in this group."""
        source = self.memory / ("memory.events" if self.version == 2 else "memory.oom_control")
        try:
            for line in source.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def members(self) -> list[int]:
        pids: set[int] = set()
        for folder in {self.memory, self.pids}:
            try:
                pids |= {int(pid) for pid in (folder / "cgroup.procs").read_text().split()}
            except OSError:
                pass
        return sorted(pids)

    def remove(self) -> None:
        """Kill whatever is left in the group and delete it (a group must be empty to go)."""
        deadline = time.monotonic() + 10.0
        while (left := self.members()) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.02)
        for folder in {self.memory, self.pids}:
            for _ in range(50):  # rmdir fails with EBUSY until the last exit is accounted
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def cgroup_problem() -> str | None:
    """None when experiments get a cgroup of their own here, else why not (one line)."""
    probe = SimpleNamespace(max_rss_bytes=1 << 30, max_processes=64)
    try:
        ExperimentCgroup.create(f"probe-{os.getpid()}", probe).remove()
    except CgroupUnavailable as exc:
        return str(exc)
    return None
