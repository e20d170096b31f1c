"""The controller follows a multi-node cluster: a node dies mid-run, another joins.

The cluster is its own (`ray.cluster_utils.Cluster` in a subprocess, short health checks so
node death is noticed in seconds), never the session's shared head. Nothing here waits a
fixed time: the driver waits for the conditions themselves (an attempt running on the doomed
node), and only the subprocess has a deadline, a generous one, for a loaded 2-core machine.
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
import asyncio, json, os, signal, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
import ray
from ray.cluster_utils import Cluster
from test_controller_shell import FINISHED, Recorder, make_config, make_template
from evolve.controller.executor import RayExecutor
from evolve.controller.shell import Controller
from evolve.controller.wiring import plan_run
from evolve.mutate.heuristic import HeuristicMutator
from population.candidate import Status
from population.store import Store


def children() -> set[int]:
    """This process's direct children (Ray's GCS, raylets, reapers are started as such)."""
    me, found = str(os.getpid()), set()
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{{entry}}/stat").read_text() if entry.isdigit() else ""
        except OSError:
            continue
        if stat and stat.rsplit(")", 1)[1].split()[1] == me:
            found.add(int(entry))
    return found


def started(what, make, tries=3):
    """`make()` a Ray node, again if Ray's own start-up limit trips.

    Ray gives a new node a fixed 30 s to register with the GCS; on a loaded 2-core machine
    that can pass before our code runs at all. It is Ray's start-up, not what this test
    checks, so the processes of the failed try are killed and the node is started afresh.
    """
    for attempt in range(1, tries + 1):
        before = children()
        try:
            return make()
        except Exception as exc:
            if "timed out during startup" not in str(exc) or attempt == tries:
                raise
            print(f"{{what}}: {{exc}}; starting it again", file=sys.stderr)
            for pid in children() - before:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


tmp = Path({tmp!r})
head_args = {{"num_cpus": 0, "include_dashboard": False,
             "_system_config": {{"health_check_period_ms": 500, "health_check_failure_threshold": 3,
                                 "health_check_initial_delay_ms": 0}}}}
cluster = started("the head", lambda: Cluster(initialize_head=True, head_node_args=head_args))
doomed = started("the first node", lambda: cluster.add_node(num_cpus=2))
ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
config = make_config(make_template(tmp, 2.0), budget={{"max_experiments": 7}},
                     workers={{"count": "auto", "max_lost_attempts": 3}})
executor = RayExecutor("auto", cpus_per_worker=1, poll_s=0.5)
store = Store.open(tmp / "store.sqlite")
events = []


def child_running_on(node_id):
    """A child (not the baseline) has an attempt in flight on `node_id`."""
    return any(a.outcome == "running" and a.node == node_id
               for c in store.unfinished() if c.status is Status.RUNNING and c.id != "root"
               for a in store.attempts(c.id))


async def main():
    controller = Controller(plan_run(config), store, executor, {{"heuristic": HeuristicMutator()}},
                            Recorder(), work_root=tmp / "work", tick_s=0.2)
    task = asyncio.create_task(controller.run())
    while not task.done():
        await asyncio.sleep(0.1)
        if not events and child_running_on(doomed.node_id):
            # The node goes while the controller runs on, as a real node dies: off its loop.
            await asyncio.to_thread(cluster.remove_node, doomed)
            events.append("removed")
            # Ray's Node sets a SIGTERM handler, which only the main thread may do.
            started("the new node", lambda: cluster.add_node(num_cpus=2))
            events.append("added")
    return await task

reason = asyncio.run(main())
attempts = [a.__dict__ for c in store.finished_in_order() for a in store.attempts(c.id)]
print(json.dumps({{"reason": reason, "events": events, "doomed": doomed.node_id,
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
    # Alone this takes under a minute; the deadline only guards against a hang.
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    attempts = report["attempts"]
    assert report["events"] == ["removed", "added"]
    assert report["reason"] == "max_experiments reached (7)", report
    assert report["finished"] == 7
    lost = [a for a in attempts if a["outcome"] == "lost"]
    assert lost, f"the experiments on the removed node were not lost: {attempts}"
    assert {a["node"] for a in lost} == {report["doomed"]}, attempts
    by_candidate: dict[str, list[str]] = {}
    for a in attempts:
        by_candidate.setdefault(a["candidate_id"], []).append(a["outcome"])
    for outcomes in by_candidate.values():
        assert len([o for o in outcomes if o != "lost"]) == 1, by_candidate
    # Workers on the new node (numbered after the first two) ran experiments.
    assert {a["worker"] for a in attempts} - {"w0", "w1"}, attempts
    assert {a["node"] for a in attempts} - {report["doomed"]}, attempts
