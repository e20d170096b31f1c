"""Shared fixtures: one Ray head for the whole session, reached through RAY_ADDRESS."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _session_token() -> Path:
    """Token auth with a token of this test session's own, set before anything imports Ray
    (Ray reads the mode once per process): the default ~/.ray/auth_token is shared by every
    Ray on the machine, and a head started beside ours could replace it."""
    directory = Path(tempfile.mkdtemp(prefix="evolve-test-ray-"))
    token_path = directory / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_path)
    return token_path


SESSION_TOKEN = _session_token()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_head(log_path: Path, head: subprocess.Popen, timeout: float = 120.0) -> None:
    """Wait until `ray start` says the runtime (GCS and raylet) is up; a busy machine is slow."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray head exited early ({head.returncode}): {log_path.read_text()[-2000:]}")
        if "Ray runtime started" in log_path.read_text(errors="replace"):
            return
        time.sleep(0.3)
    raise RuntimeError(f"ray head did not come up in {timeout:.0f}s: {log_path.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def ray_temp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session head's --temp-dir: its session directories (logs, sockets) are under it."""
    return tmp_path_factory.mktemp("ray")


@pytest.fixture(scope="session")
def ray_address(ray_temp_dir: Path):
    """Start one `ray start --head` for the session (4 logical CPUs, 2 fake GPUs) and attach.

    Tests and CLI subprocesses reach it through RAY_ADDRESS, as they would a real cluster.
    """
    port = _free_port()
    ray_bin = str(Path(sys.executable).with_name("ray"))
    temp_dir = ray_temp_dir
    # --block keeps the head tied to this process group, so teardown stops only our head
    # (never `ray stop`, which would stop every Ray on the machine).
    log_path = temp_dir / "head.log"
    log = open(log_path, "w")  # noqa: SIM115 - lives as long as the head
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", f"--port={port}", "--num-cpus=4", "--num-gpus=2",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    _wait_for_head(log_path, head)
    previous = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = address
    try:
        yield address
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        log.close()
        if previous is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = previous


@pytest.fixture(scope="session")
def ray_session(ray_address: str):
    """The test process attached to the session's Ray head."""
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False)
    return ray
