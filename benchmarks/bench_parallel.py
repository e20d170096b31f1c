"""Parallel strategy benchmark (issue 14): strategies with P workers, judged at equal rounds.

The strategies, settings, seeds and the quality measure are pre-registered in
benchmarks/STRATEGIES_PREREGISTERED.md. Each run drives the real controller with P virtual
workers whose runs take one round each (benchmarks/virtual_executor.py): deterministic under
its seed, whatever the number of cores. Quality = the mean test_bpb of the run's pick (lowest
search val_bpb so far) over fresh training seeds never used in the search.

    python benchmarks/bench_parallel.py --strategies one-agent --workers 1 --seeds 0 1 2 3 4 --out OUT
    python benchmarks/bench_parallel.py --workers 4 --seeds 0 1 2 3 4 --out OUT
    python benchmarks/bench_parallel.py --summarise OUT

Writes OUT/<strategy>-p<P>-s<seed>.json per run, a shared result cache in OUT/cache, and
prints markdown tables for benchmarks/RESULTS.md.

`--runner trusted` (the default) trains in a pool of persistent in-process workers
(benchmarks/trusted_runner.py): the same val_bpb, test_bpb, steps and tokens as the refereed
harness (tests/test_bench_trusted_runner.py), several times more trainings per minute, which
the full table's ~3,000 trainings need. It has no jail and no causality pass, so it is
refused unless every operator of every strategy run is our own offline `heuristic` or
`merge`. `--runner harness` runs every training through the real refereed harness
(`run_candidate`). The cache keeps the two runners' entries apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from trusted_runner import TrustedRunner, check_template  # noqa: E402
from virtual_executor import (  # noqa: E402
    HarnessRunner,
    ResultCache,
    Runner,
    VirtualExecutor,
    run_deterministic,
)

PROFILE = "cpu-bench"
FRESH_SEEDS = (1001, 1002, 1003)  # never a run seed: quality is judged on these only
EQUAL_EXPERIMENTS = 48
EXPERIMENTS = {1: 48, 4: 64, 8: 72}  # rounds: 48, 16, 9 (the goal's checkpoints)
MERGE_WEIGHT = 0.25
COMMON = ["test.final=false", "mutation.max_concurrent_proposals=1", "budget.max_hours=1000"]
HEURISTIC = "mutation.operators=[{kind: heuristic, weight: 1.0}]"
WITH_MERGE = ("mutation.operators=[{kind: heuristic, weight: 1.0}, "
              f"{{kind: merge, weight: {MERGE_WEIGHT}}}]")
# a proposal only when a worker is free, from the champion of that moment (session 6's addendum)
SEQUENTIAL = "mutation.lookahead=0"
POPULATION = ["population.size=4", "population.islands=2", "population.migration_interval=6",
              "selection.strategy=tournament", "selection.tournament_size=2"]


TRUSTED_OPERATORS = ("heuristic", "merge")  # our own offline code: the trusted runner's only


def make_runner(name: str, cores: int) -> Runner:
    """The named runner; close() it when done (the trusted one holds `cores` processes)."""
    if name == "harness":
        return HarnessRunner()
    if name == "trusted":
        return TrustedRunner(cores)
    raise ValueError(f"unknown runner {name!r} (known: trusted, harness)")


def check_runner(runner: str, config: Any) -> None:
    """Refuse the trusted runner for anything but our own operators' candidates."""
    if runner != "trusted":
        return
    others = sorted({op.kind for op in config.mutation.operators} - set(TRUSTED_OPERATORS))
    if others:
        raise ValueError(
            f"--runner trusted runs candidates without a jail or a causality check, so only "
            f"for the offline operators {', '.join(TRUSTED_OPERATORS)}; run {config.name!r} has "
            f"operator(s) {', '.join(others)}: use --runner harness")
    check_template(config.template_dir)


