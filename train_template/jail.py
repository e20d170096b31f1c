"""STAND-IN until the filesystem jail lands (branch `jail`): same signature, no jail.

jailed() returns argv unchanged and sandbox_problem() says so, so the referee runs its roles
as plain subprocesses and records "sandboxed": false.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def jailed(argv: list[str], *, workdir: Path, readonly: Sequence[Path] = (),
           hidden: Sequence[Path] = (), env: Mapping[str, str],
           share_pid_namespace: bool = False, network: bool = False) -> list[str]:
    """argv wrapped in the jail (the stand-in: unchanged)."""
    return list(argv)


def sandbox_problem() -> str | None:
    """None when the jail works here, else why not (the stand-in: never)."""
    return "no filesystem jail in this harness (stand-in module)"
