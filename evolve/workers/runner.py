"""Run one candidate: lay out its directory, run the harness under a hard timeout, read the score.

No Ray here: the runner also works alone (on a GPU box without Ray, in tests). A bad
candidate never raises; it comes back as a `RunResult` with outcome crashed, invalid or
timed_out. Only a broken template (the engine's fault, not the candidate's) raises.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from evolve.workers.device import detect_device
from evolve.workers.jail_check import SandboxUnavailable, check_sandbox, log_line, score_mark
from evolve.workers.network import Isolation, IsolationUnavailable, isolation
from evolve.workers.pristine import (
    HarnessChanged,
    harness_changes,
    harness_files,
    pinned_harness,
    write_harness,
)
from evolve.workers.sandbox import kill_group, reap_group, scrubbed_env, start_in_group

if TYPE_CHECKING:
    from evolve.guard.datahash import DataState

HARNESS_ENTRY = "prepare.py"
RESULT_FILE = "result.json"  # the runner's copy of what the harness sent down the result pipe
RESULT_MAX_BYTES = 1 << 20
LOG_FILE = "run.log"
TAIL_LINES = 50
TAIL_MAX_CHARS = 8000


@dataclass(frozen=True)
class RunRequest:
    """Everything needed to run one attempt of one candidate (docs/contracts.md section 3)."""

    candidate_id: str
    files: Mapping[str, str]
    template_dir: str
    profile: str
    data: str
    seed: int
    timeout_s: float
    work_root: str
    splits: tuple[str, ...] = ("val", "test")  # test scored in every run, shown only at the end
    budget_fraction: float = 1.0
    cache_dir: str | None = None
    torch_threads: int = 1
    attempt: int = 1
    network: str = "isolate"     # workers.network: isolate | require | allow (workers/network.py)
    sandbox: str = "warn"        # workers.sandbox: warn | require (workers/jail_check.py)
    data_hash: str = ""          # the controller's data fingerprint ("" = this node's first)
    template_hash: str = ""      # the controller's harness hash ("" = not checked)
    keep_workdir: bool = False   # keep the whole experiment directory (debugging), not just logs


@dataclass(frozen=True)
class RunResult:
    """What one attempt came to; `metrics` holds the harness's result keys when done."""

    candidate_id: str
    outcome: str
    metrics: Mapping[str, float | int | str]
    reason: str
    log_tail: str
    log_path: str
    exit_code: int | None
    started_at: float
    ended_at: float
    device: str

    @property
    def val_bpb(self) -> float | None:
        """The score, when the run is done."""
        value = self.metrics.get("val_bpb")
        return float(value) if isinstance(value, (int, float)) else None


class TemplateError(RuntimeError):
    """The template directory cannot be used: a configuration problem, not the candidate's."""


def experiment_dir(request: RunRequest) -> Path:
    """Where this attempt runs: `<work_root>/<candidate_id>-a<attempt>`."""
    safe_id = re.sub(r"[^A-Za-z0-9_.-]", "_", request.candidate_id) or "candidate"
    return Path(request.work_root) / f"{safe_id}-a{request.attempt}"


def harness_command(request: RunRequest, result_fd: int) -> list[str]:
    """The harness command line of docs/contracts.md section 1; the result comes back on
    `result_fd`, a pipe only the harness's referee holds (never a file the candidate can write)."""
    argv = [
        sys.executable, HARNESS_ENTRY, "run", "--profile", request.profile, "--data", request.data,
        "--seed", str(request.seed), "--result-fd", str(result_fd),
    ]
    if tuple(request.splits) != ("val",):
        argv += ["--splits", ",".join(request.splits)]
    if request.budget_fraction != 1.0:
        argv += ["--budget-fraction", repr(float(request.budget_fraction))]
    if request.cache_dir:
        argv += ["--cache-dir", str(request.cache_dir)]
    return argv


