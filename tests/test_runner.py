"""The candidate runner, with real subprocesses on the stand-in template (no Ray)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sleep_requests import REPO, SEED, TEMPLATE, alive, request

from evolve.workers.runner import RunResult, experiment_dir, run_candidate
from evolve.workers.sandbox import is_secret_name


@pytest.fixture
def leftovers():
    """Pids a test saw; any still alive at teardown are killed, so a failing test leaves none."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)


def test_success_reads_the_result_file(tmp_path):
    result = run_candidate(request(tmp_path, keep_workdir=True))
    assert isinstance(result, RunResult)
    assert result.outcome == "done", result.reason
    directory = experiment_dir(request(tmp_path))
    written = json.loads((directory / "result.json").read_text())
    # the harness's keys, plus the sandbox mark: the stand-in harness runs no jail
    assert result.metrics == {**written, "sandboxed": False, "sandbox_problem":
                              "the template has no jail (jail.py): its harness runs "
                              "candidates unsandboxed"}
    assert 1.0 < result.metrics["val_bpb"] < 3.0
    assert result.reason == "" and result.exit_code == 0 and result.device == "cpu"
    assert result.started_at <= result.ended_at
    assert "val_bpb:" in result.log_tail and Path(result.log_path) == directory / "run.log"
    # The pristine harness plus the candidate's file; the other seed and the brief stay out.
    assert (directory / "prepare.py").read_bytes() == (TEMPLATE / "prepare.py").read_bytes()
    assert (directory / "train.py").read_text() == SEED
    assert not (directory / "train_cpu.py").exists() and not (directory / "program.md").exists()



def test_a_finished_attempt_keeps_only_its_log_and_result(tmp_path):
    # What a child writes (a checkpoint, a cache folder) and the harness copy would pile up on
    # the worker's disk run after run; the log and the result file are what is read later.
    source = SEED.replace("    steps = 0\n", (
        "    import os\n"
        "    open('checkpoint.pt', 'wb').write(os.urandom(1 << 20))\n"
        "    os.makedirs('cache/inner')\n"
        "    open('cache/inner/blob', 'w').write('x')\n"
        "    os.symlink('/', 'root-link')\n"
        "    steps = 0\n"))
    result = run_candidate(request(tmp_path, source))
    directory = experiment_dir(request(tmp_path))
    assert result.outcome == "done", result.reason
    assert sorted(p.name for p in directory.iterdir()) == ["result.json", "run.log"]
    assert "val_bpb:" in Path(result.log_path).read_text()
    crashed = run_candidate(request(tmp_path, SEED + "\n\ndef train(ctx):\n    raise SystemExit(3)\n",
                                    attempt=2))
    assert crashed.outcome == "crashed"
    assert [p.name for p in experiment_dir(request(tmp_path, attempt=2)).iterdir()] == ["run.log"]
    assert Path("/").is_dir()  # the symlink was removed, not followed

def test_printed_fake_score_is_ignored(tmp_path):
    honest = run_candidate(request(tmp_path, candidate_id="honest"))
    liar = SEED + (
        "\nimport atexit\nprint('val_bpb:          0.000100')\n"
        "atexit.register(lambda: print('---\\nval_bpb:          0.000100', flush=True))\n"
    )
    faked = run_candidate(request(tmp_path, liar, candidate_id="liar"))
    assert faked.outcome == "done"
    assert faked.log_tail.splitlines()[-1].strip() == "val_bpb:          0.000100"
    assert faked.metrics["val_bpb"] == honest.metrics["val_bpb"] > 1.0


FAKE_RESULT = (
    "\n\ndef train(ctx):\n"
    "    import json, os\n"
    "    fake = {'status': 'ok', 'val_bpb': 0.001, 'entropy_floor_bpb': 0.0}\n"
    "    open('result.json', 'w').write(json.dumps(fake))\n"
    "    os._exit(0)\n")


def test_a_result_file_the_candidate_writes_is_not_the_result(tmp_path):
    # The result comes down a pipe only the harness holds; a file in the experiment folder
    # (written here, then the process ends before the harness can speak) is nobody's word.
    result = run_candidate(request(tmp_path, SEED + FAKE_RESULT, keep_workdir=True))
    assert result.outcome == "crashed" and result.val_bpb is None
    assert "sent no result" in result.reason
    assert not (experiment_dir(request(tmp_path)) / "result.json").exists()


