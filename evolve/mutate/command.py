"""The command mutator: any external coding agent edits a copy of the parent's directory.

The command runs in a fresh temporary directory holding the harness and the parent's
mutable files, with the prompt in PROMPT.md (its path also in $EVOLVE_PROMPT_FILE), under a
time limit, in the jail of `evolve.mutate.command_jail` (that directory its only writable
place, no data cache, results or store in its view, the network on, only the secrets its
config names). It is started like an experiment
(`evolve.workers.sandbox.start_in_group`): in its own process group under a leader that dies
with the controller and takes everything the command started with it. What it changes in the
mutable files is the child; changing anything else rejects the child.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from evolve.mutate import command_jail
from evolve.mutate.base import MutationContext, Proposal, unified_diff
from evolve.mutate.edit_format import parse_answer
from evolve.mutate.kinds import CommandOperator
from evolve.mutate.prompt import PromptLimits, build_command_prompt
from evolve.mutate.registry import OperatorFacts
from evolve.workers.sandbox import kill_group, start_in_group, without_secrets

PROMPT_FILE = "PROMPT.md"
DESCRIPTION_FILE = "DESCRIPTION.md"
_OUTPUT_LIMIT = 20_000
_POLL_S = 0.2  # longest pause between checks on a running command


def scrubbed_environment(environ: Mapping[str, str], keep: Sequence[str] = ()) -> dict[str, str]:
    """The environment without anything that looks like a secret, except names in `keep`
    (the same rule as for experiments: `evolve.workers.sandbox.is_secret_name`)."""
    return without_secrets(environ, keep)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class CommandMutator:
    """Runs `argv` (e.g. a coding-agent CLI); `{prompt_file}` and `{dir}` in it are filled in."""

    name = "command"

    def __init__(self, op: CommandOperator, facts: OperatorFacts | None = None, *,
                 keep_env: Sequence[str] = (), limits: PromptLimits | None = None,
                 kill_grace_s: float = 5.0) -> None:
        """`op` is its config section (argv, timeout, secrets, read-only paths, sandbox mode),
        `facts` the run's (the template folder); the keywords are seams for tests."""
        facts = facts if facts is not None else OperatorFacts()
        self.argv = list(op.argv)
        # Read now: the run takes every secret out of the environment once operators are built.
        self.secrets = command_jail.secret_values(op.secrets, os.environ)
        self.readonly = [Path(path).expanduser().absolute() for path in op.readonly]
        self.sandbox = op.sandbox
        self.template_dir = Path(facts.template_dir) if facts.template_dir else None
        self.timeout_s = op.timeout_s
        self.keep_env = tuple(keep_env)
        self.limits = limits or PromptLimits()
        self.kill_grace_s = kill_grace_s
        self.model = ""

    async def propose(self, context: MutationContext) -> Proposal:
        try:
            return await self._propose(context)
        except Exception as error:  # noqa: BLE001 - a mutator must never crash the run
            return self._error(f"command mutator failed: {type(error).__name__}: {error}")

    def _error(self, message: str, raw: str = "") -> Proposal:
        return Proposal(files={}, description="", rationale="", mutator=self.name,
                        raw_answer=raw, error=message)

    async def _propose(self, context: MutationContext) -> Proposal:
        mutable = list(context.mutable_files)
        original = {name: context.parent.files.get(name, "") for name in mutable}
        with tempfile.TemporaryDirectory(prefix="evolve-command-") as tmp:
            work = Path(tmp)
            if self.template_dir is not None:
                shutil.copytree(self.template_dir, work, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", ".git"))
            for name, source in original.items():
                (work / name).parent.mkdir(parents=True, exist_ok=True)
                (work / name).write_text(source)
            prompt_path = work / PROMPT_FILE
            prompt_path.write_text(build_command_prompt(context, self.limits))
            fixed = {p.relative_to(work).as_posix(): _digest(p) for p in work.rglob("*")
                     if p.is_file() and p.relative_to(work).as_posix() not in mutable
                     and p.name != PROMPT_FILE}
            code, output = await self._run(work, prompt_path)
            tail = output[-_OUTPUT_LIMIT:]
            if code is None:
                return self._error(f"the command ran past its {self.timeout_s:g}s limit and "
                                   "was stopped", tail)
            if code != 0:
                last = " | ".join(tail.strip().splitlines()[-3:])
                return self._error(f"the command exited with code {code}: {last[:500]}", tail)
            touched = sorted(name for name, digest in fixed.items()
                             if not (work / name).is_file() or _digest(work / name) != digest)
            if touched:
                return self._error(f"the command changed {', '.join(touched)}; only "
                                   f"{', '.join(mutable)} may change", tail)
            files = {}
            for name in mutable:
                path = work / name
                if not path.is_file():
                    return self._error(f"the command deleted {name}", tail)
                files[name] = path.read_text(errors="replace")
            if files == original:
                return self._error(f"the command made no change to {', '.join(mutable)}", tail)
            notes = work / DESCRIPTION_FILE
            answer = notes.read_text(errors="replace") if notes.is_file() else tail
        parsed = parse_answer(answer, mutable)
        description = parsed.description or f"edit by {Path(self.argv[0]).name}"
        return Proposal(files=files, description=description, rationale=parsed.rationale,
                        mutator=self.name, raw_answer=tail,
                        applied_edit=unified_diff(original, files))

    async def _run(self, work: Path, prompt_path: Path) -> tuple[int | None, str]:
        """Run the command under the experiments' group leader; (exit code or None on timeout,
        the tail of its output).

        The leader dies with this process (parent-death SIGKILL) and then kills everything
        the command started, so a controller killed mid-proposal leaves no agent behind.
        """
        argv = [arg.replace("{prompt_file}", str(prompt_path)).replace("{dir}", str(work))
                for arg in self.argv]
        env = scrubbed_environment(os.environ, self.keep_env)
        env["EVOLVE_PROMPT_FILE"] = str(prompt_path)
        _check_executable(argv[0], env.get("PATH", os.defpath), work)
        problem = await asyncio.to_thread(command_jail.jail_module().sandbox_problem)
        if problem is not None and self.sandbox == "require":
            raise RuntimeError(f"the command operator requires a sandbox (sandbox: require) "
                               f"and this machine has none: {problem}")
        with tempfile.TemporaryFile(prefix="evolve-command-output-") as log, \
                tempfile.TemporaryDirectory(prefix="evolve-command-secrets-") as secrets:
            if problem is None:
                folder = Path(secrets) if self.secrets else None
                command_jail.write_secrets(self.secrets, Path(secrets))
                command = command_jail.jailed_command(
                    argv, work=work, env=env, secrets_folder=folder, readonly=self.readonly)
                env = {"PATH": env.get("PATH", os.defpath)}  # bwrap starts with none anyway
            else:
                command_jail.warn_unsandboxed(problem)
                command, env = argv, {**env, **self.secrets}
            # Started on the event loop's own thread, not in an executor: the parent-death
            # signal fires when the thread that forked the leader ends, not the process.
            process = start_in_group(command, cwd=work, env=env, log=log)
            try:
                code = await self._wait(process)
            finally:  # on timeout, error or cancellation: leave nothing of the command running
                await asyncio.to_thread(kill_group, process, grace_s=self.kill_grace_s)
            return code, _tail(log)

    async def _wait(self, process: subprocess.Popen) -> int | None:
        """The command's exit code, or None once it has run past the time limit."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        delay = 0.01
        while (code := process.poll()) is None:
            left = deadline - loop.time()
            if left <= 0:
                return None
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, _POLL_S)
        return code


def _check_executable(program: str, search_path: str, cwd: Path) -> None:
    """Raise what exec would (FileNotFoundError, PermissionError) for a missing program.

    The leader starts the command, so without this a typo'd agent would show up only as
    "exited with code 1" and the leader's message.
    """
    if os.sep in program:
        path = cwd / program
        if not path.is_file():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    elif shutil.which(program, path=search_path) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def _tail(log: IO[bytes]) -> str:
    """The last `_OUTPUT_LIMIT` characters the command wrote (without reading all of it)."""
    log.seek(0, os.SEEK_END)
    log.seek(max(0, log.tell() - 4 * _OUTPUT_LIMIT))
    return log.read().decode(errors="replace")[-_OUTPUT_LIMIT:]