def run_candidate(request: RunRequest) -> RunResult:
    """Run the harness on the candidate in a fresh directory and return what happened."""
    started = time.time()
    directory = experiment_dir(request)
    log_path = directory / LOG_FILE
    sandbox, jail = containment(request)
    data_state = check_inputs(request)
    template_before = _template_files(request)
    problem = materialise(request, directory)
    if problem:
        log_path.write_text(f"error: {problem}\n")
        return _result(request, "invalid", {}, problem, log_path, None, started)

    env = scrubbed_env(os.environ, threads=request.torch_threads, seed=request.seed)
    timed_out = False
    read_end, write_end = os.pipe()
    try:
        with open(log_path, "wb") as log:
            log.write(f"{sandbox.note}\n{log_line(request.sandbox, jail)}\n".encode())
            log.flush()
            try:
                process = start_in_group([*sandbox.prefix, *harness_command(request, write_end)],
                                         cwd=directory, env=env, log=log, pass_fd=write_end)
            except OSError as exc:
                return _result(request, "crashed", {}, f"could not start the harness: {exc}",
                               log_path, None, started)
            finally:
                os.close(write_end)
            reader = ResultReader(read_end)
            try:
                process.wait(timeout=max(0.0, request.timeout_s))
            except subprocess.TimeoutExpired:
                timed_out = True
                kill_group(process)
            finally:
                # Whatever happened (done, timeout, or the runner itself interrupted), nothing of
                # the experiment outlives this call: background children it forked included.
                reap_group(process)
            sent = reader.finish()
    finally:
        os.close(read_end)
    exit_code = process.returncode
    try:
        tampered = changes_after_run(request, directory, data_state, template_before,
                                     jailed=_reports_jailed(sent) and not jail)
        if tampered:  # checked before the result is believed: whatever it says, it is void
            return _result(request, "invalid", {}, tampered, log_path, exit_code, started)
        if timed_out:
            reason = (f"timed out after {request.timeout_s:g} s (wall-clock limit); process "
                      "group killed")
            return _result(request, "timed_out", {}, reason, log_path, exit_code, started)
        _keep_result_copy(directory, sent)
        return _marked(request, _judge(request, sent, log_path, exit_code, started), jail)
    finally:
        if not request.keep_workdir:
            tidy(directory)


class ResultReader:
    """Reads the result pipe while the harness runs (so a large result never blocks it)."""

    def __init__(self, fd: int) -> None:
        self._fd, self._data, self._too_big = fd, bytearray(), False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._fd, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            if len(self._data) + len(chunk) > RESULT_MAX_BYTES:
                self._too_big = True
                return
            self._data += chunk

    def finish(self) -> bytes | None:
        """What arrived (None: too big). The harness is dead by now; a straggler holding the
        write end (it never should) is not waited for beyond a moment."""
        self._thread.join(timeout=2.0)
        return None if self._too_big else bytes(self._data)


def _keep_result_copy(directory: Path, sent: bytes | None) -> None:
    """The experiment folder's result.json is the runner's copy of the pipe, nothing else."""
    target = directory / RESULT_FILE
    target.unlink(missing_ok=True)  # whatever a candidate process left there is not a result
    if sent:
        target.write_bytes(sent)


def containment(request: RunRequest) -> tuple[Isolation, str]:
    """The network isolation and the jail's problem ("" = none) of this node, before anything
    is laid out; a node that cannot give what `require` asks for raises TemplateError."""
    try:
        sandbox = isolation(request.network)
        jail = check_sandbox(request.sandbox, request.template_dir, request.template_hash) \
            if (Path(request.template_dir) / HARNESS_ENTRY).is_file() else ""
    except (IsolationUnavailable, SandboxUnavailable, HarnessChanged) as exc:
        raise TemplateError(str(exc)) from exc
    return sandbox, jail


