"""Demo defaults benchmark (issue 14, item 4): does a new default make the embedded demo better?

The embedded demo is `evolve run configs/default.yaml`: profile cpu-tiny, 2 workers, 20
experiments, the offline heuristic mutator. Each variant below is that run with a few
overrides; each runs under run seeds 0-4, driven as the parallel strategy benchmark drives its
runs (bench_parallel.drive: the real controller over P = 2 virtual workers of one round per
run, deterministic under the seed whatever the cores; the trusted in-process runner by
default; the result cache keyed by runner). Quality of a run = the mean test_bpb of its pick
(the lowest search val_bpb at the end) over the fresh training seeds 1001-1003, as
bench_parallel.fresh_quality judges it. Lower is better.

    python benchmarks/bench_demo_defaults.py --out OUT                     # today, parallel-greedy(+merge)
    python benchmarks/bench_demo_defaults.py --variants today shipped --out OUT
    python benchmarks/bench_demo_defaults.py --variant 'pg-la0=population.size=1;...' --out OUT
    python benchmarks/bench_demo_defaults.py --summarise OUT

`today` is the demo as shipped before issue 14 changed the defaults (benchmarks/
demo_today.yaml, a frozen copy of configs/default.yaml at 634d89a); `shipped` is
configs/default.yaml as it is now, so that `--variants today shipped` is the issue's check
once the defaults have changed. Only the seed and the variant's overrides differ between
runs; every run also gets DEMO_FIXED (what makes a run deterministic under the virtual
executor, and nothing that adds runs outside the 20 experiments: noise floor, confirmation
re-runs, fidelity stages and final test scoring all off). One JSON per (variant, seed) in
OUT; a second invocation skips the rows already there (and refuses one run with another
config), so an interrupted run resumes where it stopped, its trainings served by OUT/cache.

Cost: at most 23 trainings a row (20 experiments and 3 fresh seeds), fewer where variants
share runs (the cache); the 15 rows of the default variants ran 223 of 345 on cpu-micro. One
cpu-tiny training with the trusted runner took 14.6 s warm (17.6 s with the worker's start),
niced beside another benchmark on a 2-core box: about 30-45 min for the 15 rows on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_parallel as bench  # noqa: E402
from virtual_executor import ResultCache, Runner  # noqa: E402

WORKERS = 2  # the demo's workers.count: P virtual workers
EXPERIMENTS = 20  # the demo's budget.max_experiments
PROFILE = "cpu-tiny"  # the demo's profile
SEEDS = (0, 1, 2, 3, 4)
BASELINE = "today"
TODAY = REPO / "benchmarks" / "demo_today.yaml"
SHIPPED = REPO / "configs" / "default.yaml"
# bench_parallel's COMMON (test.final off; proposals one at a time and taking no virtual time:
# the virtual executor's determinism; max_hours out of reach, on the virtual clock anyway),
# and every setting that would add runs beside the 20 experiments turned off explicitly, in
# case a config turns one on: the comparison is at equal trainings
DEMO_FIXED = [*bench.COMMON, "noise.seeds=1", "confirm.seeds=0", "fidelity.stages=[]"]
VARIANTS: dict[str, tuple[Path, list[str]]] = {
    "today": (TODAY, []),
    "shipped": (SHIPPED, []),
    "parallel-greedy": (TODAY, bench.greedy(1)),
    "parallel-greedy+merge": (TODAY, [*bench.greedy(1), bench.WITH_MERGE]),
    # session 6's pre-registered addendum: a proposal only when a worker is free, from the
    # champion of that moment (benchmarks/STRATEGIES_PREREGISTERED.md)
    "parallel-greedy-la0": (TODAY, [*bench.greedy(1), bench.SEQUENTIAL]),
    "parallel-greedy-la0+merge": (TODAY, [*bench.greedy(1), bench.WITH_MERGE, bench.SEQUENTIAL]),
}
DEFAULT_VARIANTS = ["today", "parallel-greedy", "parallel-greedy+merge"]
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def parse_variant(text: str) -> tuple[str, tuple[Path, list[str]]]:
    """`NAME=override;override` (on today's demo), or `NAME=path.yaml;override;...`."""
    name, sep, spec = text.partition("=")
    if not sep or not NAME.fullmatch(name):
        raise ValueError(f"--variant {text!r}: expected NAME=override;override (NAME of letters, "
                         f"digits, '.', '_', '+', '-')")
    items = [item.strip() for item in spec.split(";") if item.strip()]
    base = TODAY
    if items and "=" not in items[0] and items[0].endswith((".yaml", ".yml")):
        base = Path(items.pop(0))
        base = (base if base.is_absolute() or base.exists() else REPO / base).resolve()
        if not base.is_file():
            raise ValueError(f"--variant {name}: config file {base} not found")
    bad = [item for item in items if "=" not in item]
    if bad:
        raise ValueError(f"--variant {name}: {bad[0]!r} is not an override (section.key=value)")
    return name, (base, items)


def spec_of(variant: str, table: dict, profile: str, experiments: int) -> dict[str, Any]:
    """What decides a variant's runs (besides the seed): recorded in each row, checked on resume."""
    config, extra = table[variant]
    return {"config": str(config.relative_to(REPO) if config.is_relative_to(REPO) else config),
            "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest()[:16],
            "overrides": extra, "profile": profile, "experiments": experiments,
            "workers": WORKERS}


def run_config(variant: str, table: dict, seed: int, out: Path, profile: str,
               experiments: int) -> tuple[Path, list[str]]:
    """The config file and overrides of one demo run."""
    config, extra = table[variant]
    return config, [
        f"profile={profile}", f"seed={seed}", f"budget.max_experiments={experiments}",
        f"workers.count={WORKERS}", f"name=demo-{variant.replace('+', '_')}-s{seed}",
        f"output.results_dir={out}/runs", *DEMO_FIXED, *extra]


def judge(run_path: Path, cache: ResultCache, runner: Runner, cores: int) -> dict[str, Any]:
    """The run's pick at the end and its fresh-seed quality; rounds, children from the best."""
    from evolve.config import load_config
    from population.candidate import Status
    from population.store import Store

    cfg = load_config(run_path / "config.yaml")
    with Store.open(run_path / "store.sqlite", readonly=True) as store:
        hashes = (store.get_meta("template_hash") or "", store.get_meta("data_hash") or "")
        ran = list(store.finished_in_order(include_rejected=True))
        finished = [c for c in ran if c.status is not Status.REJECTED]
        done = [c for c in finished if c.status is Status.DONE]
        by_id = {c.id: c for c in store.finished_in_order(include_copies=True)}
        origin = store.get("root").created_at
    pick = bench.pick_of(done)
    quality = bench.fresh_quality(dict(pick.files), cfg.template_dir, cfg.profile, cfg.data,
                                  hashes, cache, run_path / "fresh", runner, cores)
    return {"experiments": len(finished),
            "rounds": round(max(c.finished_at for c in finished) - origin),
            "pick": pick.id, "pick_description": pick.description, "search_val": pick.val_bpb,
            "quality": quality["test"], "quality_val": quality["val"],
            "from_best": bench.from_best_share(finished, done, by_id),
            "merges": bench.merge_counts(ran, by_id)}


def row_path(out: Path, variant: str, seed: int) -> Path:
    return out / f"{variant}-s{seed}.json"


def finished_row(out: Path, variant: str, seed: int, spec: dict) -> dict | None:
    """The row already in `out`, if any; one run with another spec is refused, not mixed in."""
    path = row_path(out, variant, seed)
    if not path.exists():
        return None
    row = json.loads(path.read_text())
    if row.get("spec") != spec:
        raise ValueError(f"{path} was run with {row.get('spec')}, not {spec}: delete it or "
                         f"use another --out")
    return row


def run_one(variant: str, table: dict, seed: int, out: Path, cores: int, runner: Runner,
            profile: str = PROFILE, experiments: int = EXPERIMENTS) -> dict[str, Any]:
    """Search, judge the pick on the fresh seeds; the row is saved as OUT/<variant>-s<seed>.json."""
    cache = ResultCache(out / "cache", runner.name)
    started = time.time()
    config, overrides = run_config(variant, table, seed, out, profile, experiments)
    path = bench.drive(config, overrides, WORKERS, cores, cache, runner)
    searched = {"hits": cache.hits, "misses": cache.misses}
    row = {"variant": variant, "seed": seed, "spec": spec_of(variant, table, profile, experiments),
           "fixed": DEMO_FIXED, "run_dir": str(path), "runner": runner.name,
           **judge(path, cache, runner, cores), "search_cache": searched,
           "cache": {"hits": cache.hits, "misses": cache.misses}, "wall_s": time.time() - started}
    target = row_path(out, variant, seed)
    temp = target.with_name(f".{target.name}.tmp")
    temp.write_text(json.dumps(row, indent=1))
    os.replace(temp, target)  # a row is there whole or not at all: resume trusts it
    return row


# ------------------------------------------------------------------ summary


def load_rows(out: Path) -> list[dict[str, Any]]:
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*-s*.json"))]
    return [r for r in rows if "variant" in r]


def summarise(out: Path, baseline: str = BASELINE) -> str:
    """Per variant: median and range over seeds, per-seed values, the verdict against
    `baseline`; then the cost. Markdown, for benchmarks/RESULTS.md."""
    rows = load_rows(out)
    if not rows:
        return f"no rows in {out} yet"
    groups: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (r["variant"], r["seed"])):
        groups.setdefault(r["variant"], []).append(r)
    base = groups.get(baseline)
    base_median = statistics.median(r["quality"] for r in base) if base else None
    lines = [f"Demo: {WORKERS} workers, quality = mean test_bpb of the run's pick over fresh "
             f"seeds {', '.join(map(str, bench.FRESH_SEEDS))} (lower is better)", "",
             "| variant | config + overrides | seeds | quality: median (min–max) | per seed | "
             f"median lower than {baseline}'s |", "|---|---|---|---|---|---|"]
    for name, mine in groups.items():
        qs = [r["quality"] for r in mine]
        median = statistics.median(qs)
        spec = mine[0]["spec"]
        what = "; ".join([spec["config"], *spec["overrides"]]).replace("|", "\\|")
        verdict = ("(baseline)" if name == baseline else "—" if base_median is None
                   else "yes" if median < base_median else "no")
        per_seed = ", ".join(f"s{r['seed']} {r['quality']:.4f}" for r in mine)
        lines.append(
            f"| {name} | {what} | {len(mine)} | {median:.4f} ({min(qs):.4f}–{max(qs):.4f}) | "
            f"{per_seed} | {verdict} |")
    hits = sum(r["cache"]["hits"] for r in rows)
    misses = sum(r["cache"]["misses"] for r in rows)
    profiles = sorted({f"{r['spec']['profile']}, {r['spec']['experiments']} experiments"
                       for r in rows})
    lines += ["", f"Cost: {misses} trainings run, {hits} cache hits (hit rate "
                  f"{hits / max(1, hits + misses):.0%}), {sum(r['wall_s'] for r in rows) / 3600:.2f}"
                  f" h of wall time over {len(rows)} runs ({'; '.join(profiles)}; runner: "
                  f"{', '.join(sorted({r['runner'] for r in rows}))})."]
    return "\n".join(lines)


