"""The refereed harness against the one before it, side by side in one sitting.

    OMP_NUM_THREADS=1 python benchmarks/bench_judge.py [--baseline c6dd3d2] [--runs 5]
        [--profiles cpu-micro,cpu-bench] [--budget-fraction 1.0] [--data synthetic]
        [--new-dir DIR] [--before-dir DIR]

The baseline harness is `git archive <ref> train_template` (the in-process harness); the new
one is this working tree's. Runs alternate old/new so load on the machine hits both alike.
For each: val_bpb (must be equal), clocked tokens/s (tokens over training_seconds), the
seconds outside the budget (the process's wall time minus training_seconds: start-up,
hand-back, scoring, test scoring, the causality pass), the process's wall time and, where
this machine lets the bench make a cgroup, the CPU seconds of every process of the run (the
jailed roles' children are not accounted to the bench by the kernel's rusage, so a cgroup
counts them), as medians, with the new harness's own breakdown.

The two clocks differ: the old harness clocked train() from its call (the model's
construction and the first step's warm-up inside), the referee clocks from the first batch
it serves to the budget's end. On a token budget both do the same training work, so the
difference in process wall time is the new harness's extra cost like for like; the
difference in "outside budget" adds to it what moved out of the clock.

On a GPU box, pass --profiles gpu-5min --budget-fraction 0.1 (see benchmarks/gpu_judge.sh).
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


class CpuMeter:
    """CPU seconds of a process and all its descendants, from a cgroup made for it (cgroup v1
    cpuacct, else a v2 group under ours); None where this machine allows neither."""

    def __init__(self) -> None:
        self.path: Path | None = None
        v1 = Path("/sys/fs/cgroup/cpuacct")
        own = _own_v2_group()
        for base, stat in ((v1, "cpuacct.usage"), (own, "cpu.stat")):
            if base is None or not (base / stat).exists():
                continue
            try:
                path = base / f"bench-judge-{os.getpid()}-{time.monotonic_ns()}"
                path.mkdir()
            except OSError:
                continue
            self.path, self.stat = path, stat
            return

    def enter(self) -> None:  # in the child, before exec
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def seconds(self) -> float | None:
        if self.path is None:
            return None
        text = (self.path / self.stat).read_text()
        try:
            self.path.rmdir()
        except OSError:
            pass
        if self.stat == "cpuacct.usage":
            return int(text) / 1e9
        usage = dict(line.split() for line in text.splitlines())
        return int(usage["usage_usec"]) / 1e6


def _own_v2_group() -> Path | None:
    """Our cgroup v2 folder (the unified tree at /sys/fs/cgroup or /sys/fs/cgroup/unified)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    path = next((line.split(":", 2)[2] for line in lines if line.startswith("0::")), None)
    if path is None:
        return None
    for mount in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
        if (mount / "cgroup.controllers").exists():
            return mount / path.lstrip("/")
    return None


def run_once(template: Path, profile: str, args: argparse.Namespace, cache_dir: Path) -> dict:
    seed_script = "train.py" if profile.startswith("gpu") else "train_cpu.py"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "exp"
        shutil.copytree(template, work, ignore=shutil.ignore_patterns(
            "__pycache__", "train.py", "train_cpu.py", "program.md"))
        shutil.copy(template / seed_script, work / "train.py")
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        meter = CpuMeter()
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "prepare.py", "run", "--profile", profile, "--data", args.data,
             "--seed", "0", "--result", "result.json", "--cache-dir", str(cache_dir),
             "--splits", "val,test", "--budget-fraction", repr(args.budget_fraction)],
            cwd=work, env=env, capture_output=True, text=True, preexec_fn=meter.enter)
        wall = time.monotonic() - start
        cpu = meter.seconds()
        if proc.returncode != 0:
            raise SystemExit(f"error: {template} {profile} failed: {proc.stderr.strip()[-600:]}")
        result = json.loads((work / "result.json").read_text())
    result["wall_seconds"] = wall
    result["cpu_seconds"] = float("nan") if cpu is None else cpu
    result["outside_seconds"] = wall - result["training_seconds"]
    result["tokens_per_s"] = result["total_tokens_M"] * 1e6 / result["training_seconds"]
    return result


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r.get(key, float("nan")) for r in rows)


def bench(profile: str, harnesses: dict[str, Path], args: argparse.Namespace,
          cache_dir: Path) -> None:
    """Alternate the harnesses run by run; print each one's medians and its gaps to "old"."""
    subprocess.run([sys.executable, str(TEMPLATE / "prepare.py"), "prepare", "--profile", profile,
                    "--data", args.data, "--cache-dir", str(cache_dir)], check=True,
                   capture_output=True)
    runs: dict[str, list[dict]] = {name: [] for name in harnesses}
    load_before = os.getloadavg()[0]
    for _ in range(args.runs):
        for name, template in harnesses.items():
            runs[name].append(run_once(template, profile, args, cache_dir))
    o, n = runs["old"], runs["new"]
    same = {r["val_bpb"] for rows in runs.values() for r in rows}
    spread = max(same) - min(same)
    print(f"\n{profile}: {args.runs} runs each, alternating; val_bpb "
          f"{'identical' if spread == 0 else f'within {spread:.1e}: ' + str(sorted(same))} "
          f"({n[0]['val_bpb']:.6f}); device {n[0]['device']}; sandboxed {n[0].get('sandboxed')}; "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on "
          f"{os.cpu_count()} CPUs")
    print("| harness | tokens/s | training s | process wall s | outside budget s | CPU s |")
    print("|---|---|---|---|---|---|")
    for name, rows in runs.items():
        print(f"| {name} | {median(rows, 'tokens_per_s'):,.0f} | {median(rows, 'training_seconds'):.2f} "
              f"| {median(rows, 'wall_seconds'):.2f} | {median(rows, 'outside_seconds'):.2f} "
              f"| {median(rows, 'cpu_seconds'):.2f} |")
    for name, rows in runs.items():
        if name == "old":
            continue
        paired = [b["wall_seconds"] - a["wall_seconds"] for a, b in zip(o, rows, strict=True)]
        print(f"{name} vs old: tokens/s ratio "
              f"{median(rows, 'tokens_per_s') / median(o, 'tokens_per_s'):.3f}; process wall "
              f"{statistics.median(paired):+.2f} s (median of the {len(paired)} adjacent pairs); "
              f"CPU {median(rows, 'cpu_seconds') - median(o, 'cpu_seconds'):+.2f} s; outside "
              f"budget {median(rows, 'outside_seconds') - median(o, 'outside_seconds'):+.2f} s; "
              f"causality pass {median(rows, 'causality_seconds'):.2f} s "
              f"({rows[0]['causality_cuts']} cuts + {rows[0]['causality_replayed']} replayed "
              f"positions), hand-back wait {median(rows, 'handback_seconds'):.2f} s; logits via "
              f"{rows[0].get('logits_via')}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="c6dd3d2", help="git ref of the old harness")
    parser.add_argument("--baseline-dir", type=Path, default=None,
                        help="the old train_template folder itself (where there is no git)")
    parser.add_argument("--new-dir", type=Path, default=TEMPLATE,
                        help="the new harness's train_template folder (default: this tree's)")
    parser.add_argument("--before-dir", type=Path, default=None,
                        help="a third harness folder run alongside (e.g. the new harness before a "
                             "change), labelled 'before'")
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
            harnesses = {"old": old}
            if args.before_dir is not None:
                harnesses["before"] = args.before_dir.resolve()
            harnesses["new"] = args.new_dir.resolve()
            bench(profile, harnesses, args, args.cache_dir)


if __name__ == "__main__":
    main()
