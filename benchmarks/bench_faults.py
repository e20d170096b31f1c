"""Fault tolerance on a simulated multi-node cluster, through the real CLI.

A `ray.cluster_utils.Cluster` (a head with no CPUs, worker nodes with 2 CPUs and 2 fake GPUs
each, 0.5 s health checks) runs `evolve run --address <cluster>` as a real subprocess on the
stand-in harness (one worker per GPU). Mid-run the script removes a worker node while its
experiments run, adds a node, removes another, adds one more, then SIGKILLs the controller
and finishes the run with `evolve resume`. It then counts, from the store and results.tsv:
experiments finished, node losses survived, attempts lost and requeued, results lost
(a finished attempt whose candidate has no result) and results duplicated (a candidate with
two results, or twice in results.tsv). Both of the last must be 0.

    python benchmarks/bench_faults.py                # full: 40 experiments, 2 node losses
    python benchmarks/bench_faults.py --quick        # CI: 14 experiments, 1 node loss
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SLEEP_TEMPLATE = REPO / "tests" / "fixtures" / "sleep_template"
EVOLVE = [sys.executable, "-m", "evolve.run.cli"]
NODE = {"num_cpus": 2, "num_gpus": 2}
FINAL = ("done", "crashed", "timed_out")


def _auth_env(tmp: Path) -> dict[str, str]:
    """A token of this cluster's own (never the shared ~/.ray/auth_token)."""
    token = tmp / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), OMP_NUM_THREADS="1",
               COLUMNS="200")
    return env


def _config(tmp: Path, experiments: int, sleep_s: float) -> Path:
    template = tmp / "template"
    shutil.copytree(SLEEP_TEMPLATE, template)
    seed = template / "train_cpu.py"
    seed.write_text(seed.read_text().replace("SLEEP_S = 0.5 ", f"SLEEP_S = {sleep_s} "))
    config = {
        "name": "faults", "template": str(template), "profile": "cpu-micro", "seed": 1,
        "population": {"size": 4, "islands": 2, "migration_interval": 6},
        "mutation": {"operators": [{"kind": "heuristic", "weight": 1.0}], "lookahead": 1},
        "workers": {"count": "auto", "gpus_per_worker": 1, "cpus_per_worker": 1,
                    "timeout_grace_s": 60, "max_lost_attempts": 3},
        "budget": {"max_experiments": experiments},
        "output": {"results_dir": str(tmp / "results")},
    }
    path = tmp / "faults.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run_dir(tmp: Path) -> Path | None:
    dirs = sorted((tmp / "results").glob("faults-*"))
    return dirs[0] if dirs else None


def _finished(tmp: Path) -> int:
    run_dir = _run_dir(tmp)
    if run_dir is None or not (run_dir / "results.tsv").exists():
        return 0
    return max(0, len((run_dir / "results.tsv").read_text().splitlines()) - 1)


def _running_on(store_path: Path, node_id: str) -> int:
    """Attempts running now on `node_id` (read-only: the controller is the writer)."""
    import sqlite3

    with sqlite3.connect(f"file:{store_path}?mode=ro", uri=True, timeout=10) as db:
        return db.execute("SELECT COUNT(*) FROM attempts WHERE outcome = 'running' AND node = ?",
                          (node_id,)).fetchone()[0]


def _wait(what, predicate, process: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the controller exited ({process.returncode}) while waiting for "
                               f"{what}: {process.communicate()[0][-3000:]}")
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"no {what} within {timeout:g} s")


def _remove_busy_node(cluster, nodes: list, store_path: Path, process: subprocess.Popen) -> None:
    """Remove a worker node while at least one experiment runs on it."""
    def busy() -> object | None:
        for node in nodes:
            if _running_on(store_path, node.node_id):
                return node
        return None

    _wait("an experiment running on a worker node", lambda: busy() is not None, process)
    node = busy()
    if node is None:  # it finished in between: take the next one
        _wait("an experiment running on a worker node", lambda: busy() is not None, process)
        node = busy()
    time.sleep(0.3)
    cluster.remove_node(node)
    nodes.remove(node)


