"""Fault tolerance on a simulated multi-node cluster, through the real CLI: a worker node is
removed mid-experiment and another joins, then the controller is SIGKILLed and `evolve resume`
finishes the run. benchmarks/bench_faults.py does the work (its own Cluster, in a subprocess,
never the session's head); this test holds it to its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_node_loss_join_and_controller_kill_lose_and_duplicate_nothing():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_faults.py"), "--quick",
                           "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["stop_reason"] == "max_experiments reached (14)"
    assert figures["experiments"] == figures["tsv_rows"] == 14
    assert figures["lost_by_node_death"] >= 1, "the removed node's experiment was not lost"
    assert figures["lost_by_controller_kill"] >= 1, "nothing was running when the controller died"
    assert figures["results_lost"] == 0
    assert figures["results_duplicated"] == 0
    assert figures["nodes_used"] == 3, "the node that joined ran no experiment"
