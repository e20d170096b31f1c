"""Network isolation of experiment processes: LLM-written code runs without network access.

Linux lets an unprivileged user enter a new user + network namespace (`unshare -rn`): inside,
only a loopback device that is down exists, so no connection (to the internet, the Ray
cluster, or a server on this machine) can be opened. Where the kernel or the container
forbids unprivileged namespaces, `isolate` falls back to the normal network and says so in
the run's log, while `require` refuses to start the experiment (`IsolationUnavailable`: the
node's fault, never the candidate's); `allow` never isolates (a template that must download
at run time).
"""

from __future__ import annotations

import functools
import platform
import shutil
import subprocess
from dataclasses import dataclass

MODES = ("isolate", "require", "allow")


class IsolationUnavailable(RuntimeError):
    """`workers.network: require` on a node that cannot isolate: no experiment may start here."""


@dataclass(frozen=True)
class Isolation:
    """How to start an experiment: argv prefix, and a line for the run log."""

    prefix: tuple[str, ...]
    note: str

    @property
    def isolated(self) -> bool:
        return bool(self.prefix)


def isolation(mode: str) -> Isolation:
    """The isolation `workers.network: <mode>` gives on this machine; with `require` where
    there is none, raises IsolationUnavailable naming the node and the cause."""
    if mode not in MODES:
        raise ValueError(f"workers.network must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "allow":
        return Isolation((), "network: allowed (workers.network: allow)")
    problem = unshare_problem()
    if problem and mode == "require":
        raise IsolationUnavailable(
            f"network isolation required (workers.network: require) but unavailable on node "
            f"{platform.node() or 'localhost'}: {problem}; enable unprivileged user namespaces "
            "there, or set workers.network: isolate to run such nodes with the network")
    if problem:
        return Isolation((), f"network: NOT isolated ({problem}); the experiment can reach the network")
    return Isolation((_unshare(), "--user", "--map-root-user", "--net"),
                     f"network: isolated (workers.network: {mode}; own network namespace, "
                     "no interfaces up)")


def _unshare() -> str:
    return shutil.which("unshare") or "unshare"


@functools.lru_cache(maxsize=1)
def unshare_problem() -> str:
    """Why `unshare -rn` cannot be used here ("" when it works); probed once per process."""
    binary = shutil.which("unshare")
    if binary is None:
        return "no unshare binary (util-linux) on this node"
    try:
        done = subprocess.run([binary, "--user", "--map-root-user", "--net", "true"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare failed: {exc}"
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return f"unprivileged user namespaces are not allowed here: {detail[:200]}"
    return ""

