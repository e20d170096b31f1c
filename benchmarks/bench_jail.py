"""What the jail costs a process at start: `python -c 'import torch'` plain vs jailed (bwrap),
interleaved so both see the same load; medians and their ratio.

    OMP_NUM_THREADS=1 python benchmarks/bench_jail.py --runs 15
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train_template"))

import jail  # noqa: E402

CODE = "import torch; torch.ones(4).sum()"
ENV = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}


def seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=ENV)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    problem = jail.sandbox_problem()
    if problem:
        raise SystemExit(f"no jail here: {problem}")
    with tempfile.TemporaryDirectory() as work:
        plain = [sys.executable, "-c", CODE]
        build_start = time.perf_counter()
        jailed = jail.jailed(plain, workdir=Path(work), env=ENV, limits=jail.ResourceLimits())
        build_s = time.perf_counter() - build_start
        seconds(plain), seconds(jailed)  # warm the page cache for both
        times: dict[str, list[float]] = {"plain": [], "jailed": []}
        for _ in range(runs):
            times["plain"].append(seconds(plain))
            times["jailed"].append(seconds(jailed))
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"runs: {runs}; jailed() built its argv in {build_s * 1000:.1f} ms")
    for name, value in medians.items():
        print(f"{name:>7}: median {value:.3f} s (min {min(times[name]):.3f}, "
              f"max {max(times[name]):.3f})")
    print(f"jail start-up: +{medians['jailed'] - medians['plain']:.3f} s, "
          f"ratio {medians['jailed'] / medians['plain']:.3f}")


if __name__ == "__main__":
    main()
