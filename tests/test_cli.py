"""The user's surface, end to end: `evolve run / resume / status` as real subprocesses on the
session's Ray head (reached through RAY_ADDRESS), with real SQLite and real harness runs."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SLEEP_TEMPLATE = REPO / "tests" / "fixtures" / "sleep_template"
EVOLVE = [sys.executable, "-m", "evolve.run.cli"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["COLUMNS"] = "200"
    return env


def _sleep_config(tmp_path: Path, **budget) -> Path:
    config = {
        "name": "cli-test",
        "template": str(SLEEP_TEMPLATE),
        "profile": "cpu-micro",
        "population": {"size": 3, "islands": 2, "migration_interval": 4},
        "selection": {"strategy": "tournament", "tournament_size": 2},
        "mutation": {"operators": [{"kind": "heuristic", "weight": 1.0}], "lookahead": 1},
        "workers": {"count": 2, "gpus_per_worker": 0, "cpus_per_worker": 1,
                    "timeout_grace_s": 60},
        "budget": budget,
        "output": {"results_dir": str(tmp_path / "results")},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run_dir(tmp_path: Path) -> Path:
    dirs = sorted((tmp_path / "results").glob("cli-test-*"))
    assert len(dirs) == 1, dirs
    return dirs[0]


def _tsv_rows(run_dir: Path) -> list[list[str]]:
    lines = (run_dir / "results.tsv").read_text().splitlines()
    return [line.split("\t") for line in lines[1:]]


def _finished_ids(run_dir: Path) -> list[str]:
    with sqlite3.connect(f"file:{run_dir / 'store.sqlite'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT id FROM candidates WHERE status IN ('done','crashed','timed_out')"
                          " AND mutator != 'migration'").fetchall()
    return [row[0] for row in rows]


def _wait_for_rows(tmp_path: Path, process: subprocess.Popen, n: int, timeout: float = 180) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        dirs = list((tmp_path / "results").glob("cli-test-*"))
        if dirs and (dirs[0] / "results.tsv").exists() and len(_tsv_rows(dirs[0])) >= n:
            return dirs[0]
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} results after {timeout}s")


@pytest.mark.slow
def test_default_demo_runs_on_ray_and_improves_or_keeps_the_baseline(ray_address, tmp_path):
    """The README's first command, with a small budget: cpu-tiny, synthetic data, heuristic."""
    result = subprocess.run(
        [*EVOLVE, "run", "configs/default.yaml", "--set", "budget.max_experiments=3",
         "--set", f"output.results_dir={tmp_path / 'results'}", "--set", "name=cli-test"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stopped: max_experiments reached (3)" in result.stdout
    run_dir = _run_dir(tmp_path)
    rows = _tsv_rows(run_dir)
    assert [row[0] for row in rows][0] == "root" and len(rows) == 3
    assert all(row[3] in ("keep", "discard") for row in rows), rows
    scores = [float(row[1]) for row in rows]
    assert all(0.9 < s < 8 for s in scores)
    assert rows[0][3] == "keep"
    assert sorted(_finished_ids(run_dir)) == sorted(row[0] for row in rows)
    for row in rows[1:]:
        assert "\n--- a/train.py\n" in (run_dir / "candidates" / row[0] / "diff.patch").read_text()
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["budget"]["max_experiments"] == 3 and config["profile"] == "cpu-tiny"


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_keeps_every_result_once(ray_address, tmp_path):
    config = _sleep_config(tmp_path, max_experiments=12)
    process = subprocess.Popen([*EVOLVE, "run", str(config)], cwd=tmp_path, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dir = _wait_for_rows(tmp_path, process, 4)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    before = {row[0]: row for row in _tsv_rows(run_dir)}
    assert len(before) >= 4

    resumed = subprocess.run([*EVOLVE, "resume", str(run_dir)], cwd=tmp_path, env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    rows = _tsv_rows(run_dir)
    ids = [row[0] for row in rows]
    assert len(ids) == len(set(ids)) == 12, ids
    assert sorted(ids) == sorted(_finished_ids(run_dir))
    after = {row[0]: row for row in rows}
    for cid, row in before.items():  # nothing finished before the kill is lost or changed
        assert after[cid][:5] == row[:5]

    status = subprocess.run([*EVOLVE, "status", str(run_dir)], env=_env(), capture_output=True,
                            text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert "best lineage" in status.stdout and "finished 12" in status.stdout


@pytest.mark.slow
def test_sigint_stops_cleanly_and_resume_continues(ray_address, tmp_path):
    config = _sleep_config(tmp_path, max_experiments=40)
    process = subprocess.Popen([*EVOLVE, "run", str(config)], cwd=tmp_path, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dir = _wait_for_rows(tmp_path, process, 2)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert "stopped:" in output and "evolve resume" in output
    # the first Ctrl-C says what it does and that a second one stops at once
    assert "stopping: no new experiments; running ones finish — Ctrl-C again to stop now" in output
    assert "--set budget.max_experiments" not in output  # a user stop is no budget to raise
    finished = len(_tsv_rows(run_dir))
    assert 2 <= finished < 40
    with sqlite3.connect(f"file:{run_dir / 'store.sqlite'}?mode=ro", uri=True) as db:
        running = db.execute("SELECT COUNT(*) FROM candidates WHERE status='running'").fetchone()[0]
    assert running == 0  # the first signal lets running experiments finish

    resumed = subprocess.run([*EVOLVE, "resume", str(run_dir), ], cwd=tmp_path, env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert len(_tsv_rows(run_dir)) == 40


def test_a_bad_config_is_one_clear_line_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: x\ntemplate: {SLEEP_TEMPLATE}\npopulation:\n  size: 0\n")
    result = subprocess.run([*EVOLVE, "run", str(bad), "--set", f"output.results_dir={tmp_path}/r"],
                            env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "population.size" in result.stderr and str(bad) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


def test_status_of_a_missing_run_dir_is_a_clear_error(tmp_path):
    result = subprocess.run([*EVOLVE, "status", str(tmp_path / "nope")], env=_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no such run directory" in result.stderr


def test_text_data_without_text_fails_before_a_run_directory_is_made(tmp_path):
    empty = tmp_path / "emptydir"
    empty.mkdir()
    result = subprocess.run(
        [*EVOLVE, "run", str(_sleep_config(tmp_path, max_experiments=2)),
         "--set", f"data=text:{empty}"],
        env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"(--set data=text:{empty}): data: text:{empty} is an empty folder" in result.stderr
    assert "scored on other data" not in result.stderr
    assert not (tmp_path / "results").exists()


def test_resume_of_a_missing_run_dir_takes_set_and_is_a_clear_error(tmp_path):
    result = subprocess.run([*EVOLVE, "resume", str(tmp_path / "nope"), "--set",
                             "budget.max_experiments=6"], env=_env(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "no such run directory" in result.stderr
