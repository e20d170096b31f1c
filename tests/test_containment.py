"""Containing LLM-written code: no secret to find, no network, nothing that outlives its run.

Every child here is a real train.py run by the real runner (under a real Ray worker where the
secret search needs the whole path: `evolve run` attached to the session's head, and one that
starts its own Ray, so that the driver is the child's ancestor).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import yaml

from evolve.workers.network import isolation
from evolve.workers.runner import RunRequest, run_candidate

REPO = Path(__file__).resolve().parent.parent
SLEEP_TEMPLATE = REPO / "tests" / "fixtures" / "sleep_template"
TRAIN_TEMPLATE = REPO / "train_template"
SLEEP_SEED = (SLEEP_TEMPLATE / "train_cpu.py").read_text().replace("SLEEP_S = 0.5 ", "SLEEP_S = 0.01")

# Appended to the stand-in seed: at import, look for the secrets everywhere a same-user process
# can, and write what was searched and found to the report. `_SPEC` holds the secrets reversed
# and hex-encoded (the source itself lands in the work directory, which the search reads):
# "anywhere" ones must be in no environment and no file; "environ" ones (the Ray token, which
# by design lives in a token file) in no environment.
SPY = r"""
import os as _os, pathlib as _pl, json as _json
def _key(h):
    return bytes.fromhex(h)[::-1]