def verdicts(out: Path, baseline: str = BASELINE) -> dict[str, bool]:
    """Variant -> its median quality is lower than the baseline's (for scripts and tests)."""
    groups: dict[str, list[float]] = {}
    for r in load_rows(out):
        groups.setdefault(r["variant"], []).append(r["quality"])
    if baseline not in groups:
        return {}
    base = statistics.median(groups[baseline])
    return {name: statistics.median(qs) < base for name, qs in groups.items() if name != baseline}


# ------------------------------------------------------------------ command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=None,
                        help=f"which to run (default: {' '.join(DEFAULT_VARIANTS)}, plus every "
                             f"--variant); known: {', '.join(VARIANTS)}")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=SPEC",
                        help="add a variant: 'NAME=override;override' on today's demo, or "
                             "'NAME=path.yaml;override;...' on another config")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--profile", default=PROFILE, help="the demo's cpu-tiny (smoke: cpu-micro)")
    parser.add_argument("--experiments", type=int, default=EXPERIMENTS,
                        help="per run (the demo's 20)")
    parser.add_argument("--baseline", default=BASELINE, help="the variant the verdict compares to")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                        help="real trainings at once (results do not depend on it)")
    parser.add_argument("--runner", choices=("trusted", "harness"), default="trusted",
                        help="trusted: in-process workers, heuristic/merge only (default); "
                             "harness: the refereed harness per run")
    parser.add_argument("--out", default="/tmp/evolve-bench-demo")
    parser.add_argument("--summarise", metavar="OUT")
    return parser.parse_args(argv)