def tidy(directory: Path) -> None:
    """Keep only the log and the result file of a finished attempt.

    The harness copy and the candidate's files (kept in the run's candidates/ folder) and
    whatever the child wrote (checkpoints, caches) would otherwise pile up on every worker
    node, experiment after experiment, through a night of runs.
    """
    for entry in directory.iterdir():
        if entry.name in (LOG_FILE, RESULT_FILE):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def check_inputs(request: RunRequest) -> DataState | None:
    """The harness and the data are the controller's, untouched by earlier runs, or raise
    (TemplateError): scoring against anything else would make scores incomparable."""
    from evolve.guard.datahash import DataMismatch, ensure_data

    if not (Path(request.template_dir) / HARNESS_ENTRY).is_file():
        return None  # not a harness at all: materialise says so
    try:
        pinned_harness(request.template_dir, request.template_hash)
        return ensure_data(request.template_dir, request.profile, request.data,
                           request.cache_dir, expected=request.data_hash)
    except (HarnessChanged, DataMismatch) as exc:
        raise TemplateError(str(exc)) from exc


def _template_files(request: RunRequest) -> dict[str, bytes]:
    """The template's harness files on disk as a run starts (compared after it)."""
    return harness_files(request.template_dir) if Path(request.template_dir).is_dir() else {}


def _reports_jailed(sent: bytes | None) -> bool:
    """The referee (trusted, writing down a pipe no candidate holds) says its roles ran jailed."""
    try:
        return json.loads(sent or b"{}").get("sandboxed") is True
    except (ValueError, AttributeError):
        return False


def changes_after_run(request: RunRequest, directory: Path, data_state: DataState | None,
                      template_before: dict[str, bytes], *, jailed: bool = False) -> str:
    """What changed while the run went on that outlives it or scores it (the data cache, the
    template, the harness copy in its folder), as an invalid run's reason; "" when nothing.
    The data cache is rebuilt at once; later runs are laid out from the pinned harness."""
    from evolve.guard.datahash import data_changes

    template = Path(request.template_dir)
    pinned = pinned_harness(template)
    found = []
    data = data_changes(data_state, template, request.profile, request.data,
                        request.cache_dir) if data_state is not None else []
    if data:
        found.append(f"the data cache changed during the run ({_names(data)}); it was rebuilt")
    in_folder = harness_changes(pinned, directory)
    if in_folder:
        found.append(f"the harness in the experiment folder changed during the run "
                     f"({_names(in_folder)})")
    # A jailed run cannot see the template: a change to it meanwhile is the node's (a user
    # editing it, a stale copy), not this candidate's; the run itself used the pinned harness.
    in_template = [] if jailed else harness_changes(template_before, template)
    if in_template:
        found.append(f"the template {template} changed during the run ({_names(in_template)}); "
                     "later runs are laid out from the worker's pinned copy")
    return "; ".join(found)


def _names(paths: list[str], shown: int = 5) -> str:
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return ", ".join(paths[:shown]) + more


def _marked(request: RunRequest, result: RunResult, probe_problem: str) -> RunResult:
    """A done run's metrics say whether it was sandboxed (and why not); under
    `workers.sandbox: require` an unsandboxed run is the node's problem: refused, not scored."""
    if result.outcome != "done":
        return result
    sandboxed, problem = score_mark(result.metrics, probe_problem)
    if not sandboxed and request.sandbox == "require":
        raise TemplateError(
            f"sandbox required (workers.sandbox: require) but the harness ran the candidate "
            f"unsandboxed on node {platform.node() or 'localhost'}: {problem}")
    metrics = {key: value for key, value in result.metrics.items() if key != "sandbox_problem"}
    metrics["sandboxed"] = sandboxed
    if problem:
        metrics["sandbox_problem"] = problem
    return dataclasses.replace(result, metrics=metrics)


