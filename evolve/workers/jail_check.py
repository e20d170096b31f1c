"""`workers.sandbox: require | warn`: whether the template's jail works on this node, and what a
run's score is marked with.

The jail itself is the harness's (the template's `jail.py`, bubblewrap): the worker asks the
pinned harness's own `sandbox_problem()` in a child process, once per process, so the answer is
the one the harness will get. `require` refuses to start anything where the jail does not work
(`SandboxUnavailable`: the node's fault, never the candidate's, as `workers.network: require`);
`warn` runs and marks every score of such a node unsandboxed. A harness that does not say it
sandboxed a run (one from before the jail) is taken at its silence: unsandboxed.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from evolve.workers.pristine import files_hash, pinned_harness, write_harness
from evolve.workers.sandbox import scrubbed_env

MODES = ("warn", "require")
JAIL_MODULE = "jail.py"
PROBE_TIMEOUT_S = 60.0
NO_JAIL = "the template has no jail (jail.py): its harness runs candidates unsandboxed"
NOT_REPORTED = ("the harness did not report a sandbox (its result has no 'sandboxed' field: a "
                "harness from before the jail)")
# Environment variables the jail's probe depends on (which bwrap it finds): part of the cache key.
_PROBE_ENV = ("PATH", "EVOLVE_BWRAP", "EVOLVE_BWRAP_WHEEL")

_PROBE = r"""
import json, sys
sys.path.insert(0, ".")
import jail
print(json.dumps(jail.sandbox_problem() or ""))
"""


class SandboxUnavailable(RuntimeError):
    """`workers.sandbox: require` on a node where the jail does not work: nothing starts here."""


def jail_problem(template_dir: str | Path, expected_hash: str = "") -> str:
    """Why the pinned harness's jail cannot run on this node ("" when it can)."""
    files = pinned_harness(template_dir, expected_hash)
    if JAIL_MODULE not in files:
        return NO_JAIL
    env_key = tuple(os.environ.get(name, "") for name in _PROBE_ENV)
    return _probe(files_hash(files), env_key, str(template_dir), expected_hash)


@functools.lru_cache(maxsize=8)
def _probe(harness: str, env_key: tuple[str, ...], template_dir: str, expected_hash: str) -> str:
    """Run the harness's `jail.sandbox_problem()` from a scratch copy of the pinned harness."""
    del harness, env_key  # the cache key: another harness or PATH probes again
    env = scrubbed_env(os.environ, threads=1, seed=0)
    with tempfile.TemporaryDirectory(prefix="evolve-jail-probe-") as scratch:
        write_harness(pinned_harness(template_dir, expected_hash), Path(scratch))
        try:
            done = subprocess.run([sys.executable, "-c", _PROBE], cwd=scratch, env=env,
                                  capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                                  check=False, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"the jail probe could not run: {exc}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return f"the jail probe failed: {last[:300]}"
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return f"the jail probe said nothing readable: {done.stdout[-200:]!r}"
    return " ".join(str(answer).split())[:300]


def check_sandbox(mode: str, template_dir: str | Path, expected_hash: str = "") -> str:
    """The jail's problem on this node ("" = it works); under `require` a problem raises
    SandboxUnavailable naming the node, the cause and what to do."""
    if mode not in MODES:
        raise ValueError(f"workers.sandbox must be one of {', '.join(MODES)}, not {mode!r}")
    problem = jail_problem(template_dir, expected_hash)
    if problem and mode == "require":
        raise SandboxUnavailable(
            f"sandbox required (workers.sandbox: require) but unavailable on node "
            f"{platform.node() or 'localhost'}: {problem}; make bubblewrap work there "
            "(docs/threat-model.md), or set workers.sandbox: warn to run such nodes with "
            "their scores marked unsandboxed")
    return problem


def log_line(mode: str, problem: str) -> str:
    """The run log's line about the sandbox (beside the network's)."""
    if problem:
        return (f"sandbox: NOT available ({problem}); this run's score is marked unsandboxed "
                f"(workers.sandbox: {mode})")
    return f"sandbox: the harness's jail works on this node (workers.sandbox: {mode})"


def score_mark(result: Mapping[str, object], probe_problem: str) -> tuple[bool, str]:
    """(sandboxed, why not) of a finished run: sandboxed only when the harness says so and the
    worker's own probe of the same jail agrees; otherwise the harness's reason, the probe's,
    or the harness's silence."""
    sandboxed = result.get("sandboxed")
    if sandboxed is True and not probe_problem:
        return True, ""
    said = result.get("sandbox_problem")
    if sandboxed is True:
        return False, probe_problem
    if sandboxed is False:
        reason = said if isinstance(said, str) and said.strip() else probe_problem
        return False, " ".join((reason or "the harness ran it unsandboxed").split())[:300]
    return False, probe_problem or NOT_REPORTED