def greedy(islands: int, migration: str = "ring") -> list[str]:
    return ["selection.strategy=greedy", "population.size=1", f"population.islands={islands}",
            "population.migration_interval=0", f"population.migration={migration}"]


def strategies(p: int) -> dict[str, tuple[str, list[str]]]:
    """Name -> (config, overrides) at P workers (pre-registered)."""
    return {
        "one-agent": ("configs/one-agent.yaml", []),
        "independent-greedy": ("configs/default.yaml", [*greedy(p), HEURISTIC]),
        "gossip-greedy": ("configs/default.yaml", [*greedy(p, "broadcast"), HEURISTIC]),
        "parallel-greedy": ("configs/default.yaml", [*greedy(1), HEURISTIC]),
        "population": ("configs/default.yaml", [*POPULATION, HEURISTIC]),
        "parallel-greedy+merge": ("configs/default.yaml", [*greedy(1), WITH_MERGE]),
        "population+merge": ("configs/default.yaml", [*POPULATION, WITH_MERGE]),
        # added in session 6 (STRATEGIES_PREREGISTERED.md, last addendum): a proposal only
        # when a worker is free, from the champion of that moment
        "parallel-greedy-la0": ("configs/default.yaml",
                                [*greedy(1), HEURISTIC, SEQUENTIAL]),
    }


# ------------------------------------------------------------------ one run


def run_config(strategy: str, p: int, seed: int, experiments: int, out: Path,
               profile: str = PROFILE, template: str | None = None) -> tuple[Path, list[str]]:
    """The config file and overrides of one run."""
    config, extra = strategies(p)[strategy]
    return REPO / config, [
        f"profile={profile}", f"seed={seed}", f"budget.max_experiments={experiments}",
        f"workers.count={p}", f"name={strategy.replace('+', '_')}-p{p}-s{seed}",
        f"output.results_dir={out}/runs", *COMMON, *extra,
        *([f"template={template}"] if template else [])]


def search(strategy: str, p: int, seed: int, experiments: int, out: Path, cores: int,
           cache: ResultCache | None, profile: str = PROFILE, template: str | None = None,
           runner: Runner | None = None) -> Path:
    """Drive the real controller over P virtual workers; returns the run directory.
    `template`: another template than the shipped one (the smoke test's stand-in);
    `runner`: what trains each candidate (default: the refereed harness)."""
    config, overrides = run_config(strategy, p, seed, experiments, out, profile, template)
    return drive(config, overrides, p, cores, cache, runner)


def drive(config: Path, overrides: list[str], p: int, cores: int, cache: ResultCache | None,
          runner: Runner | None = None) -> Path:
    """Run `config` with `overrides` through the real controller over P virtual workers (one
    round of virtual time a run, `cores` real trainings at once); returns the run directory.
    Deterministic under the run's seed when the overrides hold COMMON (proposals then take no
    virtual time). `runner` (default: the refereed harness) is refused where it cannot be
    trusted with the run's operators."""
    from evolve.config import load_config
    from evolve.controller.shell import Controller
    from evolve.controller.wiring import plan_run
    from evolve.guard.datahash import reference_hashes
    from evolve.run.app import Run, RunRecorder, build_mutators
    from population.store import Store

    runner = runner or HarnessRunner()
    check_runner(runner.name, load_config(config, overrides))
    run = Run.create(config, overrides)
    cfg = run.config
    executor = VirtualExecutor(p, cores=cores, cache=cache, runner=runner)
    store = Store.open(run.run_dir.store_path)
    try:
        controller = Controller(plan_run(cfg), store, executor, build_mutators(cfg, store),
                                RunRecorder(run.run_dir, None), work_root=run.run_dir.work_dir,
                                clock=executor.clock, tick_s=3600.0)
        controller.template_hash, controller.data_hash = reference_hashes(
            store, cfg.template_dir, cfg.profile, cfg.data)
        executor.bind(controller.idle)
        asyncio.run(controller.run())
    finally:
        store.close()
    return run.run_dir.path