def test_crash_reports_the_exception_line_and_log_tail(tmp_path):
    source = SEED.replace("    steps = 0\n", "    steps = 0\n    raise ValueError('boom 42')\n")
    result = run_candidate(request(tmp_path, source))
    assert result.outcome == "crashed"
    assert "ValueError: boom 42" in result.reason
    assert "Traceback" in result.log_tail and result.metrics == {}
    assert result.exit_code not in (0, None)


def test_crash_without_result_file_takes_the_last_exception_line(tmp_path):
    source = SEED + "\n\nclass Fatal(BaseException):\n    pass\n\n\ndef train(ctx):\n    raise Fatal('disk on fire')\n"
    result = run_candidate(request(tmp_path, source))
    directory = experiment_dir(request(tmp_path))
    assert not (directory / "result.json").exists()  # the stand-in harness only catches Exception
    assert result.outcome == "crashed"
    assert result.reason.endswith("Fatal: disk on fire")


def test_killed_harness_is_a_crash_naming_the_signal(tmp_path):
    source = SEED.replace("    steps = 0\n", "    import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    result = run_candidate(request(tmp_path, source))
    assert result.outcome == "crashed"
    assert result.exit_code == -signal.SIGKILL and "SIGKILL" in result.reason


def test_invalid_when_the_harness_says_so(tmp_path):
    source = SEED.replace("    return TinyModel(hparams)", "    return None")
    result = run_candidate(request(tmp_path, source))
    assert result.outcome == "invalid"
    assert "hparams" in result.reason and result.metrics == {}


def test_timeout_kills_the_whole_group(tmp_path, leftovers):
    # The harness ignores SIGTERM (so SIGKILL is needed) and leaves two grandchildren: one
    # it waits on, one orphaned inside the group by a shell that already exited.
    source = SEED.replace("    steps = 0\n", (
        "    import os, signal, subprocess, time\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "    child = subprocess.Popen(['sleep', '300'])\n"
        "    subprocess.run(['sh', '-c', 'sleep 301 & echo $! > orphan.pid'], check=True)\n"
        "    with open('pids.tmp', 'w') as f:\n"
        "        f.write(f'{os.getpid()} {child.pid} {open(\"orphan.pid\").read().strip()}')\n"
        "    os.replace('pids.tmp', 'pids')\n"
        "    time.sleep(300)\n"
        "    steps = 0\n"))
    result = run_candidate(request(tmp_path, source, timeout_s=3.0, keep_workdir=True))
    pids = [int(p) for p in (experiment_dir(request(tmp_path)) / "pids").read_text().split()]
    leftovers.extend(pids)
    assert result.outcome == "timed_out" and "timed out" in result.reason
    assert len(pids) == 3
    assert [pid for pid in pids if alive(pid)] == []


def test_background_child_of_a_finished_run_is_killed(tmp_path, leftovers):
    source = SEED.replace("    steps = 0\n", (
        "    import subprocess\n"
        "    child = subprocess.Popen(['sleep', '300'])\n"
        "    open('bg.pid', 'w').write(str(child.pid))\n"
        "    steps = 0\n"))
    result = run_candidate(request(tmp_path, source, keep_workdir=True))
    assert result.outcome == "done"
    pid = int((experiment_dir(request(tmp_path)) / "bg.pid").read_text())
    leftovers.append(pid)
    assert not alive(pid)


DRIVER = """
import json, sys
from evolve.workers.runner import RunRequest, run_candidate
run_candidate(RunRequest(**json.loads(sys.argv[1])))
"""


def test_killing_the_runner_process_kills_the_experiment(tmp_path, leftovers):
    # The harness and a background process the candidate forked must both die.
    source = SEED.replace("    steps = 0\n", (
        "    import os, subprocess, time\n"
        "    child = subprocess.Popen(['sleep', '300'])\n"
        "    open('pid.tmp', 'w').write(f'{os.getpid()} {child.pid}')\n"
        "    os.replace('pid.tmp', 'pid')\n"
        "    time.sleep(300)\n"
        "    steps = 0\n"))
    req = request(tmp_path, source)
    fields = dataclasses.asdict(req)
    fields["files"] = dict(req.files)
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(fields)], cwd=REPO)
    pid_file = experiment_dir(req) / "pid"
    try:
        wait_for(pid_file.exists, 30, "the experiment started")
        pids = [int(pid) for pid in pid_file.read_text().split()]
        leftovers.extend(pids)
        assert all(alive(pid) for pid in pids)
        driver.kill()  # SIGKILL: no cleanup code of the runner gets to run
        driver.wait()
        wait_for(lambda: not any(alive(pid) for pid in pids), 10,
                 f"experiment processes {pids} died with their runner")
    finally:
        if driver.poll() is None:
            driver.kill()


