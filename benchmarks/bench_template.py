"""Seed experiment benchmark: what cpu-micro / cpu-tiny cost and reach, through the real harness.

    OMP_NUM_THREADS=1 python benchmarks/bench_template.py [--profiles cpu-micro,cpu-tiny] [--seeds 1]
    python benchmarks/bench_template.py --cuda     # the CPU seed on a GPU: bf16, time budget

CPU rows run `prepare.py run` in a fresh experiment directory (the seed as its train.py) on
one thread, and print training tokens/s, val_bpb, the entropy floor and wall times.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent / "train_template"


def run_profile(profile: str, seed: int, cache_dir: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "exp"
        shutil.copytree(TEMPLATE, work, ignore=shutil.ignore_patterns("__pycache__", "train.py"))
        shutil.copy(TEMPLATE / "train_cpu.py", work / "train.py")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        start = time.time()
        proc = subprocess.run(
            [sys.executable, "prepare.py", "run", "--profile", profile, "--data", "synthetic",
             "--seed", str(seed), "--result", "result.json", "--cache-dir", str(cache_dir)],
            cwd=work, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"error: {profile} seed {seed} failed: {proc.stderr.strip()[-400:]}")
        result = json.loads((work / "result.json").read_text())
        result["wall_seconds"] = time.time() - start
        return result


def bench_cpu(profiles: list[str], seeds: int, cache_dir: Path) -> None:
    for profile in profiles:  # a first run to build the data cache, not timed
        subprocess.run([sys.executable, str(TEMPLATE / "prepare.py"), "prepare", "--profile",
                        profile, "--data", "synthetic", "--cache-dir", str(cache_dir)], check=True)
    print("| profile | seed | tokens | steps | training s | tokens/s | val_bpb | floor | process s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for profile in profiles:
        for seed in range(seeds):
            r = run_profile(profile, seed, cache_dir)
            tps = r["total_tokens_M"] * 1e6 / r["training_seconds"]
            print(f"| {profile} | {seed} | {r['total_tokens_M'] * 1e6:,.0f} | {r['num_steps']} | "
                  f"{r['training_seconds']:.1f} | {tps:,.0f} | {r['val_bpb']:.4f} | "
                  f"{r['entropy_floor_bpb']:.4f} | {r['wall_seconds']:.1f} |", flush=True)


def bench_cuda(cache_dir: Path, seconds: float) -> None:
    """The CPU seed on CUDA under a time budget (bf16 autocast), scored like the harness does."""
    sys.path.insert(0, str(TEMPLATE))
    import importlib.util

    import torch
    from causality import check_model
    from context import TrainContext
    from corpus import eval_rows
    from profiles import get_profile
    from sources import load_synthetic

    base = get_profile("cpu-tiny")
    profile = dataclasses.replace(base, name="cuda-check", device="cuda", budget_kind="time",
                                  budget=seconds, autocast_bf16=True, clock_skip_steps=5)
    corpus = load_synthetic(cache_dir, train_tokens=base.synthetic_train_tokens,
                            val_tokens=base.val_tokens, seq_len=base.seq_len)
    spec = importlib.util.spec_from_file_location("train", TEMPLATE / "train_cpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    device = torch.device("cuda")
    for compile_ in (False, True):
        torch.manual_seed(0)
        ctx = TrainContext.local(profile, device, corpus.load_split("train"), corpus.vocab_size,
                                 0, 1.0)
        ctx.compile = compile_
        t0 = time.time()
        model = module.train(ctx).eval()
        wall = time.time() - t0
        rows, first = eval_rows(corpus.load_split("val"), profile.seq_len, profile.val_tokens)
        bpb, problem = check_model(model, rows, first, corpus.token_bytes, device,
                                   autocast=ctx.autocast)
        assert problem is None, problem
        print(f"cuda {torch.cuda.get_device_name(device)} compile={compile_}: steps {ctx.steps}, "
              f"counted {ctx.counted_seconds:.1f}s of {seconds}s (wall {wall:.1f}s), "
              f"{ctx.tokens_used / max(ctx.counted_seconds, 1e-9):,.0f} tokens/s, progress "
              f"{ctx.progress():.2f}, val_bpb {bpb:.4f}, floor {corpus.floor_bpb(rows, first):.4f}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", default="cpu-micro,cpu-tiny")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(os.environ.get("EVOLVE_CACHE_DIR", Path.home() / ".cache" / "evolve")))
    parser.add_argument("--cuda", action="store_true", help="run the CPU seed on a GPU instead")
    parser.add_argument("--cuda-seconds", type=float, default=15.0)
    args = parser.parse_args()
    if args.cuda:
        bench_cuda(args.cache_dir, args.cuda_seconds)
    else:
        bench_cpu(args.profiles.split(","), args.seeds, args.cache_dir)


if __name__ == "__main__":
    main()
