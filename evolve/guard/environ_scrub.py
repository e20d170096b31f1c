"""Take secrets out of the driver's environment, before Ray starts, so no process it starts
inherits them and none can read them from /proc/<driver>/environ.

`os.environ.pop` only unlinks the variable from libc's table: the original `NAME=value`
bytes stay on the stack, and any process of the same user (an experiment on a worker of this
node, whose ancestor this driver may be) can read them from /proc/<pid>/environ. The block
is this process's own memory, so it can be overwritten in place; the kernel's view follows.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path


def _env_block() -> tuple[int, int] | None:
    """(start, end) addresses of the initial environment block, from /proc/self/stat."""
    try:
        stat = Path("/proc/self/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    # Fields 50 and 51 of stat(5) (env_start, env_end), counted from 1; `fields` starts at field 3.
    if len(fields) < 49:
        return None
    start, end = int(fields[47]), int(fields[48])
    return (start, end) if 0 < start < end else None


def blank_initial_environ(names: Iterable[str]) -> list[str]:
    """Overwrite the values of `names` in /proc/self/environ with NUL bytes; the names blanked.

    Linux only (elsewhere there is no /proc to read them from); a no-op when absent.
    """
    wanted = {name.encode() for name in names}
    if not wanted or not sys.platform.startswith("linux"):
        return []
    block = _env_block()
    if block is None:
        return []
    start, end = block
    try:
        raw = Path("/proc/self/environ").read_bytes()
    except OSError:
        return []
    if len(raw) > end - start:
        return []  # the block was moved (e.g. by prctl): not ours to write
    blanked: list[str] = []
    offset = 0
    for entry in raw.split(b"\0"):
        name, eq, value = entry.partition(b"=")
        if eq and name in wanted and value:
            address = start + offset + len(name) + 1
            ctypes.memset(address, 0, len(value))
            blanked.append(name.decode())
        offset += len(entry) + 1
    return blanked


# Ray settings whose names look like secrets (`RAY_AUTH*`, `*_KEY`) but whose values are not: a
# mode, a flag, paths to files. The driver's own connection and every Ray process a local
# `ray.init` starts (GCS, raylets, workers: they inherit this environment) read them from the
# environment, so they stay; without them a token-auth or TLS cluster refuses the driver.
RAY_SETTINGS: tuple[str, ...] = (
    "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_ENABLE_K8S_TOKEN_AUTH", "RAY_TLS_SERVER_KEY",
    "RAY_KUBERAY_CLIENT_KEY_PATH",
)
RAY_TOKEN = "RAY_AUTH_TOKEN"


def take_secrets(needed: Iterable[str]) -> dict[str, str]:
    """Remove every variable that could hold a credential (`is_secret_name`, and the names in
    `needed`) from this process's environment, os.environ and /proc/self/environ alike, before
    Ray starts; return the values of `needed` that were set, the only ones kept (in memory).

    Everything else is dropped for good: HF_TOKEN, AWS keys and the like would otherwise sit in
    the environment of every Ray process this driver starts, where an experiment can read them
    from /proc/<ancestor>/environ. A literal RAY_AUTH_TOKEN moves to a private token file
    (see `_token_to_file`); the Ray settings in RAY_SETTINGS stay.
    """
    from evolve.workers.sandbox import is_secret_name

    needed = set(needed)
    removed = [name for name in os.environ
               if name not in RAY_SETTINGS and (name in needed or is_secret_name(name))]
    values = {name: os.environ.pop(name) for name in removed}
    if values.get(RAY_TOKEN):
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(_token_to_file(values[RAY_TOKEN]))
    blank_initial_environ(removed)  # /proc/<driver>/environ would still show them
    return {name: value for name, value in values.items() if name in needed}


def _token_to_file(token: str) -> Path:
    """Write a literal RAY_AUTH_TOKEN to a 0600 file in a 0700 directory, removed at exit.

    Ray reads RAY_AUTH_TOKEN, else the file at RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token; a
    token in the environment would be inherited by every Ray process this driver starts (and
    show in their /proc/<pid>/environ), a path is harmless there. Ray itself mounts a token
    file into containers rather than pass the token by --env, for the same reason. The file,
    like ~/.ray/auth_token, is readable by the same user: this keeps the token out of every
    environment, not out of a determined same-user process's reach (an isolated experiment
    has no network to use it on). Removed at exit, after `ray.shutdown` (registered later, so
    run earlier): processes of a local Ray may read it until then.
    """
    directory = Path(tempfile.mkdtemp(prefix="evolve-ray-auth-"))
    path = directory / "auth_token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return path