def fresh_quality(files: dict[str, str], template: str, profile: str, data: str,
                  hashes: tuple[str, str], cache: ResultCache, work: Path,
                  runner: Runner | None = None, cores: int = 1) -> dict[str, float]:
    """Mean test_bpb (and val_bpb) of one candidate's code over FRESH_SEEDS (cached runs).
    `cores` > 1 trains the seeds at once (the same numbers: each seed's run is its own)."""
    from evolve.workers.runner import RunRequest
    from population.candidate import source_hash

    def one(seed: int) -> dict[str, Any]:
        request = RunRequest(candidate_id=f"fresh-{source_hash(files)[:12]}-s{seed}", files=files, template_dir=template,
                             profile=profile, data=data, seed=seed, timeout_s=900.0,
                             work_root=str(work), splits=("val", "test"),
                             template_hash=hashes[0], data_hash=hashes[1], network="allow")
        return run_deterministic(request, cache, runner)

    tests, vals = [], []
    with ThreadPoolExecutor(cores) as pool:
        # one core: lazily, so that the seeds after a failed one are not run
        for entry in (pool.map if cores > 1 else map)(one, FRESH_SEEDS):
            if entry["outcome"] != "done":
                return {"test": float("inf"), "val": float("inf")}
            tests.append(float(entry["metrics"]["test_bpb"]))
            vals.append(float(entry["metrics"]["val_bpb"]))
    return {"test": statistics.fmean(tests), "val": statistics.fmean(vals)}


def analyse(run_path: Path, cache: ResultCache, cores: int,
            runner: Runner | None = None) -> dict[str, Any]:
    """Rounds, picks and their fresh-seed quality, share of children from the best, merges."""
    from evolve.config import load_config
    from population.candidate import Status
    from population.store import Store

    cfg = load_config(run_path / "config.yaml")
    with Store.open(run_path / "store.sqlite", readonly=True) as store:
        hashes = (store.get_meta("template_hash") or "", store.get_meta("data_hash") or "")
        ran = [c for c in store.finished_in_order(include_rejected=True)]
        finished = [c for c in ran if c.status is not Status.REJECTED]
        done = [c for c in finished if c.status is Status.DONE]
        by_id = {c.id: c for c in store.finished_in_order(include_copies=True)}
        origin = store.get("root").created_at  # virtual time: the root is made at the start
    rounds = round(max(c.finished_at for c in finished) - origin)
    picks, curve = {}, []
    for r in range(1, rounds + 1):
        seen = [c for c in done if c.finished_at - origin <= r + 1e-9]
        pick = pick_of(seen)
        picks[pick.id] = pick
        curve.append(pick.id)
    by_exps = [c for c in done if finished.index(c) < EQUAL_EXPERIMENTS]
    at_equal = pick_of(by_exps).id
    picks[at_equal] = by_id[at_equal]
    work = run_path / "fresh"
    with ThreadPoolExecutor(cores) as pool:
        quality = dict(zip(picks, pool.map(
            lambda c: fresh_quality(dict(c.files), cfg.template_dir, cfg.profile, cfg.data,
                                    hashes, cache, work, runner), picks.values()), strict=True))
    return {
        "rounds": rounds, "experiments": len(finished), "curve": curve,
        "quality": {cid: q["test"] for cid, q in quality.items()},
        "quality_val": {cid: q["val"] for cid, q in quality.items()},
        "search_val": {cid: picks[cid].val_bpb for cid in picks},
        "at_equal": at_equal, "from_best": from_best_share(finished, done, by_id),
        "merges": merge_counts(ran, by_id),
        "descriptions": {cid: picks[cid].description for cid in picks},
    }


def pick_of(done: list) -> Any:
    """The user's pick among finished candidates: the lowest search val_bpb (ties: earliest)."""
    return min(done, key=lambda c: (c.val_bpb, c.finished_at))


