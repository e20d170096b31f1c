"""The command mutator: any external coding agent edits a copy of the parent's directory.

The command runs in a fresh temporary directory holding the harness and the parent's
mutable files, with the prompt in PROMPT.md (its path also in $EVOLVE_PROMPT_FILE), in its
own process group, under a time limit, with secrets removed from its environment. What it
changes in the mutable files is the child; changing anything else rejects the child.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from evolve.mutate.base import MutationContext, Proposal, unified_diff
from evolve.mutate.edit_format import parse_answer
from evolve.mutate.prompt import PromptLimits, build_command_prompt
from evolve.workers.sandbox import without_secrets

PROMPT_FILE = "PROMPT.md"
DESCRIPTION_FILE = "DESCRIPTION.md"
_OUTPUT_LIMIT = 20_000


def scrubbed_environment(environ: Mapping[str, str], keep: Sequence[str] = ()) -> dict[str, str]:
    """The environment without anything that looks like a secret, except names in `keep`
    (the same rule as for experiments: `evolve.workers.sandbox.is_secret_name`)."""
    return without_secrets(environ, keep)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class CommandMutator:
    """Runs `argv` (e.g. a coding-agent CLI); `{prompt_file}` and `{dir}` in it are filled in."""

    name = "command"

    def __init__(self, argv: Sequence[str], *, template_dir: str | Path | None = None,
                 timeout_s: float = 600.0, keep_env: Sequence[str] = (),
                 limits: PromptLimits | None = None, kill_grace_s: float = 5.0) -> None:
        if not argv:
            raise ValueError("the command operator needs a command (argv)")
        self.argv = list(argv)
        self.template_dir = Path(template_dir) if template_dir else None
        self.timeout_s = timeout_s
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
        """Run the command in its own process group; (exit code or None on timeout, output)."""
        argv = [arg.replace("{prompt_file}", str(prompt_path)).replace("{dir}", str(work))
                for arg in self.argv]
        env = scrubbed_environment(os.environ, self.keep_env)
        env["EVOLVE_PROMPT_FILE"] = str(prompt_path)
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=work, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
        try:
            out, _ = await asyncio.wait_for(process.communicate(), self.timeout_s)
            return process.returncode, out.decode(errors="replace")
        except asyncio.TimeoutError:
            await self._kill(process)
            return None, ""
        finally:  # also on cancellation: never leave the agent (or what it spawned) running
            if process.returncode is None:
                await self._kill(process)
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    async def _kill(self, process: asyncio.subprocess.Process) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                await asyncio.wait_for(process.wait(), self.kill_grace_s)
                return
            except asyncio.TimeoutError:
                continue