def materialise(request: RunRequest, directory: Path) -> str:
    """Lay out a fresh experiment directory: the pristine harness plus the candidate's files.

    Returns a one-line problem with the candidate's files ("" when fine); raises
    TemplateError when the template itself is unusable.
    """
    template = Path(request.template_dir)
    if not (template / HARNESS_ENTRY).is_file():
        raise TemplateError(f"template {template} has no {HARNESS_ENTRY}: it is not a harness")
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    harness = write_harness(pinned_harness(template, request.template_hash), directory)
    for name, source in request.files.items():
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or not path.parts or "\\" in name:
            return f"candidate file name {name!r} is not a plain relative path"
        if path.parts[0] in harness:
            return f"candidate file {name!r} would overwrite the harness; only mutable files may change"
        target = directory.joinpath(*path.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source)
    return ""


def _judge(request: RunRequest, sent: bytes | None, log_path: Path, exit_code: int | None,
           started: float) -> RunResult:
    """Turn the exit code and the piped result (never the printed log, never a file in the
    experiment folder) into an outcome."""
    result, problem = _parse_result(sent)
    status = result.get("status") if result else None
    harness_reason = str(result.get("reason", "")).strip() if result else ""
    if status == "invalid":
        reason = harness_reason or _reason_from_log(log_path) or "the harness judged the run invalid"
        return _result(request, "invalid", {}, reason, log_path, exit_code, started)
    if status == "ok" and exit_code == 0:
        val_bpb = result.get("val_bpb")
        if isinstance(val_bpb, (int, float)) and not isinstance(val_bpb, bool) and math.isfinite(val_bpb):
            return _result(request, "done", result, "", log_path, exit_code, started)
        problem = f"result file has no finite val_bpb (got {val_bpb!r})"
    if status == "crash" and harness_reason:
        reason = harness_reason
    elif exit_code != 0:
        reason = _reason_from_log(log_path) or _exit_reason(exit_code)
    else:
        reason = problem or _reason_from_log(log_path) or f"the harness reported status {status!r}"
    return _result(request, "crashed", {}, reason, log_path, exit_code, started)


def _parse_result(sent: bytes | None) -> tuple[dict | None, str]:
    """The harness's result JSON from the pipe, or None and why not."""
    if sent is None:
        return None, f"the harness sent a result over {RESULT_MAX_BYTES} bytes"
    if not sent:
        return None, "the harness sent no result"
    try:
        data = json.loads(sent.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"the harness's result is not JSON: {exc}"
    if not isinstance(data, dict):
        return None, "the harness's result is not a JSON object"
    return data, ""


def _exit_reason(exit_code: int | None) -> str:
    if exit_code is None:
        return "the harness did not finish"
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"the harness was killed by {name}{hint}"
    return f"the harness exited with code {exit_code}"


def _reason_from_log(log_path: Path) -> str:
    """The last `error:` line of the log, else the last exception line of a traceback."""
    lines = [line.rstrip() for line in _tail_lines(log_path, 400)]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line[:500]
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("Traceback (most recent call last)"):
            after = [line for line in lines[index + 1:] if line and not line[0].isspace()]
            if after:
                return after[0][:500]
    return ""


def _tail_lines(path: Path, count: int) -> list[str]:
    """The last `count` lines of a (possibly huge) log, read from its end."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 256 * 1024))
            data = handle.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-count:]


def _log_tail(log_path: Path) -> str:
    tail = "\n".join(_tail_lines(log_path, TAIL_LINES))
    return tail[-TAIL_MAX_CHARS:]


def _result(request: RunRequest, outcome: str, metrics: Mapping, reason: str, log_path: Path,
            exit_code: int | None, started: float) -> RunResult:
    device = metrics.get("device") if isinstance(metrics.get("device"), str) else detect_device()
    return RunResult(
        candidate_id=request.candidate_id, outcome=outcome, metrics=dict(metrics),
        reason=" ".join(reason.split())[:500], log_tail=_log_tail(log_path),
        log_path=str(log_path), exit_code=exit_code, started_at=started, ended_at=time.time(),
        device=device,
    )
