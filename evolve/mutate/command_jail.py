"""The jail the command operator's agent runs in: the experiments' jail (train_template/jail.py)
with the network on, its working copy as the only writable place, and only the secrets its
operator config names.

An agent that could read the validation split could paste it into train.py, and no judge can
tell memorised text from learned text, so the data cache, the results and the store must not
exist in its view: only the system folders, the interpreter, the agent's own program and the
paths the config lists (`readonly`) do. Secrets never travel in an environment or on a command
line (bwrap's shows in `ps`): each is a file in a private folder bound read-only into the jail,
exported by a shell just before the agent starts.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

JAIL_PATH = Path(__file__).resolve().parents[2] / "train_template" / "jail.py"
# Read each secret file into the variable of its name, then become the agent.
_EXPORT_SECRETS = ('for f in "$0"/*; do [ -f "$f" ] && export "${f##*/}=$(cat "$f")"; done; '
                   'exec "$@"')

log = logging.getLogger(__name__)


@functools.cache
def jail_module() -> ModuleType:
    """train_template/jail.py (stdlib only; the harness imports it by name, we by path)."""
    spec = importlib.util.spec_from_file_location("evolve_template_jail", JAIL_PATH)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the jail from {JAIL_PATH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@functools.cache
def warn_unsandboxed(problem: str) -> None:
    """Say once per process that agents run without the jail, and why."""
    log.warning("the command operator's agent runs WITHOUT a sandbox on this machine (%s): it "
                "can read anything this user can, the data cache included; set the "
                "operator's sandbox: require to refuse instead", problem)


def secret_values(names: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The values of the named secrets; a missing one is a configuration error naming it."""
    missing = [name for name in names if not environ.get(name)]
    if missing:
        raise ValueError(f"the command operator's secrets {', '.join(missing)} are not set in "
                         "the environment; set them, or remove them from its `secrets`")
    return {name: environ[name] for name in names}


def write_secrets(values: Mapping[str, str], folder: Path) -> None:
    """One 0600 file per secret in `folder` (a private 0700 temporary directory)."""
    for name, value in values.items():
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(value)


def _install_root(path: Path, guarded: Sequence[Path]) -> Path:
    """What to bind for a program file: its installation (the folder above bin/, the folder
    holding node_modules/), or the file alone where that folder would hold a guarded one."""
    root = path.parent
    if root.name == "bin":
        root = root.parent
    elif "node_modules" in path.parts:
        root = Path(*path.parts[:path.parts.index("node_modules")])
    if root == Path("/") or any(guard == root or root in guard.parents for guard in guarded):
        return path
    return root


def _interpreter(path: Path, search_path: str) -> Path | None:
    """The program a script's shebang names (`#!/usr/bin/env node` -> node on PATH)."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline(256).decode(errors="replace")
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    words = first[2:].split()
    if not words:
        return None
    name = words[1] if Path(words[0]).name == "env" and len(words) > 1 else words[0]
    found = shutil.which(name, path=search_path)
    return Path(found) if found else None


def program_paths(program: str, search_path: str, work: Path) -> list[Path]:
    """What the agent's program needs visible: its file and installation, and those of the
    interpreter its shebang names. Never a folder holding $HOME or the working copy."""
    guarded = [Path.home().resolve(), work.resolve(), Path.cwd().resolve()]
    found = shutil.which(program, path=search_path) if os.sep not in program else None
    if found is None:
        return []  # in the working copy (./agent.sh), or missing (the caller says so)
    paths: list[Path] = []
    for candidate in (Path(found), _interpreter(Path(os.path.realpath(found)), search_path)):
        if candidate is None:
            continue
        for path in {candidate.absolute(), Path(os.path.realpath(candidate))}:
            if path.exists() and not stat.S_ISDIR(path.stat().st_mode):
                paths.append(_install_root(path, guarded))
    return sorted(set(paths))


def jailed_command(argv: list[str], *, work: Path, env: Mapping[str, str],
                   secrets_folder: Path | None, readonly: Sequence[Path]) -> list[str]:
    """`argv` in the jail: `work` writable, the network on, HOME a private /tmp, the secrets
    (files in `secrets_folder`) exported just before the agent starts."""
    jail = jail_module()
    inside = {**env, "HOME": "/tmp", "TMPDIR": "/tmp"}
    paths = [*readonly, *program_paths(argv[0], env.get("PATH", os.defpath), work)]
    inner = list(argv)
    if secrets_folder is not None:
        inner = ["/bin/sh", "-c", _EXPORT_SECRETS, str(secrets_folder), *argv]
        paths.append(secrets_folder)
    return jail.jailed(inner, workdir=work, readonly=sorted(set(paths)), env=inside,
                       network=True)
