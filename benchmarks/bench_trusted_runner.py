"""The trusted runner against the refereed harness on candidates of a real benchmark run:
the largest score difference, and trainings per minute side by side (not part of CI).

    python benchmarks/bench_trusted_runner.py --run RUN_DIR [--count 10] [--cores 2] [--repeats 2]

Takes the first `count` distinct candidates (root included) that finished in RUN_DIR's store,
(on today's template, whichever harness the run was made with)
trains each on its own search seed with both runners (`cores` at once), and repeats the pair
of batches `repeats` times, alternating, so both see the same machine. The trusted workers
are started and warmed (torch imported, corpus loaded) before the clock starts: a benchmark
keeps them for its whole length.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
TEMPLATE = REPO / "train_template"  # today's harness, whatever the run was made with

from trusted_runner import TrustedRunner  # noqa: E402

from evolve.config import load_config  # noqa: E402
from evolve.workers.runner import RunRequest, RunResult, run_candidate  # noqa: E402


def requests(run_dir: Path, count: int, work: Path) -> list[RunRequest]:
    from population.candidate import Status
    from population.store import Store

    cfg = load_config(run_dir / "config.yaml")
    with Store.open(run_dir / "store.sqlite", readonly=True) as store:
        seen, chosen = set(), []
        for c in store.finished_in_order():
            if c.status is Status.DONE and c.source_hash not in seen:
                seen.add(c.source_hash)
                chosen.append(c)
    return [RunRequest(candidate_id=c.id, files=dict(c.files), template_dir=str(TEMPLATE),
                       profile=cfg.profile, data=cfg.data, seed=cfg.seed, timeout_s=900.0,
                       work_root=str(work), splits=("val", "test"), network="allow")
            for c in chosen[:count]]


def batch(runner, todo: list[RunRequest], cores: int) -> tuple[list[RunResult], float]:
    started = time.perf_counter()
    with ThreadPoolExecutor(cores) as pool:
        results = list(pool.map(runner, todo))
    return results, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a benchmark run's directory")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work = Path(tempfile.mkdtemp(prefix="evolve-trusted-bench-"))
    todo = requests(args.run, args.count, work)
    rates: dict[str, list[float]] = {"harness": [], "trusted": []}
    with TrustedRunner(args.cores) as trusted:
        batch(trusted, todo[: args.cores], args.cores)  # warm: torch imported, data loaded
        for _ in range(args.repeats):
            harness, h_s = batch(run_candidate, todo, args.cores)
            fast, t_s = batch(trusted, todo, args.cores)
            rates["harness"].append(60 * len(todo) / h_s)
            rates["trusted"].append(60 * len(todo) / t_s)
    diffs = []
    print("| candidate | harness val_bpb | trusted val_bpb | |diff| val | |diff| test | steps |")
    print("|---|---|---|---|---|---|")
    for req, h, t in zip(todo, harness, fast, strict=True):
        assert h.outcome == t.outcome, (req.candidate_id, h.reason, t.reason)
        if h.outcome != "done":
            print(f"| {req.candidate_id} | {h.outcome} | {t.outcome} | | | |")
            continue
        dv = abs(h.metrics["val_bpb"] - t.metrics["val_bpb"])
        dt = abs(h.metrics["test_bpb"] - t.metrics["test_bpb"])
        same = h.metrics["num_steps"] == t.metrics["num_steps"] \
            and h.metrics["total_tokens_M"] == t.metrics["total_tokens_M"]
        diffs += [dv, dt]
        print(f"| {req.candidate_id} | {h.metrics['val_bpb']:.9f} | {t.metrics['val_bpb']:.9f} "
              f"| {dv:.1e} | {dt:.1e} | {h.metrics['num_steps']} {'=' if same else '!='} "
              f"{t.metrics['num_steps']} |")
    print(f"\nmax |diff| over {len(diffs) // 2} candidates (val and test): {max(diffs):.2e}")
    for name, values in rates.items():
        print(f"{name}: {statistics.median(values):.1f} trainings/min (median of "
              f"{len(values)}: {', '.join(f'{v:.1f}' for v in values)}), {args.cores} at once")
    print(f"ratio: {statistics.median(rates['trusted']) / statistics.median(rates['harness']):.1f}x")


if __name__ == "__main__":
    main()