def plan(args: argparse.Namespace) -> tuple[dict, list[tuple[str, int]]]:
    """The variant table (built-in and --variant) and the (variant, seed) rows still to run,
    checked before anything runs: an unknown name, a bad override, a runner refused for a
    variant or a row in OUT run with another config stops here, not half-way."""
    from evolve.config import load_config

    table = dict(VARIANTS)
    added = [parse_variant(text) for text in args.variant]
    table.update(added)
    chosen = args.variants or [*DEFAULT_VARIANTS,
                               *(name for name, _ in added if name not in DEFAULT_VARIANTS)]
    unknown = [name for name in chosen if name not in table]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)} (known: {', '.join(table)})")
    out, pending = Path(args.out), []
    for name in chosen:
        bench.check_runner(args.runner, load_config(*run_config(
            name, table, 0, out, args.profile, args.experiments)))
    for seed in args.seeds:
        for name in chosen:
            spec = spec_of(name, table, args.profile, args.experiments)
            if finished_row(out, name, seed, spec) is None:
                pending.append((name, seed))
            else:
                print(f"{name} seed {seed}: done before, skipped", flush=True)
    return table, pending


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.summarise:
        print(summarise(Path(args.summarise), args.baseline))
        return
    try:
        table, pending = plan(args)
    except ValueError as exc:  # a ConfigError among them
        raise SystemExit(f"bench_demo_defaults: {exc}") from None
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    if pending:  # the trusted runner's workers cost seconds to start: only when needed
        runner = bench.make_runner(args.runner, args.cores)
        try:
            for name, seed in pending:
                row = run_one(name, table, seed, out, args.cores, runner, args.profile,
                              args.experiments)
                print(f"{name} seed {seed}: quality {row['quality']:.4f} (pick {row['pick']}, "
                      f"search val {row['search_val']:.4f}), {row['cache']['misses']} trained, "
                      f"{row['cache']['hits']} cached, {row['wall_s']:.0f} s", flush=True)
        finally:
            runner.close()
    summary = summarise(out, args.baseline)
    (out / "summary.md").write_text(summary + "\n")
    print(summary)


if __name__ == "__main__":
    main()