# A candidate that leaves its process group: one child in a new session (setsid), and a
# daemon made the classic way (fork, setsid, fork again, parent exits) whose parent is gone.
ESCAPE = (
    "    import os, subprocess, time\n"
    "    child = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
    "    subprocess.run(['setsid', '-f', 'sh', '-c', 'echo $$ > daemon.pid; exec sleep 301'],\n"
    "                   check=True)\n"
    "    while not os.path.exists('daemon.pid') or not open('daemon.pid').read().strip():\n"
    "        time.sleep(0.01)\n"
    "    with open('pids.tmp', 'w') as f:\n"
    "        f.write(f'{os.getpid()} {child.pid} {open(\"daemon.pid\").read().strip()}')\n"
    "    os.replace('pids.tmp', 'pids')\n"
)


def _escaped_pids(req) -> list[int]:
    return [int(p) for p in (experiment_dir(req) / "pids").read_text().split()]


def test_processes_that_leave_the_group_die_with_a_finished_run(tmp_path, leftovers):
    source = SEED.replace("    steps = 0\n", ESCAPE + "    steps = 0\n")
    result = run_candidate(request(tmp_path, source, keep_workdir=True))
    pids = _escaped_pids(request(tmp_path))
    leftovers.extend(pids)
    assert result.outcome == "done", result.reason
    assert len(pids) == 3
    assert [pid for pid in pids if alive(pid)] == []


def test_processes_that_leave_the_group_die_on_timeout(tmp_path, leftovers):
    source = SEED.replace("    steps = 0\n", (
        "    import signal\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + ESCAPE +
        "    time.sleep(300)\n"
        "    steps = 0\n"))
    result = run_candidate(request(tmp_path, source, timeout_s=3.0, keep_workdir=True))
    pids = _escaped_pids(request(tmp_path))
    leftovers.extend(pids)
    assert result.outcome == "timed_out"
    assert [pid for pid in pids if alive(pid)] == []


def test_processes_that_leave_the_group_die_with_a_killed_runner(tmp_path, leftovers):
    source = SEED.replace("    steps = 0\n", ESCAPE + "    time.sleep(300)\n    steps = 0\n")
    req = request(tmp_path, source)
    fields = dataclasses.asdict(req)
    fields["files"] = dict(req.files)
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(fields)], cwd=REPO)
    try:
        wait_for((experiment_dir(req) / "pids").exists, 30, "the experiment started")
        pids = _escaped_pids(req)
        leftovers.extend(pids)
        assert all(alive(pid) for pid in pids)
        driver.kill()
        driver.wait()
        wait_for(lambda: not any(alive(pid) for pid in pids), 10,
                 f"escaped processes {pids} died with their runner")
    finally:
        if driver.poll() is None:
            driver.kill()


