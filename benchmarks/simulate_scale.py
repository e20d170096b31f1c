"""Scale by simulation: the real scheduler core at 1, 8, 64 and 1,000 simulated workers.

Virtual time: evaluations 300 s +- 30 s, proposals 10-90 s, 5% early crashes, 5% pre-flight
rejections, 0.2% of attempts lose their worker (a replacement joins 120 s later), a 12 h
budget. Prints utilisation and controller CPU per experiment, then the same at 1,000 workers
under a tokens-per-minute LLM budget (the knob), where the LLM becomes the bottleneck.

    python benchmarks/simulate_scale.py
"""

from __future__ import annotations

import argparse

from evolve.controller.simulate import SimSpec, simulate


def line(label: str, spec: SimSpec) -> None:
    r = simulate(spec)
    print(f"| {label} | {r.experiments:,} | {r.span_h:.1f} | {r.utilisation:.4f} | "
          f"{r.utilisation_after_root:.4f} | {r.core_ms_per_experiment:.3f} | "
          f"{r.sim_ms_per_experiment:.3f} | {r.llm_tokens_per_minute:,.0f} | "
          f"{r.max_concurrent_proposals} | {r.lost_attempts} | {r.wall_s:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8, 64, 1000])
    parser.add_argument("--hours", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("| run | experiments | span h | utilisation | after baseline | core ms/exp | "
          "whole sim ms/exp | LLM tok/min | max proposals in flight | lost attempts | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for workers in args.workers:
        line(f"{workers} workers", SimSpec(workers=workers, hours=args.hours, seed=args.seed))
    big = max(args.workers)
    for tpm in (2_000_000, 1_000_000):
        line(f"{big} workers, {tpm:,} tok/min budget",
             SimSpec(workers=big, hours=args.hours, seed=args.seed, tokens_per_minute=tpm))
    line(f"{big} workers, lookahead 0", SimSpec(workers=big, hours=args.hours, seed=args.seed,
                                                lookahead=0))


if __name__ == "__main__":
    main()