def from_best_share(finished: list, done: list, by_id: dict) -> float:
    """Children whose parent's code was the best code finished when they were proposed."""
    hits = total = 0
    for child in finished:
        if child.parent_id is None or child.parent_id not in by_id:
            continue
        seen = [c for c in done if c.finished_at <= child.created_at + 1e-9]
        if not seen:
            continue
        best = min(seen, key=lambda c: (c.val_bpb, c.finished_at))
        total += 1
        hits += by_id[child.parent_id].source_hash == best.source_hash
    return hits / total if total else 0.0


def merge_counts(ran: list, by_id: dict) -> dict[str, int]:
    from population.candidate import Status

    merges = [c for c in ran if c.donor_id]
    clean = [c for c in merges if not c.reason.startswith("merge conflict")]
    improved = [c for c in merges if c.status is Status.DONE and c.parent_id in by_id
                and c.val_bpb < (by_id[c.parent_id].val_bpb or float("inf"))]
    return {"proposed": len(merges), "clean": len(clean), "improved": len(improved)}


def run_one(strategy: str, p: int, seed: int, out: Path, cores: int,
            experiments: int | None = None, profile: str = PROFILE,
            template: str | None = None, runner: Runner | None = None) -> dict[str, Any]:
    """Search, then judge the picks on fresh seeds; the row is also saved as JSON in `out`.
    `runner`: the one both the search and the judging use (default: the refereed harness)."""
    runner = runner or HarnessRunner()
    cache = ResultCache(out / "cache", runner.name)
    started = time.time()
    path = search(strategy, p, seed, experiments or EXPERIMENTS.get(p, 48), out, cores, cache,
                  profile, template, runner)
    searched = (cache.hits, cache.misses)
    row = {"strategy": strategy, "workers": p, "seed": seed, "run_dir": str(path),
           "runner": runner.name,
           **analyse(path, cache, cores, runner), "search_cache": {"hits": searched[0],
                                                           "misses": searched[1]},
           "cache": {"hits": cache.hits, "misses": cache.misses}, "wall_s": time.time() - started}
    (out / f"{strategy}-p{p}-s{seed}.json").write_text(json.dumps(row, indent=1))
    return row


# ------------------------------------------------------------------ summary


def quality_at(row: dict, r: int) -> float:
    curve = row["curve"]
    return row["quality"][curve[min(r, len(curve)) - 1]]


def rounds_to(row: dict, target: float) -> int | None:
    for r in range(1, len(row["curve"]) + 1):
        if quality_at(row, r) <= target:
            return r
    return None