_ANY = {n: _key(h) for n, h in _SPEC["anywhere"].items()}
_ENV = {n: _key(h) for n, h in _SPEC["environ"].items()}
_found, _scanned, _ancestors, _token_paths, _token_files = [], [], [], [], []
_own = "\0".join(f"{k}={v}" for k, v in _os.environ.items()).encode()
_found += [f"{n} in own environment" for n, k in {**_ANY, **_ENV}.items() if k in _own]
_pid = _os.getppid()
while _pid > 1:
    _ancestors.append(_pid)
    try:
        _pid = int(_pl.Path(f"/proc/{_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        break
for _entry in _pl.Path("/proc").iterdir():
    if not _entry.name.isdigit():
        continue
    try:
        _data = (_entry / "environ").read_bytes()
    except OSError:
        continue
    _scanned.append(int(_entry.name))
    _found += [f"{n} in /proc/{_entry.name}/environ" for n, k in {**_ANY, **_ENV}.items()
               if k in _data]
    if int(_entry.name) in _ancestors:  # follow the token file an ancestor points Ray to
        for _var in _data.split(b"\0"):
            if _var.startswith(b"RAY_AUTH_TOKEN_PATH="):
                _token_paths.append(_var.split(b"=", 1)[1].decode())
_roots = list(_SPEC["roots"]) + sorted({str(_pl.Path(p).parent) for p in _token_paths})
_files = {}
for _root in _roots:
    _files[_root] = 0
    for _path in _pl.Path(_root).expanduser().rglob("*"):
        try:
            if _path.is_file() and not _path.is_symlink() and _path.stat().st_size < 20_000_000:
                _files[_root] += 1
                _bytes = _path.read_bytes()
                _found += [f"{n} in {_path}" for n, k in _ANY.items() if k in _bytes]
                if any(k in _bytes for k in _ENV.values()):
                    _token_files.append(str(_path))
        except OSError:
            pass
_pl.Path(_SPEC["report"]).write_text(_json.dumps({
    "found": _found, "scanned": _scanned, "ancestors": _ancestors, "files": _files,
    "token_paths": _token_paths, "token_files": _token_files}))
"""

# What a user's shell may hold beside the LLM key; the driver must drop them all before Ray
# starts (experiments get a scrubbed environment, but their ancestors' environ is readable).
OTHER_SECRETS = ("HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN")


def _hidden(value: str) -> str:
    return value.encode()[::-1].hex()


def _spy_run(tmp_path: Path, env: dict[str, str], roots: list[str], ray_token: str = "",
             address: str | None = None) -> tuple[dict, dict[str, str], int]:
    """Run `evolve run` (one experiment: the spy) as a real subprocess with the LLM key and
    OTHER_SECRETS in its environment; (the spy's report, the secrets planted, the driver pid)."""
    planted = {"ANTHROPIC_API_KEY": "sk-ant-fake-" + secrets.token_hex(16)}
    planted.update({name: f"fake-{name.lower()}-{secrets.token_hex(16)}" for name in OTHER_SECRETS})
    report = tmp_path / "spy.json"
    spec = {"anywhere": {name: _hidden(value) for name, value in planted.items()},
            "environ": {"RAY_AUTH_TOKEN": _hidden(ray_token)} if ray_token else {},
            "roots": [*roots, str(tmp_path / "results")], "report": str(report)}
    template = tmp_path / "template"
    shutil.copytree(SLEEP_TEMPLATE, template)
    (template / "train_cpu.py").write_text(SLEEP_SEED + f"\n_SPEC = {spec!r}\n" + SPY)
    config = {
        "name": "spy", "template": str(template), "profile": "cpu-micro",
        # network: allow, so the child is a plain same-user process (inside the isolating user
        # namespace it could not even read other processes' /proc/<pid>/environ).
        "workers": {"count": 1, "cpus_per_worker": 1, "timeout_grace_s": 60, "network": "allow"},
        "budget": {"max_experiments": 1}, "output": {"results_dir": str(tmp_path / "results")},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    argv = [sys.executable, "-m", "evolve.run.cli", "run", str(tmp_path / "run.yaml")]
    argv += ["--address", address] if address else []
    driver = subprocess.Popen(argv, cwd=tmp_path, env={**env, **planted, "OMP_NUM_THREADS": "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        output = driver.communicate(timeout=240)[0]
    finally:
        with contextlib.suppress(ProcessLookupError):  # a driver stuck past the limit, its Ray
            os.killpg(driver.pid, 9)
    assert driver.returncode == 0, output[-3000:]
    assert "max_experiments reached" in output, output[-2000:]
    return json.loads(report.read_text()), planted, driver.pid


def test_no_secret_is_anywhere_a_child_can_look(ray_address, ray_temp_dir, tmp_path):
    """`evolve run --address auto` on the session's token-auth head, with the LLM key, HF_TOKEN,
    AWS and GitHub secrets in the driver's environment, and the Ray token as a literal
    RAY_AUTH_TOKEN: the driver still attaches (the token reaches Ray through a private file),
    and the child finds none of the planted secrets in any environment (its own, any
    ancestor's, any process's, the driver's included), the Ray token file, or any file of the
    head's session directory; nor the Ray token in any environment."""
    token_path = Path(os.environ["RAY_AUTH_TOKEN_PATH"])
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN_PATH"}
    env["RAY_AUTH_TOKEN"] = token_path.read_text()
    session = ray_temp_dir / "session_latest"
    seen, _, driver_pid = _spy_run(tmp_path, env, [str(token_path.parent), "~/.ray", str(session)],
                                   ray_token=env["RAY_AUTH_TOKEN"], address="auto")
    assert seen["found"] == []
    # The search could have found them: it read the driver's /proc environ, every ancestor's,
    # and the files of this head's own session (not some other Ray's /tmp/ray/session_latest).
    assert driver_pid in seen["scanned"]
    assert len(seen["ancestors"]) >= 3 and set(seen["ancestors"]) <= set(seen["scanned"])
    assert seen["files"][str(session)] > 0, seen["files"]
    assert str(token_path) in seen["token_files"]


def test_a_driver_that_starts_ray_itself_leaves_no_secret_to_its_descendants(tmp_path):
    """`evolve run` with no address starts a Ray of its own (not the cluster last recorded in
    Ray's temp folder), token auth on, the Ray token given as a literal RAY_AUTH_TOKEN: the driver is now an ancestor of every experiment. Its Ray still
    works (the token reaches Ray through a private token file), and the child finds the
    planted secrets nowhere, the Ray token in no environment, only in that file."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="evr-", dir="/tmp"))  # short: Ray's socket paths
    try:
        ray_token = secrets.token_hex(32)
        env = {k: v for k, v in os.environ.items()
               if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
        env.update(RAY_TMPDIR=str(ray_tmp), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=ray_token)
        session = ray_tmp / "ray" / "session_latest"
        # A cluster this machine ran before, long gone: a bare ray.init() would attach to it.
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:1\n")
        seen, _, driver_pid = _spy_run(tmp_path, env, ["~/.ray", str(session)],
                                       ray_token=ray_token)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert seen["found"] == []
    assert driver_pid in seen["ancestors"] and driver_pid in seen["scanned"]
    assert set(seen["ancestors"]) <= set(seen["scanned"])
    assert seen["files"][str(session)] > 0, seen["files"]
    # The literal token went to a file of the driver's (Ray read it there: the run finished).
    assert len(seen["token_paths"]) >= 1 and "evolve-ray-auth-" in seen["token_paths"][0]
    assert seen["token_paths"][0] in seen["token_files"]


def _request(tmp_path: Path, template: Path, source: str, candidate: str, **overrides) -> RunRequest:
    # keep_workdir: these tests read what the child left in its directory after the run
    fields = dict(candidate_id=candidate, files={"train.py": source}, template_dir=str(template),
                  profile="cpu-micro", data="synthetic", seed=0, timeout_s=120.0,
                  work_root=str(tmp_path / "work"), cache_dir=str(tmp_path / "cache"),
                  keep_workdir=True)
    fields.update(overrides)
    return RunRequest(**fields)


def test_an_isolated_child_cannot_reach_a_local_server(tmp_path):
    assert isolation("isolate").isolated, isolation("isolate").note  # this machine allows it
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                server.accept()[0].close()

    threading.Thread(target=serve, daemon=True).start()
    probe = SLEEP_SEED + f'''
import socket as _s, pathlib as _p
try:
    _s.create_connection(("127.0.0.1", {port}), timeout=5).close()
    _p.Path(__file__).with_name("net.txt").write_text("connected")
except OSError as exc:
    _p.Path(__file__).with_name("net.txt").write_text(f"refused: {{exc}}")
'''
    outcomes = {}
    for mode in ("isolate", "allow"):
        result = run_candidate(_request(tmp_path, SLEEP_TEMPLATE, probe, mode, network=mode))
        assert result.outcome == "done", result.reason
        outcomes[mode] = (Path(result.log_path).parent / "net.txt").read_text()
        assert Path(result.log_path).read_text().startswith(f"network: {'isolated' if mode == 'isolate' else 'allowed'}")
    server.close()
    assert outcomes["isolate"].startswith("refused"), outcomes
    assert outcomes["allow"] == "connected"


# A child that, at run time, rewrites the data cache (val split and manifest, consistently)
# and the template's prepare.py (to report a perfect score), then crashes.
CHEAT = r'''
import hashlib, json, pathlib, sys
_cache = pathlib.Path({cache!r})  # known to a child that looks (it was the harness's argv)
for _d in [d for d in _cache.glob("synthetic-*") if d.is_dir()]:
    (_d / "val.bin").write_bytes(b"a" * (_d / "val.bin").stat().st_size)
    _m = json.loads((_d / "manifest.json").read_text())
    _m["files"] = {{n: hashlib.sha256((_d / n).read_bytes()).hexdigest() for n in _m["files"]}}
    (_d / "manifest.json").write_text(json.dumps(_m))
_harness = pathlib.Path({template!r}) / "prepare.py"
_harness.write_text("import json\n"
                    "open('result.json', 'w').write(json.dumps({{'status': 'ok', 'val_bpb': 0.01}}))\n")
raise SystemExit("cheated")
'''


def test_a_child_that_rewrites_the_cache_and_harness_does_not_change_the_next_score(
        tmp_path, monkeypatch):
    # Unjailed (no bwrap: EVOLVE_BWRAP names none) the child can write both; the checks
    # after and before each run and the pinned harness copy are what protect the scores then.
    monkeypatch.setenv("EVOLVE_BWRAP", str(tmp_path / "no-bwrap"))
    template = tmp_path / "template"
    shutil.copytree(TRAIN_TEMPLATE, template, ignore=shutil.ignore_patterns("__pycache__"))
    honest = (template / "train_cpu.py").read_text()
    pristine_harness = (template / "prepare.py").read_bytes()
    before = run_candidate(_request(tmp_path, template, honest, "honest", budget_fraction=0.2))
    assert before.outcome == "done", before.reason
    cheat = run_candidate(_request(tmp_path, template, CHEAT.format(template=str(template), cache=str(tmp_path / "cache")), "cheat"))
    # checked after the run too: whatever it ended as, a run that changed them is invalid
    assert cheat.outcome == "invalid", (cheat.outcome, cheat.reason)
    assert "the data cache changed during the run (manifest.json, val.bin)" in cheat.reason
    assert f"the template {template} changed during the run (prepare.py)" in cheat.reason
    assert (template / "prepare.py").read_bytes() != pristine_harness  # it did tamper
    after = run_candidate(_request(tmp_path, template, honest, "again", budget_fraction=0.2))
    assert after.outcome == "done", after.reason
    assert after.val_bpb == before.val_bpb, (after.metrics, before.metrics)
    # The next run was laid out from the worker's pinned copy; the user's template directory
    # is never written to by the engine (the tampered file stays for the user to see).
    assert (Path(after.log_path).parent / "prepare.py").read_bytes() == pristine_harness
    assert (template / "prepare.py").read_bytes() != pristine_harness


def test_in_the_jail_a_child_cannot_reach_the_cache_or_the_template(tmp_path):
    sys.path.insert(0, str(TRAIN_TEMPLATE))
    import jail

    if jail.sandbox_problem() is not None:
        pytest.skip(f"no jail on this node: {jail.sandbox_problem()}")
    template = tmp_path / "template"
    shutil.copytree(TRAIN_TEMPLATE, template, ignore=shutil.ignore_patterns("__pycache__"))
    honest = (template / "train_cpu.py").read_text()
    pristine_harness = (template / "prepare.py").read_bytes()
    before = run_candidate(_request(tmp_path, template, honest, "honest", budget_fraction=0.2))
    assert before.outcome == "done" and before.metrics["sandboxed"] is True, before.reason
    cache = {p: p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    cheat = run_candidate(_request(tmp_path, template, CHEAT.format(template=str(template), cache=str(tmp_path / "cache")), "cheat"))
    # in the jail neither path exists: the child fails at its first write and changes nothing
    assert cheat.outcome == "crashed", (cheat.outcome, cheat.reason)
    assert "No such file or directory" in cheat.reason, cheat.reason
    assert (template / "prepare.py").read_bytes() == pristine_harness
    assert {p: p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file()} == cache


def test_where_namespaces_are_unavailable_isolate_says_so_and_runs_anyway():
    """No unshare on the node (PATH without util-linux): the run goes on with the network and
    its log's first line says it is NOT isolated; `allow` never isolates."""
    probe = ("from evolve.workers.network import isolation; i = isolation('isolate'); "
             "print(i.isolated, i.note); print(isolation('allow').isolated)")
    done = subprocess.run([sys.executable, "-c", probe], env=dict(os.environ, PATH="/nonexistent"),
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    first, second = done.stdout.splitlines()
    assert first.startswith("False network: NOT isolated (no unshare binary")
    assert second == "False"