def test_secrets_are_not_in_the_experiment_environment(tmp_path, monkeypatch):
    secrets = {"ANTHROPIC_API_KEY": "sk-ant-fake", "OPENAI_API_KEY": "sk-fake",
               "MY_SERVICE_TOKEN": "t", "AWS_SECRET_ACCESS_KEY": "a", "DB_PASSWORD": "p",
               "RAY_AUTH_TOKEN": "r", "HF_TOKEN": "h"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("EVOLVE_KEEP_ME", "kept")
    source = SEED.replace("    steps = 0\n", (
        "    import json, os\n"
        "    open('env.json', 'w').write(json.dumps(dict(os.environ)))\n"
        "    steps = 0\n"))
    result = run_candidate(request(tmp_path, source, seed=7, torch_threads=2, keep_workdir=True))
    assert result.outcome == "done"
    env = json.loads((experiment_dir(request(tmp_path)) / "env.json").read_text())
    assert sorted(set(secrets) & set(env)) == []
    assert not any(value in env.values() for value in secrets.values())
    assert env["EVOLVE_KEEP_ME"] == "kept" and env["PATH"] == os.environ["PATH"]
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"
    assert env["PYTHONHASHSEED"] == "7" and env["PYTHONUNBUFFERED"] == "1"


@pytest.mark.parametrize("name, secret", [
    ("ANTHROPIC_API_KEY", True), ("anthropic_base_url", True), ("GITHUB_TOKEN", True),
    ("AWS_ACCESS_KEY_ID", True), ("MY_CLIENT_SECRET_VALUE", True), ("RAY_AUTH_MODE", True),
    ("PATH", False), ("HOME", False), ("CUDA_VISIBLE_DEVICES", False), ("PYTHONPATH", False),
    ("LANG", False), ("EVOLVE_CACHE_DIR", False), ("RAY_ADDRESS", False),
])
def test_secret_names(name, secret):
    assert is_secret_name(name) is secret


def test_a_rewritten_harness_does_not_reach_the_next_run(tmp_path):
    pristine = hashlib.sha256((TEMPLATE / "prepare.py").read_bytes()).hexdigest()
    cheat = SEED.replace("    steps = 0\n", (
        "    from pathlib import Path\n"
        "    Path('prepare.py').write_text('import json, sys\\n"
        "json.dump({\"status\": \"ok\", \"val_bpb\": 1.0001}, open(\"result.json\", \"w\"))\\n')\n"
        "    steps = 0\n"))
    first = run_candidate(request(tmp_path, cheat))
    # checked after the run: the harness it was scored by changed under it, so no score
    assert first.outcome == "invalid" and first.metrics == {}
    assert first.reason == ("the harness in the experiment folder changed during the run "
                            "(prepare.py)")
    # The same candidate's next attempt, and a rerun of the very same attempt.
    for attempt in (2, 1):
        honest = run_candidate(request(tmp_path, SEED, attempt=attempt, keep_workdir=True))
        directory = experiment_dir(request(tmp_path, attempt=attempt))
        assert honest.outcome == "done" and honest.metrics["val_bpb"] > 1.4
        assert hashlib.sha256((directory / "prepare.py").read_bytes()).hexdigest() == pristine
    assert hashlib.sha256((TEMPLATE / "prepare.py").read_bytes()).hexdigest() == pristine


def test_a_candidate_file_may_not_replace_the_harness(tmp_path):
    files = {"train.py": SEED, "prepare.py": "print('val_bpb: 0.0')\n"}
    result = run_candidate(request(tmp_path, files=files))
    assert result.outcome == "invalid" and "prepare.py" in result.reason
    escape = run_candidate(request(tmp_path, files={"../evil.py": "x = 1\n"}, attempt=2))
    assert escape.outcome == "invalid" and not (tmp_path / "evil.py").exists()


def test_the_runner_imports_neither_ray_nor_torch():
    code = ("import sys, evolve.workers, evolve.workers.runner; "
            "bad = sorted(m for m in ('ray', 'torch') if m in sys.modules); print(bad); sys.exit(bool(bad))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_the_real_harness_speaks_the_runner_command_line(tmp_path):
    # The seam with train_template/prepare.py (contracts section 1): every optional flag used.
    template = REPO / "train_template"
    source = (template / "train_cpu.py").read_text()
    result = run_candidate(request(
        tmp_path, source, template_dir=str(template), timeout_s=300.0, seed=1,
        splits=("val", "test"), budget_fraction=0.5, cache_dir=str(tmp_path / "cache")))
    assert result.outcome == "done", result.reason + "\n" + result.log_tail
    metrics = result.metrics
    assert metrics["entropy_floor_bpb"] < metrics["val_bpb"] < 8.0
    assert "test_bpb" in metrics and metrics["budget_fraction"] == 0.5 and metrics["seed"] == 1
    assert result.device == metrics["device"] == "cpu"


@pytest.mark.slow
def test_the_real_harness_runs_jailed_inside_network_isolation(tmp_path):
    # workers.network wraps the harness in `unshare -rn`; the referee's jail (bwrap) nests
    # inside that namespace and the result still comes back over the pipe.
    sys.path.insert(0, str(REPO / "train_template"))
    import jail

    from evolve.workers.network import unshare_problem

    if jail.sandbox_problem() is not None or unshare_problem():
        pytest.skip(f"no jail or no namespaces here: {jail.sandbox_problem() or unshare_problem()}")
    template = REPO / "train_template"
    result = run_candidate(request(
        tmp_path, (template / "train_cpu.py").read_text(), template_dir=str(template),
        timeout_s=300.0, network="require", cache_dir=str(tmp_path / "cache")))
    assert result.outcome == "done", result.reason + "\n" + result.log_tail
    assert result.metrics["sandboxed"] is True
    assert "network: isolated" in Path(result.log_path).read_text()
