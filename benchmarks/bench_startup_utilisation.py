"""Start-up utilisation on the peers' workload, through `evolve run` with Ray.

Each evaluation sleeps E seconds inside the real harness subprocess (the sleep template), the
`llm` operator reaches a local Messages-API stand-in through `base_url` and gets its answer
after L seconds, P workers (Ray actors), N experiments, the baseline included. Utilisation =
Σ attempt seconds / (P × span from the first start to the last end), every attempt counted
(candidates' attempts and extra runs alike), read from the run's store with plain SQL so any
checkout's store can be read.

    python benchmarks/bench_startup_utilisation.py --workers 4 --eval-s 15 --llm-s 1.5 \
        --experiments 16 --repeats 3 [--checkout /path/to/other/checkout ...]

Each `--checkout` runs that tree's `evolve` (before/after side by side, interleaved).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from messages_standin import MessagesStandIn  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "sleep_template"


def template_copy(target: Path, eval_s: float) -> Path:
    shutil.copytree(FIXTURE, target)
    for name in ("train.py", "train_cpu.py"):
        path = target / name
        path.write_text(path.read_text().replace("SLEEP_S = 0.5 ", f"SLEEP_S = {eval_s} "))
    return target


def run_config(tmp: Path, args: argparse.Namespace, url: str) -> Path:
    config = {
        "name": "startup", "template": str(template_copy(tmp / "template", args.eval_s)),
        "profile": "cpu-micro", "seed": 0,
        "population": {"size": 8, "islands": args.islands},
        "mutation": {"operators": [{"kind": "llm", "model": "stand-in", "base_url": url,
                                    "api_key_env": "EVOLVE_BENCH_NO_KEY", "max_tokens": 2000,
                                    "input_usd_per_mtok": 0.0, "output_usd_per_mtok": 0.0}],
                     "lookahead": 1},
        "workers": {"count": args.workers, "cpus_per_worker": 2.0 / args.workers / 2},
        "budget": {"max_experiments": args.experiments},
        "noise": {"seeds": args.noise_seeds},
        "test": {"final": False},  # the peers score no held-out split after the run
        "output": {"results_dir": str(tmp / "results")},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def utilisation(store: Path, workers: int) -> dict[str, float]:
    """Σ attempt seconds / (workers × first start..last end), over every attempt and extra run."""
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT candidate_id, started_at, ended_at FROM attempts "
                          "WHERE ended_at IS NOT NULL").fetchall()
        rows += db.execute("SELECT candidate_id, started_at, ended_at FROM extra_runs "
                           "WHERE started_at IS NOT NULL AND ended_at IS NOT NULL").fetchall()
    start = min(r[1] for r in rows)
    end = max(r[2] for r in rows)
    busy = sum(r[2] - r[1] for r in rows)
    root_end = max(r[2] for r in rows if r[0] == "root")
    first_child = min((r[1] for r in rows if r[0] != "root"), default=float("nan"))
    return {"utilisation": busy / (workers * (end - start)), "span": end - start,
            "attempts": len(rows), "root_end": root_end - start,
            "first_child": first_child - start}


def one_run(checkout: Path, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="startup-") as name, \
            MessagesStandIn(delay_s=args.llm_s) as llm:
        tmp = Path(name)
        config = run_config(tmp, args, llm.url)
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
        env.update(PYTHONPATH=str(checkout), OMP_NUM_THREADS="1")
        started = time.perf_counter()
        cli = "evolve.run.cli" if (checkout / "evolve" / "run" / "cli.py").exists() else "evolve.cli"
        done = subprocess.run([sys.executable, "-m", cli, "run", str(config)],
                              cwd=checkout, env=env, capture_output=True, text=True,
                              timeout=args.timeout_s)
        if done.returncode != 0:
            raise SystemExit(f"evolve run failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                             f"{done.stderr[-3000:]}")
        store = next((tmp / "results").glob("*/store.sqlite"))
        figures = utilisation(store, args.workers)
        figures["wall"] = time.perf_counter() - started
        figures["llm_calls"] = llm.calls
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--eval-s", type=float, default=15.0)
    parser.add_argument("--llm-s", type=float, default=1.5)
    parser.add_argument("--experiments", type=int, default=16)
    parser.add_argument("--islands", type=int, default=1)
    parser.add_argument("--noise-seeds", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--checkout", type=Path, action="append",
                        help="a tree whose `evolve` to run (repeatable; default: this one)")
    args = parser.parse_args()
    checkouts = [c.resolve() for c in args.checkout or [REPO]]
    results: dict[Path, list[dict[str, float]]] = {c: [] for c in checkouts}
    for repeat in range(args.repeats):
        for checkout in checkouts:  # interleaved, so load on the machine hits both alike
            figures = one_run(checkout, args)
            results[checkout].append(figures)
            print(f"[{repeat + 1}/{args.repeats}] {checkout.name}: utilisation "
                  f"{figures['utilisation']:.4f}, span {figures['span']:.1f} s, "
                  f"{figures['attempts']:.0f} attempts, root ends at {figures['root_end']:.1f} s, "
                  f"first child starts at {figures['first_child']:.1f} s, "
                  f"{figures['llm_calls']:.0f} LLM calls, wall {figures['wall']:.0f} s", flush=True)
    print(f"P={args.workers} E={args.eval_s:g}s L={args.llm_s:g}s N={args.experiments} "
          f"noise seeds {args.noise_seeds}:")
    for checkout, runs in results.items():
        util = statistics.median(r["utilisation"] for r in runs)
        span = statistics.median(r["span"] for r in runs)
        listed = ", ".join(f"{r['utilisation']:.4f}" for r in runs)
        print(f"  {checkout}: median utilisation {util:.4f} (span {span:.1f} s) over "
              f"{len(runs)} run(s): {listed}")


if __name__ == "__main__":
    main()
