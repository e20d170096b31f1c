"""Containing LLM-written code: no secret to find, no network, nothing that outlives its run.

Every child here is a real train.py run by the real runner (under a real Ray worker where the
secret search needs the whole path: `evolve run --address auto` on the session's head).
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
import threading
from pathlib import Path

import yaml

from evolve.workers.network import isolation
from evolve.workers.runner import RunRequest, run_candidate

REPO = Path(__file__).resolve().parent.parent
SLEEP_TEMPLATE = REPO / "tests" / "fixtures" / "sleep_template"
TRAIN_TEMPLATE = REPO / "train_template"
SLEEP_SEED = (SLEEP_TEMPLATE / "train_cpu.py").read_text().replace("SLEEP_S = 0.5 ", "SLEEP_S = 0.01")

# Appended to the stand-in seed: at import, look for the key everywhere a same-user process
# can, and write what was searched and found to REPORT.
SPY = r'''
import os as _os, pathlib as _pl, json as _json
_KEY = bytes.fromhex({key_hex!r})[::-1]  # the source itself must not hold the key
_found, _scanned, _ancestors = [], [], []
if _KEY in "\0".join(f"{{k}}={{v}}" for k, v in _os.environ.items()).encode():
    _found.append("own environment")
_pid = _os.getppid()
while _pid > 1:
    _ancestors.append(_pid)
    try:
        _pid = int(_pl.Path(f"/proc/{{_pid}}/stat").read_text().rsplit(")", 1)[1].split()[1])
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
    if _KEY in _data:
        _found.append(f"/proc/{{_entry.name}}/environ")
_files = 0
for _root in {roots!r}:
    for _path in _pl.Path(_root).expanduser().rglob("*"):
        try:
            if _path.is_file() and not _path.is_symlink() and _path.stat().st_size < 20_000_000:
                _files += 1
                if _KEY in _path.read_bytes():
                    _found.append(str(_path))
        except OSError:
            pass
_pl.Path({report!r}).write_text(_json.dumps({{"found": _found, "scanned": _scanned,
                                             "ancestors": _ancestors, "files": _files}}))
'''


def test_the_api_key_is_nowhere_a_child_can_look(ray_address, tmp_path):
    """`evolve run --address auto` with ANTHROPIC_API_KEY set in the driver: the child finds
    the key in no environment (its own, any ancestor's, any process's), no Ray token file and
    no file of Ray's session directories."""
    key = "sk-ant-fake-" + secrets.token_hex(16)
    report = tmp_path / "spy.json"
    token_path = Path(os.environ["RAY_AUTH_TOKEN_PATH"])
    roots = [str(token_path.parent), "~/.ray", "/tmp/ray/session_latest", str(tmp_path / "results")]
    template = tmp_path / "template"
    shutil.copytree(SLEEP_TEMPLATE, template)
    (template / "train_cpu.py").write_text(
        SLEEP_SEED + SPY.format(key_hex=key.encode()[::-1].hex(), roots=roots,
                                report=str(report)))
    config = {
        "name": "spy", "template": str(template), "profile": "cpu-micro",
        # network: allow, so the child is a plain same-user process (inside the isolating user
        # namespace it could not even read other processes' /proc/<pid>/environ).
        "workers": {"count": 1, "cpus_per_worker": 1, "timeout_grace_s": 60, "network": "allow"},
        "budget": {"max_experiments": 1}, "output": {"results_dir": str(tmp_path / "results")},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    env = dict(os.environ, ANTHROPIC_API_KEY=key, OMP_NUM_THREADS="1")
    driver = subprocess.Popen([sys.executable, "-m", "evolve.cli", "run", str(tmp_path / "run.yaml"),
                               "--address", "auto"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = driver.communicate(timeout=240)[0]
    assert driver.returncode == 0, output[-3000:]
    assert "max_experiments reached" in output, output[-2000:]
    seen = json.loads(report.read_text())
    assert seen["found"] == []
    # The search could have found it: it read the driver's /proc environ and walked Ray's files.
    assert driver.pid in seen["scanned"]
    assert len(seen["ancestors"]) >= 3 and set(seen["ancestors"]) <= set(seen["scanned"])
    assert seen["files"] > 0


def _request(tmp_path: Path, template: Path, source: str, candidate: str, **overrides) -> RunRequest:
    fields = dict(candidate_id=candidate, files={"train.py": source}, template_dir=str(template),
                  profile="cpu-micro", data="synthetic", seed=0, timeout_s=120.0,
                  work_root=str(tmp_path / "work"), cache_dir=str(tmp_path / "cache"))
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
_cache = pathlib.Path(sys.argv[sys.argv.index("--cache-dir") + 1])
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


def test_a_child_that_rewrites_the_cache_and_harness_does_not_change_the_next_score(tmp_path):
    template = tmp_path / "template"
    shutil.copytree(TRAIN_TEMPLATE, template, ignore=shutil.ignore_patterns("__pycache__"))
    honest = (template / "train_cpu.py").read_text()
    pristine_harness = (template / "prepare.py").read_bytes()
    before = run_candidate(_request(tmp_path, template, honest, "honest", budget_fraction=0.2))
    assert before.outcome == "done", before.reason
    cheat = run_candidate(_request(tmp_path, template, CHEAT.format(template=str(template)), "cheat"))
    assert cheat.outcome == "crashed", (cheat.outcome, cheat.reason)
    assert (template / "prepare.py").read_bytes() != pristine_harness  # it did tamper
    after = run_candidate(_request(tmp_path, template, honest, "again", budget_fraction=0.2))
    assert after.outcome == "done", after.reason
    assert after.val_bpb == before.val_bpb, (after.metrics, before.metrics)
    # The next run was laid out from the worker's pinned copy; the user's template directory
    # is never written to by the engine (the tampered file stays for the user to see).
    assert (Path(after.log_path).parent / "prepare.py").read_bytes() == pristine_harness
    assert (template / "prepare.py").read_bytes() != pristine_harness


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
