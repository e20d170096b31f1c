"""The refereed harness against the one before it, side by side in one sitting.

    OMP_NUM_THREADS=1 python benchmarks/bench_judge.py [--baseline c6dd3d2] [--runs 5]
        [--profiles cpu-micro,cpu-bench] [--budget-fraction 1.0] [--data synthetic]

The baseline harness is `git archive <ref> train_template` (the in-process harness); the new
one is this working tree's. Runs alternate old/new so load on the machine hits both alike.
For each: val_bpb (must be equal), clocked tokens/s (tokens over training_seconds) and the
seconds outside the budget (the process's wall time minus training_seconds: start-up,
hand-back, scoring, test scoring, the causality pass), as medians, with the new harness's
own breakdown. On a GPU box, pass --profiles gpu-5min --budget-fraction 0.1 (see
benchmarks/gpu_judge.sh).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "train_template"


def baseline_template(ref: str, into: Path) -> Path:
    """The template as it was at `ref` (git archive), unpacked under `into`."""
    data = subprocess.run(["git", "archive", ref, "train_template"], cwd=REPO, check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into / "train_template"


def run_once(template: Path, profile: str, args: argparse.Namespace, cache_dir: Path) -> dict:
    seed_script = "train.py" if profile.startswith("gpu") else "train_cpu.py"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "exp"
        shutil.copytree(template, work, ignore=shutil.ignore_patterns(
            "__pycache__", "train.py", "train_cpu.py", "program.md"))
        shutil.copy(template / seed_script, work / "train.py")
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "prepare.py", "run", "--profile", profile, "--data", args.data,
             "--seed", "0", "--result", "result.json", "--cache-dir", str(cache_dir),
             "--splits", "val,test", "--budget-fraction", repr(args.budget_fraction)],
            cwd=work, env=env, capture_output=True, text=True)
        wall = time.monotonic() - start
        if proc.returncode != 0:
            raise SystemExit(f"error: {template} {profile} failed: {proc.stderr.strip()[-600:]}")
        result = json.loads((work / "result.json").read_text())
    result["wall_seconds"] = wall
    result["outside_seconds"] = wall - result["training_seconds"]
    result["tokens_per_s"] = result["total_tokens_M"] * 1e6 / result["training_seconds"]
    return result


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r.get(key, float("nan")) for r in rows)


def bench(profile: str, old: Path, args: argparse.Namespace, cache_dir: Path) -> None:
    subprocess.run([sys.executable, str(TEMPLATE / "prepare.py"), "prepare", "--profile", profile,
                    "--data", args.data, "--cache-dir", str(cache_dir)], check=True,
                   capture_output=True)
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for _ in range(args.runs):
        for name, template in (("old", old), ("new", TEMPLATE)):
            runs[name].append(run_once(template, profile, args, cache_dir))
    o, n = runs["old"], runs["new"]
    same = {r["val_bpb"] for r in o} | {r["val_bpb"] for r in n}
    print(f"\n{profile}: {args.runs} runs each, alternating; val_bpb "
          f"{'identical' if len(same) == 1 else 'DIFFERS: ' + str(sorted(same))} "
          f"({n[0]['val_bpb']:.6f}); device {n[0]['device']}; sandboxed {n[0].get('sandboxed')}")
    print("| harness | tokens/s | training s | process wall s | outside budget s |")
    print("|---|---|---|---|---|")
    for name, rows in runs.items():
        print(f"| {name} | {median(rows, 'tokens_per_s'):,.0f} | {median(rows, 'training_seconds'):.2f} "
              f"| {median(rows, 'wall_seconds'):.2f} | {median(rows, 'outside_seconds'):.2f} |")
    print(f"ratio new/old tokens/s: {median(n, 'tokens_per_s') / median(o, 'tokens_per_s'):.3f}; "
          f"outside budget new - old: "
          f"{median(n, 'outside_seconds') - median(o, 'outside_seconds'):+.2f} s; new's causality "
          f"pass {median(n, 'causality_seconds'):.2f} s ({n[0]['causality_cuts']} cuts + "
          f"{n[0]['causality_replayed']} replayed positions), hand-back wait "
          f"{median(n, 'handback_seconds'):.2f} s; logits via {n[0].get('logits_via')}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="c6dd3d2", help="git ref of the old harness")
    parser.add_argument("--baseline-dir", type=Path, default=None,
                        help="the old train_template folder itself (where there is no git)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profiles", default="cpu-micro,cpu-bench")
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--budget-fraction", type=float, default=1.0)
    parser.add_argument("--cache-dir", type=Path, default=Path(
        os.environ.get("EVOLVE_CACHE_DIR", Path.home() / ".cache" / "evolve")))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = args.baseline_dir or baseline_template(args.baseline, Path(tmp))
        for profile in args.profiles.split(","):
            bench(profile, old, args, args.cache_dir)


if __name__ == "__main__":
    main()
