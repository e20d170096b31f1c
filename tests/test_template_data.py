"""Data preparation (idempotent, locked, verified) and the harness's answers to bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent / "train_template"
sys.path.insert(0, str(TEMPLATE))

import prepare  # noqa: E402


def prepare_cmd(cache: Path, *extra: str) -> list[str]:
    return [sys.executable, str(TEMPLATE / "prepare.py"), "prepare", "--profile", "cpu-micro",
            "--data", "synthetic", "--cache-dir", str(cache), *extra]


def test_prepare_is_idempotent_and_safe_when_run_concurrently(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(prepare_cmd(tmp_path), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    (data,) = [d for d in tmp_path.iterdir() if d.is_dir()]
    manifest = json.loads((data / "manifest.json").read_text())
    assert set(manifest["files"]) == {f"{s}{k}" for s in ("train", "val", "test")
                                      for k in (".bin", ".starts.bin")}
    stamps = {p.name: p.stat().st_mtime_ns for p in data.iterdir()}
    again = subprocess.run(prepare_cmd(tmp_path), env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "data ready" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in data.iterdir()} == stamps  # nothing rebuilt


def test_a_corrupt_or_partial_cache_is_detected_and_rebuilt(tmp_path: Path) -> None:
    assert prepare.main(["prepare", "--profile", "cpu-micro", "--cache-dir", str(tmp_path)]) == 0
    (data,) = [d for d in tmp_path.iterdir() if d.is_dir()]
    original = (data / "val.bin").read_bytes()
    (data / "val.bin").write_bytes(original[:100])  # truncated, as by a crash or a full disk
    (data / "test.starts.bin").unlink()
    assert prepare.main(["prepare", "--profile", "cpu-micro", "--cache-dir", str(tmp_path)]) == 0
    assert (data / "val.bin").read_bytes() == original
    assert (data / "test.starts.bin").exists()


def run_main(tmp_path: Path, *args: str) -> tuple[int, str]:
    """`prepare.py run` in its own process, as the runner starts it: the referee makes its
    process a subreaper and kills every descendant it has at the end, which in the test's
    own process would be the session's Ray head."""
    result = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(TEMPLATE / "prepare.py"), "run", "--profile", "cpu-micro",
         "--cache-dir", str(tmp_path / "cache"), "--result", str(result), *args],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    err = done.stderr.strip().splitlines()
    return done.returncode, err[-1] if err else ""


def test_unknown_profile_and_data_source_are_one_line_errors(tmp_path: Path) -> None:
    code, line = run_main(tmp_path, "--data", "synthetic", "--profile", "cpu-huge")
    assert code == 2 and line.startswith("error: unknown profile 'cpu-huge'") and "cpu-micro" in line
    code, line = run_main(tmp_path, "--data", "wikipedia")
    assert code == 2 and line == "error: unknown data source 'wikipedia' (known: synthetic, text:<path>, climbmix)"
    code, line = run_main(tmp_path, "--data", "synthetic", "--budget-fraction", "-1")
    assert code == 2 and line.startswith("error: argument --budget-fraction")
    assert not (tmp_path / "result.json").exists()


def test_missing_and_empty_text_paths_are_one_line_errors(tmp_path: Path) -> None:
    code, line = run_main(tmp_path, "--data", f"text:{tmp_path / 'nope.txt'}")
    assert code == 2 and line.startswith("error: text path") and "does not exist" in line
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    code, line = run_main(tmp_path, "--data", f"text:{tmp_path / 'empty.txt'}")
    assert code == 2 and line.startswith("error: text path") and "holds no text" in line
    (tmp_path / "small.txt").write_text("one line\nanother line\n")
    code, line = run_main(tmp_path, "--data", f"text:{tmp_path / 'small.txt'}")
    assert code == 2 and "too small" in line
    assert not (tmp_path / "result.json").exists()


def test_a_train_script_without_train_is_a_crash_with_a_clear_line(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("def fit(ctx):\n    return None\n")
    code, line = run_main(tmp_path, "--train", str(script))
    assert code == 1 and line == "error: train.py defines no train(ctx) function"
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["status"] == "crash" and record["profile"] == "cpu-micro"
    code, line = run_main(tmp_path, "--train", str(tmp_path / "missing.py"))
    assert code == 2 and line.startswith("error: train script") and "not found" in line


def test_a_model_of_the_wrong_shape_is_invalid(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("import torch\n"
                      "def train(ctx):\n"
                      "    return torch.nn.Embedding(ctx.vocab_size, 7)\n")
    code, line = run_main(tmp_path, "--train", str(script))
    assert code == 1 and "error: model returned" in line and "expected logits" in line
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "invalid"


def test_climbmix_without_its_module_is_a_clear_error(tmp_path: Path) -> None:
    bare = tmp_path / "template"
    shutil.copytree(TEMPLATE, bare, ignore=shutil.ignore_patterns("climbmix.py", "__pycache__"))
    proc = subprocess.run([sys.executable, "prepare.py", "prepare", "--profile", "cpu-micro",
                           "--data", "climbmix", "--cache-dir", str(tmp_path / "cache")],
                          cwd=bare, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: data source 'climbmix' needs")
    assert "climbmix.py" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
