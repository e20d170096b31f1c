"""`workers.network: require`: an experiment never starts with network access.

Real runner, real harness subprocesses. A node without isolation is a node whose PATH has
python but no `unshare` (util-linux); the runner runs in a child process there, since the
probe is cached once per process (`unshare_problem`).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from evolve.config import ConfigError, config_from_dict
from evolve.workers.network import unshare_problem
from evolve.workers.runner import RunRequest, TemplateError, experiment_dir, run_candidate

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "tests" / "fixtures" / "sleep_template"
SEED = (TEMPLATE / "train_cpu.py").read_text().replace("SLEEP_S = 0.5 ", "SLEEP_S = 0.01")

# Appended to the seed: runs at import, i.e. only if the experiment was started.
PROBE = """
import pathlib as _pl, socket as _socket
_pl.Path({marker!r}).write_text("started")
print("interfaces:", sorted(name for _, name in _socket.if_nameindex()))
"""

DRIVER = """
import json, sys
from evolve.workers.runner import RunRequest, TemplateError, experiment_dir, run_candidate
request = RunRequest(**json.loads(sys.argv[1]))
try:
    result = run_candidate(request)
except TemplateError as exc:
    print(json.dumps({"refused": str(exc), "laid_out": experiment_dir(request).exists()}))
else:
    print(json.dumps({"outcome": result.outcome, "reason": result.reason,
                      "log": open(result.log_path).read()}))
"""


def _fields(tmp_path: Path, network: str) -> dict:
    marker = tmp_path / f"started-{network}"
    return dict(candidate_id=f"c-{network}", files={"train.py": SEED + PROBE.format(marker=str(marker))},
                template_dir=str(TEMPLATE), profile="cpu-micro", data="synthetic", seed=0,
                timeout_s=120.0, work_root=str(tmp_path / "work"),
                cache_dir=str(tmp_path / "cache"), network=network)


def _on_node_without_unshare(tmp_path: Path, network: str) -> dict:
    """Run the runner in a process whose PATH has python but no unshare."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("python", "python3"):
        if not (bin_dir / name).exists():
            (bin_dir / name).symlink_to(sys.executable)
    env = dict(os.environ, PATH=str(bin_dir))
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(_fields(tmp_path, network))],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_require_refuses_to_start_where_the_node_cannot_isolate(tmp_path):
    answer = _on_node_without_unshare(tmp_path, "require")
    reason = answer["refused"]
    assert reason.startswith("network isolation required (workers.network: require) but "
                             f"unavailable on node {platform.node()}: no unshare binary")
    assert "workers.network: isolate" in reason  # what the user can do about it
    assert not answer["laid_out"]  # no experiment directory, nothing of the candidate ran
    assert not (tmp_path / "started-require").exists()


def test_isolate_falls_back_to_the_network_and_says_so_in_the_run_log(tmp_path):
    answer = _on_node_without_unshare(tmp_path, "isolate")
    assert answer["outcome"] == "done", answer
    first_line = answer["log"].splitlines()[0]
    assert first_line.startswith("network: NOT isolated (no unshare binary")
    assert (tmp_path / "started-isolate").read_text() == "started"


def test_require_runs_isolated_where_the_node_allows_it(tmp_path):
    unshare_problem.cache_clear()  # probe this process's own PATH
    problem = unshare_problem()
    request = RunRequest(**_fields(tmp_path, "require"))
    if problem:  # a CI box without user namespaces: refused, for the reason the probe found
        with pytest.raises(TemplateError, match="workers.network: require") as refused:
            run_candidate(request)
        assert problem in str(refused.value)
        assert not experiment_dir(request).exists()
        return
    result = run_candidate(request)
    assert result.outcome == "done", result.reason
    log = Path(result.log_path).read_text()
    assert log.splitlines()[0].startswith("network: isolated (workers.network: require;")
    assert "interfaces: ['lo']" in log  # its own namespace: loopback only
    assert (tmp_path / "started-require").exists()


def test_the_config_accepts_require_and_names_the_choices_otherwise():
    base = {"name": "t", "template": str(TEMPLATE)}
    assert config_from_dict({**base, "workers": {"network": "require"}}).workers.network == "require"
    with pytest.raises(ConfigError) as bad:
        config_from_dict({**base, "workers": {"network": "deny"}})
    assert "require" in str(bad.value) and "isolate" in str(bad.value)
