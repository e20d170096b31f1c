"""`evolve resume --set`: extending a finished run, refusing changes that would make its stored
results incomparable, and saying at once (before Ray) when there is nothing left to run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evolve.guard.datahash import DataMismatch, DataPrepareError, reference_hashes
from evolve.run.app import Run
from population.store import Store

REPO = Path(__file__).resolve().parent.parent
SLEEP_TEMPLATE = REPO / "tests" / "fixtures" / "sleep_template"
EVOLVE = [sys.executable, "-m", "evolve.run.cli"]
UNREACHABLE_RAY = "127.0.0.1:9"  # a resume that tried to attach here would hang or fail


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", COLUMNS="200", **extra)
    return env


def _config(tmp_path: Path, max_experiments: int) -> Path:
    config = {
        "name": "resume-test", "template": str(SLEEP_TEMPLATE), "profile": "cpu-micro",
        "population": {"size": 2, "islands": 1, "migration_interval": 0},
        "mutation": {"operators": [{"kind": "heuristic"}], "lookahead": 1},
        "workers": {"count": 2, "gpus_per_worker": 0, "cpus_per_worker": 1},
        "budget": {"max_experiments": max_experiments},
        "output": {"results_dir": str(tmp_path / "results")},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _rows(run_dir: Path) -> list[str]:
    return (run_dir / "results.tsv").read_text().splitlines()[1:]


def _evolve(*args: str, cwd: Path, timeout: float = 300, **env: str):
    return subprocess.run([*EVOLVE, *args], cwd=cwd, env=_env(**env), capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_a_finished_run_is_extended_with_resume_set(ray_address, tmp_path):
    done = _evolve("run", str(_config(tmp_path, 2)), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stopped: max_experiments reached (2)" in done.stdout
    (run_dir,) = (tmp_path / "results").glob("resume-test-*")
    assert f"evolve resume {run_dir} --set budget.max_experiments=4" in done.stdout
    assert len(_rows(run_dir)) == 2

    # nothing to run: said at once, naming the budget and the fix, and Ray is never reached
    again = _evolve("resume", str(run_dir), cwd=tmp_path, timeout=60,
                    RAY_ADDRESS=UNREACHABLE_RAY)
    assert again.returncode == 2, again.stdout + again.stderr
    assert "max_experiments reached (2 of 2)" in again.stderr
    assert "--set budget.max_experiments=4" in again.stderr
    assert "Traceback" not in again.stderr
    # an override that does not lift the budget is no different (and is not recorded)
    same = _evolve("resume", str(run_dir), "--set", "budget.max_experiments=2",
                   "--set", "workers.count=1", cwd=tmp_path, timeout=60,
                   RAY_ADDRESS=UNREACHABLE_RAY)
    assert same.returncode == 2 and "max_experiments reached" in same.stderr
    assert "# resumed" not in (run_dir / "config.yaml").read_text()

    more = _evolve("resume", str(run_dir), "--set", "budget.max_experiments=4", cwd=tmp_path)
    assert more.returncode == 0, more.stdout + more.stderr
    assert "stopped: max_experiments reached (4)" in more.stdout
    assert len(_rows(run_dir)) == 4
    stored = (run_dir / "config.yaml").read_text()
    assert "# resumed " in stored and "--set budget.max_experiments=4" in stored
    assert yaml.safe_load(stored)["budget"]["max_experiments"] == 4


@pytest.fixture
def fresh_run(tmp_path: Path) -> Path:
    """A run directory as `evolve run` makes it, before anything ran (no Ray needed)."""
    return Run.create(_config(tmp_path, 3)).run_dir.path


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("seed=7", "seed"),
        ("profile=cpu-tiny", "profile"),
        ("data=climbmix", "data"),
        ("population.islands=3", "population.islands"),
        ("template=builtin", "template"),
        ("noise.seeds=3", "noise.seeds"),
    ],
)
def test_resume_refuses_keys_the_stored_results_depend_on(fresh_run, override, key):
    before = (fresh_run / "config.yaml").read_text()
    result = _evolve("resume", str(fresh_run), "--set", override, cwd=fresh_run, timeout=60,
                     RAY_ADDRESS=UNREACHABLE_RAY)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"--set {override}: {key} cannot change when resuming" in result.stderr
    assert "evolve run" in result.stderr
    assert (fresh_run / "config.yaml").read_text() == before


def test_resume_set_is_validated_like_run(fresh_run):
    result = _evolve("resume", str(fresh_run), "--set", "population.size=0", cwd=fresh_run,
                     timeout=60, RAY_ADDRESS=UNREACHABLE_RAY)
    assert result.returncode == 2
    assert "population.size" in result.stderr and "--set population.size=0" in result.stderr
    typo = _evolve("resume", str(fresh_run), "--set", "budget.max_experimnts=9", cwd=fresh_run,
                   timeout=60, RAY_ADDRESS=UNREACHABLE_RAY)
    assert typo.returncode == 2 and "unknown key 'max_experimnts'" in typo.stderr


def test_resume_set_records_the_change_and_keeps_earlier_records(fresh_run):
    Run.resume(fresh_run, ["budget.max_experiments=5"])
    run = Run.resume(fresh_run, ["population.size=3", "budget.max_hours=2"])
    text = (fresh_run / "config.yaml").read_text()
    records = [line for line in text.splitlines() if line.startswith("# resumed ")]
    assert len(records) == 2 and records[0].endswith("--set budget.max_experiments=5")
    assert records[1].endswith("--set population.size=3 --set budget.max_hours=2")
    assert (run.config.budget.max_experiments, run.config.population.size,
            run.config.budget.max_hours) == (5, 3, 2)
    assert Run.open(fresh_run).config == run.config


def test_a_new_run_whose_data_cannot_be_prepared_is_not_called_a_mismatch(tmp_path):
    with Store.open(tmp_path / "store.sqlite") as store:
        with pytest.raises(DataPrepareError) as info:
            reference_hashes(store, REPO / "train_template", "cpu-micro",
                             f"text:{tmp_path / 'nothing-here'}", str(tmp_path / "cache"))
    message = str(info.value)
    assert message.startswith("preparing the data failed:") and "does not exist" in message
    assert "scored on other data" not in message


def test_a_resumed_run_on_other_data_is_still_called_a_mismatch(tmp_path):
    with Store.open(tmp_path / "store.sqlite") as store:
        store.set_meta("data_hash", "0123456789abcdef0123")
        with pytest.raises(DataMismatch) as info:
            reference_hashes(store, SLEEP_TEMPLATE, "cpu-micro", "synthetic",
                             str(tmp_path / "cache"))
    assert not isinstance(info.value, DataPrepareError)
    assert str(info.value).startswith("this run's results were scored on other data:")