def summarise(out: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*-p*-s*.json"))]
    agent = [r for r in rows if r["strategy"] == "one-agent"]
    if not agent:
        return "no one-agent runs yet: the target is its median quality at 48 experiments"
    target = statistics.median(r["quality"][r["at_equal"]] for r in agent)
    lines = [f"Target (one-agent median quality at {EQUAL_EXPERIMENTS} experiments, mean test_bpb "
             f"over seeds {', '.join(map(str, FRESH_SEEDS))}): {target:.4f}", "",
             "| strategy | P | seeds | quality at end: median (min–max) | at 48 exps: median | "
             "rounds to target (per seed) | speedup | children from best | merges prop./clean/impr. |",
             "|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["strategy"], r["workers"]), []).append(r)
    for (name, p), mine in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        end = [quality_at(r, len(r["curve"])) for r in mine]
        equal = [r["quality"][r["at_equal"]] for r in mine]
        reach = [rounds_to(r, target) for r in mine]
        # a seed that never reaches the target counts as infinitely slow: the median is
        # "not reached" (—) when half the seeds or more do not reach it
        median_rounds = statistics.median([x if x is not None else math.inf for x in reach])
        speed = ("—" if math.isinf(median_rounds)
                 else f"{EQUAL_EXPERIMENTS / median_rounds:.1f}")
        merges = [sum(r["merges"][k] for r in mine) for k in ("proposed", "clean", "improved")]
        lines.append(
            f"| {name} | {p} | {len(mine)} | {statistics.median(end):.4f} ({min(end):.4f}–"
            f"{max(end):.4f}) | {statistics.median(equal):.4f} | "
            f"{' '.join(str(x) if x else '—' for x in reach)} | {speed} | "
            f"{statistics.median(r['from_best'] for r in mine):.0%} | "
            f"{merges[0]}/{merges[1]}/{merges[2]} |")
    hits = sum(r["cache"]["hits"] for r in rows)
    misses = sum(r["cache"]["misses"] for r in rows)
    lines += ["", f"Cost: {misses} trainings run, {hits} cache hits "
                  f"(hit rate {hits / max(1, hits + misses):.0%}), "
                  f"{sum(r['wall_s'] for r in rows) / 3600:.2f} h of wall time over {len(rows)} runs "
                  f"(runner: {', '.join(sorted({r.get('runner', 'harness') for r in rows}))})."]
    return "\n".join(lines)


def p8_strategies(out: Path) -> list[str]:
    """The P = 8 arm as pre-registered when the budget does not allow all: the three
    strategies with the best median P = 4 quality at 48 experiments, plus `population` (the
    shipped default) if not among them; then the others, for as long as the budget lasts."""
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*-p4-s*.json"))]
    median: dict[str, float] = {}
    for name in {r["strategy"] for r in rows}:
        mine = [r["quality"][r["at_equal"]] for r in rows if r["strategy"] == name]
        median[name] = statistics.median(mine)
    ranked = sorted(median, key=lambda name: (median[name], name))
    first = ranked[:3] + ([] if "population" in ranked[:3] else ["population"])
    return first + [name for name in ranked if name not in first]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=[
        "independent-greedy", "gossip-greedy", "parallel-greedy", "population",
        "parallel-greedy+merge", "population+merge"])
    parser.add_argument("--workers", type=int, default=4, help="P, the virtual workers")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--experiments", type=int, default=None,
                        help="per run (default: 48 at P=1, 64 at P=4, 72 at P=8)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                        help="real trainings at once (results do not depend on it)")
    parser.add_argument("--profile", default=PROFILE)
    parser.add_argument("--template", default=None, help="another template (smoke tests)")
    parser.add_argument("--runner", choices=("trusted", "harness"), default="trusted",
                        help="trusted: in-process workers, the harness's numbers, heuristic/"
                             "merge only (default); harness: the refereed harness per run")
    parser.add_argument("--out", default="/tmp/evolve-bench-parallel")
    parser.add_argument("--summarise", metavar="OUT")
    parser.add_argument("--p8-order", metavar="OUT",
                        help="print the P = 8 arm's strategies in their pre-registered order")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.summarise:
        print(summarise(Path(args.summarise)))
        return
    if args.p8_order:
        print(" ".join(p8_strategies(Path(args.p8_order))))
        return
    out = Path(args.out)
    from evolve.config import load_config

    for strategy in args.strategies:  # refused before anything runs, not half-way through
        check_runner(args.runner, load_config(*run_config(
            strategy, args.workers, 0, 1, out, args.profile, args.template)))
    (out / "runs").mkdir(parents=True, exist_ok=True)
    runner = make_runner(args.runner, args.cores)
    try:
        for seed in args.seeds:
            for strategy in args.strategies:
                row = run_one(strategy, args.workers, seed, out, args.cores, args.experiments,
                              args.profile, args.template, runner)
                print(f"{strategy} P={args.workers} seed {seed}: end quality "
                      f"{quality_at(row, len(row['curve'])):.4f} in {row['rounds']} rounds, "
                      f"{row['wall_s']:.0f} s ({args.runner} runner)", flush=True)
    finally:
        runner.close()
    print(summarise(out))


if __name__ == "__main__":
    main()