def measure(experiments: int, node_losses: int, sleep_s: float, tmp: Path) -> dict:
    env = _auth_env(tmp)
    os.environ.update({k: env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")})
    os.environ.pop("RAY_ADDRESS", None)
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False,
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
                           "health_check_initial_delay_ms": 0}})
    nodes = [cluster.add_node(**NODE), cluster.add_node(**NODE)]
    config = _config(tmp, experiments, sleep_s)
    started = time.monotonic()
    events: list[str] = []
    try:
        controller = subprocess.Popen([*EVOLVE, "run", str(config), "--address", cluster.address],
                                      cwd=tmp, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
        _wait("the first results", lambda: _finished(tmp) >= 2, controller)
        store_path = _run_dir(tmp) / "store.sqlite"
        for loss in range(node_losses):
            _remove_busy_node(cluster, nodes, store_path, controller)
            events.append(f"node removed at {_finished(tmp)} results")
            nodes.append(cluster.add_node(**NODE))
            events.append(f"node added at {_finished(tmp)} results")
            target = _finished(tmp) + max(2, experiments // (3 * node_losses))
            _wait(f"results after node loss {loss + 1}", lambda t=target: _finished(tmp) >= t,
                  controller)
        _wait("a running experiment to kill the controller under",
              lambda: _running_on(store_path, nodes[0].node_id) + _running_on(
                  store_path, nodes[-1].node_id) > 0, controller)
        at_kill = _finished(tmp)
        controller.send_signal(signal.SIGKILL)
        controller.communicate(timeout=30)
        events.append(f"controller SIGKILLed at {at_kill} results")
        resumed = subprocess.run([*EVOLVE, "resume", str(_run_dir(tmp)), "--address",
                                  cluster.address], cwd=tmp, env=env, capture_output=True,
                                 text=True, timeout=600)
        if resumed.returncode != 0:
            raise RuntimeError(f"evolve resume failed: {resumed.stdout[-2000:]}{resumed.stderr[-2000:]}")
        events.append("resumed to the end")
        wall_s = time.monotonic() - started
        return {**count(_run_dir(tmp)), "events": events, "killed_at": at_kill,
                "resume_stop": _stop_line(resumed.stdout), "wall_s": round(wall_s, 1)}
    finally:
        cluster.shutdown()


def _stop_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith("stopped:")]
    return lines[-1] if lines else ""


def count(run_dir: Path) -> dict:
    """Experiments, losses and (must be 0) lost or duplicated results, from the store."""
    from evolve.controller.recovery import RESUME_LOST
    from population.store import Store

    store = Store.open(run_dir / "store.sqlite", readonly=True)
    try:
        finished = [c for c in store.finished_in_order() if c.status.value in FINAL
                    and c.mutator != "migration"]
        attempts = {c.id: store.attempts(c.id) for c in finished}
        lost = [a for history in attempts.values() for a in history if a.outcome == "lost"]
        by_kill = [a for a in lost if a.reason == RESUME_LOST]
        duplicated = [cid for cid, history in attempts.items()
                      if len([a for a in history if a.outcome not in ("lost", "running")]) > 1]
        results_lost = [c.id for c in store.unfinished()
                        if any(a.outcome in FINAL + ("invalid",) for a in store.attempts(c.id))]
        ids = [line.split("\t")[0] for line in (run_dir / "results.tsv").read_text().splitlines()[1:]]
        workers = {a.worker for history in attempts.values() for a in history}
        nodes = {a.node for history in attempts.values() for a in history}
        return {
            "experiments": len(finished),
            "tsv_rows": len(ids),
            "attempts_lost": len(lost),
            "lost_by_node_death": len(lost) - len(by_kill),
            "lost_by_controller_kill": len(by_kill),
            "results_lost": len(results_lost),
            "results_duplicated": len(duplicated) + len(ids) - len(set(ids)),
            "workers_used": len(workers),
            "nodes_used": len(nodes),
            "stop_reason": store.get_meta("stop_reason"),
        }
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="14 experiments, 1 node loss (CI)")
    parser.add_argument("--experiments", type=int)
    parser.add_argument("--node-losses", type=int)
    parser.add_argument("--sleep-s", type=float, default=1.5, help="stand-in training time")
    parser.add_argument("--json", action="store_true", help="print only the JSON figures")
    args = parser.parse_args(argv)
    experiments = args.experiments or (14 if args.quick else 40)
    losses = args.node_losses if args.node_losses is not None else (1 if args.quick else 2)
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        figures = measure(experiments, losses, args.sleep_s, Path(tmp))
    figures["node_losses"] = losses
    if args.json:
        print(json.dumps(figures))
        return 0
    print(json.dumps(figures, indent=1))
    print(f"\n| experiments | node losses survived | controller kills | attempts lost (node / kill) "
          f"| results lost | results duplicated | workers used | wall |\n|---|---|---|---|---|---|---|---|\n"
          f"| {figures['experiments']} | {losses} | 1 | {figures['attempts_lost']} "
          f"({figures['lost_by_node_death']} / {figures['lost_by_controller_kill']}) | "
          f"{figures['results_lost']} | {figures['results_duplicated']} | {figures['workers_used']} "
          f"| {figures['wall_s']:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
