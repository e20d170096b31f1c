"""Blank secrets in this process's *initial* environment block, the one /proc/<pid>/environ shows.

`os.environ.pop` only unlinks the variable from libc's table: the original `NAME=value`
bytes stay on the stack, and any process of the same user (an experiment on a worker of this
node, whose ancestor this driver may be) can read them from /proc/<pid>/environ. The block
is this process's own memory, so it can be overwritten in place; the kernel's view follows.
"""

from __future__ import annotations

import ctypes
import sys
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
