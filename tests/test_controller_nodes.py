"""The controller follows a multi-node cluster: a node dies mid-run, another joins.

The cluster is its own (`ray.cluster_utils.Cluster` in a subprocess, short health checks so
node death is noticed in seconds), never the session's shared head.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

DRIVER = r'''
import asyncio, json, sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
import ray
from ray.cluster_utils import Cluster
from test_controller_shell import FINISHED, Recorder, make_config, make_template
from evolve.controller.executor import RayExecutor
from evolve.controller.shell import Controller
from evolve.mutate.heuristic import HeuristicMutator
from population.candidate import Status
from population.store import Store

tmp = Path({tmp!r})
cluster = Cluster(initialize_head=True, head_node_args={{
    "num_cpus": 0, "include_dashboard": False,
    "_system_config": {{"health_check_period_ms": 500, "health_check_failure_threshold": 3,
                        "health_check_initial_delay_ms": 0}}}})
doomed = cluster.add_node(num_cpus=2)
ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
config = make_config(make_template(tmp, 2.0), budget={{"max_experiments": 7}},
                     workers={{"count": "auto", "max_lost_attempts": 3}})
executor = RayExecutor("auto", cpus_per_worker=1, poll_s=0.5)
store = Store.open(tmp / "store.sqlite")
events = []

async def main():
    controller = Controller(config, store, executor, {{"heuristic": HeuristicMutator()}},
                            Recorder(), work_root=tmp / "work", tick_s=0.2)
    task = asyncio.create_task(controller.run())
    while not task.done():
        await asyncio.sleep(0.1)
        running = [c for c in store.unfinished() if c.status is Status.RUNNING and c.id != "root"]
        if running and not events:
            await asyncio.sleep(0.5)
            cluster.remove_node(doomed)
            events.append("removed")
            cluster.add_node(num_cpus=2)
            events.append("added")
    return await task

reason = asyncio.run(main())
attempts = [a.__dict__ for c in store.finished_in_order() for a in store.attempts(c.id)]
print(json.dumps({{"reason": reason, "events": events,
                  "finished": store.count(*FINISHED), "attempts": attempts}}))
store.close()
ray.shutdown()
cluster.shutdown()
'''


@pytest.mark.slow
def test_node_death_and_join(tmp_path):
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), OMP_NUM_THREADS="1")
    script = DRIVER.format(tests=str(REPO / "tests"), tmp=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["events"] == ["removed", "added"]
    assert report["reason"] == "max_experiments reached (7)"
    assert report["finished"] == 7
    lost = [a for a in report["attempts"] if a["outcome"] == "lost"]
    assert lost, "the experiments on the removed node were not lost"
    by_candidate: dict[str, list[str]] = {}
    for a in report["attempts"]:
        by_candidate.setdefault(a["candidate_id"], []).append(a["outcome"])
    for outcomes in by_candidate.values():
        assert len([o for o in outcomes if o != "lost"]) == 1
    # Workers on the new node (numbered after the first two) ran experiments.
    assert {a["worker"] for a in report["attempts"]} - {"w0", "w1"}
