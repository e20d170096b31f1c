"""Side-by-side speed of the GPU path: a baseline train.py/context.py against the working tree's.

    python benchmarks/gpu_speed.py --baseline DIR --out OUT [--seconds 20] [--deadline 300]
    python benchmarks/gpu_speed.py --baseline DIR --out OUT --dry      # CPU plumbing, tiny shape

DIR holds the baseline train.py and context.py (e.g. `git show HEAD~1:train_template/...`).
On one machine, in this order, each in its own process. OUT gets two files only (the device
machine returns few): summary.json, rewritten after every part so a timeout keeps what is
done, and gpu_speed.log, every child's output one after another.

1. muon: Muon.step on the 32 matrices of the real shape, baseline vs new (CUDA events).
2. <train>-<ctx>: train.py's own loop through the harness's TrainContext on the
   real gpu-5min shape (vocab 8192, random tokens) for --seconds of clocked training:
   old/old, new/new, then the ablations new-train/old-ctx and old-train/new-ctx if the
   deadline allows. Tokens/s and honest MFU over the clocked steps, the median step time from
   the host's per-batch stamps, peak memory, and the clock checked against an independent one.
3. harness: prepare.py run --profile gpu-5min --data synthetic with the new train.py
   (--budget-fraction, default 0.1), when --cache-dir holds (or --cache-tar unpacks) the data.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "train_template"
TINY = {"BATCH_SIZE": 2, "DEPTH": 2, "MODEL_DIM": 128}


def load_train(path: Path, name: str, dry: bool):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if dry:
        for const, value in TINY.items():
            setattr(module, const, value)
    return module


def learnable_tokens(n: int, alphabet: int = 64, stay: float = 0.9, seed: int = 0):
    """A token stream a model learns within tens of steps, so loss curves move and can be
    compared: 64 of the 8192 ids, each followed by a fixed successor `stay` of the time, else by
    a random one of the 64. Vectorised: a token k steps after the last random draw x is
    successor^k(x). A model that peeks at the next token scores far below this stream's
    entropy, so a variant that broke causality shows in its curve."""
    import numpy as np

    rng = np.random.default_rng(seed)
    successor = rng.permutation(alphabet)
    noise = rng.integers(0, alphabet, size=n)
    reset = rng.random(n) >= stay
    reset[0] = True
    index = np.arange(n)
    last = np.maximum.accumulate(np.where(reset, index, 0))
    steps = index - last
    powers = np.empty((int(steps.max()) + 1, alphabet), dtype=np.int64)
    powers[0] = np.arange(alphabet)
    for k in range(1, len(powers)):
        powers[k] = successor[powers[k - 1]]
    return powers[steps, noise[last]].astype(np.uint16)


def shape_run(args: argparse.Namespace) -> dict:
    """One timed run of a train.py through a context.py, in this (child) process."""
    sys.path.insert(0, str(TEMPLATE))
    if args.ctx_dir != str(TEMPLATE):
        sys.path.insert(0, args.ctx_dir)  # the baseline context.py shadows the new one
    import mfu
    import numpy as np
    import torch
    from context import TrainContext
    from corpus import Split
    from profiles import get_profile

    device = torch.device("cpu" if args.dry else "cuda")
    profile = dataclasses.replace(get_profile("gpu-5min"), budget=args.seconds)
    if args.dry:
        profile = dataclasses.replace(profile, device="cpu", seq_len=128, clock_skip_steps=1)
    module = load_train(Path(args.train), "bench_train", args.dry)

    class Stamped(TrainContext):
        """Records the host's time at each batch handed out: the step rhythm."""

        def batches(self, batch_size):
            self.stamps = []
            for pair in super().batches(batch_size):
                self.stamps.append(time.perf_counter())
                yield pair

    if args.tokens == "learnable":
        tokens = learnable_tokens(8_000_000)
    else:
        tokens = np.random.default_rng(0).integers(0, 8192, size=8_000_000, dtype=np.uint16)
    starts = np.arange(0, len(tokens) - profile.seq_len - 1, 997, dtype=np.int64)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ctx = Stamped(profile, device, Split(tokens=tokens, starts=starts), 8192, 0, 1.0)
    t0 = time.perf_counter()
    model = module.train(ctx)
    if device.type == "cuda":
        torch.cuda.synchronize()
    end = time.perf_counter()
    skip = profile.clock_skip_steps
    batch_tokens = module.BATCH_SIZE * profile.seq_len
    timed_tokens = max(0, ctx.steps - skip) * batch_tokens
    steps = [b - a for a, b in zip(ctx.stamps[skip:-1], ctx.stamps[skip + 1:], strict=True)]
    median = statistics.median(steps) if steps else float("nan")
    q = statistics.quantiles(steps, n=4) if len(steps) >= 2 else [median] * 3
    independent = end - ctx.stamps[skip] if len(ctx.stamps) > skip else 0.0
    return {
        "train": args.train, "tokens": args.tokens, "context": sys.modules[TrainContext.__module__].__file__, "device": device_name(device),
        "torch": torch.__version__, "num_params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "steps": ctx.steps, "clocked_steps": max(0, ctx.steps - skip),
        "counted_seconds": ctx.counted_seconds, "budget_seconds": profile.budget,
        "independent_clock_seconds": independent,  # first clocked batch handed out .. GPU idle
        "wall_seconds_incl_compile": end - t0,
        "timed_tokens_per_s": timed_tokens / max(ctx.counted_seconds, 1e-9),
        "median_step_s": median, "step_s_quartiles": q,
        "median_tokens_per_s": batch_tokens / median if steps else 0.0,
        "honest_mfu_percent": mfu.mfu_percent(model, module, profile.seq_len, timed_tokens,
                                              ctx.counted_seconds, device),
        "median_step_mfu_percent": mfu.mfu_percent(model, module, profile.seq_len, batch_tokens,
                                                   median, device) if steps else 0.0,
        "peak_vram_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0,
    }


def muon_run(args: argparse.Namespace) -> dict:
    """Muon.step alone on the real shape's 32 matrices: baseline vs new, median ms per step."""
    import torch

    device = torch.device("cpu" if args.dry else "cuda")
    width, depth = (128, 2) if args.dry else (512, 8)
    shapes = [(3 * width, width), (width, width), (4 * width, width), (width, 4 * width)] * depth
    out: dict = {"device": device_name(device), "matrices": len(shapes)}
    for label, path in (("old", Path(args.baseline) / "train.py"), ("new", TEMPLATE / "train.py")):
        module = load_train(path, f"muon_{label}", False)
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s, device=device) * 0.02) for s in shapes]
        opt = module.Muon(params, lr=0.02, momentum=0.95, weight_decay=0.0)
        times = []
        for i in range(60):
            for p in params:
                p.grad = torch.randn_like(p)
            if device.type == "cuda":
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                host = time.perf_counter()
                start.record()
                opt.step()
                stop.record()
                host = time.perf_counter() - host
                stop.synchronize()
                gpu = start.elapsed_time(stop) / 1e3
            else:
                host = time.perf_counter()
                opt.step()
                gpu = host = time.perf_counter() - host
            if i >= 10:
                times.append((gpu, host))
        out[label] = {"median_gpu_ms": 1e3 * statistics.median(t[0] for t in times),
                      "median_host_launch_ms": 1e3 * statistics.median(t[1] for t in times)}
    out["speedup"] = out["old"]["median_gpu_ms"] / max(out["new"]["median_gpu_ms"], 1e-9)
    return out


def device_name(device) -> str:
    import torch
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def append_log(out: Path, name: str, path: Path) -> None:
    with open(out / "gpu_speed.log", "a") as log:
        log.write(f"===== {name} =====\n{path.read_text() if path.exists() else '(no output)'}\n")


def child(out: Path, work: Path, name: str, cli: list[str], timeout: float) -> dict | None:
    """Run this script as a child with `cli`; returns its JSON (kept under work/)."""
    if timeout < 5:
        print(f"[gpu_speed] skip {name}: deadline", flush=True)
        return None
    cmd = [sys.executable, __file__, *cli, "--json", str(work / f"{name}.json")]
    print(f"[gpu_speed] {name}: {' '.join(cmd[2:])} (timeout {timeout:.0f}s)", flush=True)
    t0 = time.perf_counter()
    with open(work / f"{name}.log", "w") as log:
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    print(f"[gpu_speed] {name}: rc {rc} after {time.perf_counter() - t0:.0f}s", flush=True)
    append_log(out, name, work / f"{name}.log")
    path = work / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="folder with the baseline train.py, context.py")
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp/gpu_speed"))
    parser.add_argument("--seconds", type=float, default=20.0, help="clocked seconds per shape run")
    parser.add_argument("--ablation-seconds", type=float, default=12.0)
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds for everything")
    parser.add_argument("--budget-fraction", type=float, default=0.1, help="of the harness run")
    parser.add_argument("--cache-dir", default=os.environ.get("EVOLVE_CACHE_DIR", "/tmp/evolve-cache"))
    parser.add_argument("--cache-tar", default=None, help="a synthetic cache tarball to unpack first")
    parser.add_argument("--dry", action="store_true", help="CPU, tiny shape, cpu-micro harness")
    parser.add_argument("--tokens", choices=["random", "learnable"], default="random",
                        help="shape runs: uniform random ids, or a stream whose loss falls")
    parser.add_argument("--one", choices=["shape", "muon"], help=argparse.SUPPRESS)
    parser.add_argument("--train", help=argparse.SUPPRESS)
    parser.add_argument("--ctx-dir", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        result = shape_run(args) if args.one == "shape" else muon_run(args)
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(json.dumps(result, indent=1))
        return 0

    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_speed-"))
    base = Path(args.baseline).resolve()
    left = lambda: args.deadline - (time.perf_counter() - start)  # noqa: E731
    common = ["--baseline", str(base)] + (["--dry"] if args.dry else [])
    summary: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "dry": args.dry}
    save = lambda: (out / "summary.json").write_text(json.dumps(summary, indent=1))  # noqa: E731
    summary["muon"] = child(out, work, "muon", [*common, "--one", "muon"], min(60, left()))
    save()
    old_train, new_train = str(base / "train.py"), str(TEMPLATE / "train.py")
    old_ctx, new_ctx = str(base), str(TEMPLATE)
    runs = [("old-old", old_train, old_ctx, args.seconds, 120),
            ("new-new", new_train, new_ctx, args.seconds, 120),
            ("harness", None, None, None, 150),
            ("newtrain-oldctx", new_train, old_ctx, args.ablation_seconds, 70),
            ("oldtrain-newctx", old_train, new_ctx, args.ablation_seconds, 70)]
    for name, train, ctx_dir, seconds, cap in runs:
        if name == "harness":
            summary["harness"] = harness(args, out, work, min(cap, left()))
            save()
            continue
        cli = [*common, "--one", "shape", "--train", train, "--ctx-dir", ctx_dir, "--seconds", str(seconds)]
        summary[name] = child(out, work, f"shape-{name}", cli, min(cap, left()))
        save()
    old, new = summary.get("old-old"), summary.get("new-new")
    if old and new:
        summary["ratio_new_over_old"] = {
            key: new[key] / old[key] if old[key] else None
            for key in ("timed_tokens_per_s", "median_tokens_per_s", "honest_mfu_percent", "peak_vram_mb")}
    summary["seconds_total"] = time.perf_counter() - start
    save()
    print(json.dumps(summary, indent=1))
    return 0 if old and new else 1


def harness(args: argparse.Namespace, out: Path, work: Path, timeout: float) -> dict | None:
    """The real harness on the new train.py: prepare.py run on synthetic data."""
    if timeout < 20:
        print("[gpu_speed] skip harness: deadline", flush=True)
        return None
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    if args.cache_tar and Path(args.cache_tar).is_file():
        with tarfile.open(args.cache_tar) as tar:
            tar.extractall(cache, filter="data")
    profile = "cpu-micro" if args.dry else "gpu-5min"
    cmd = [sys.executable, "prepare.py", "run", "--profile", profile, "--data", "synthetic",
           "--seed", "0", "--train", "train.py", "--budget-fraction", str(args.budget_fraction),
           "--cache-dir", str(cache), "--result", str(work / "harness.json")]
    print(f"[gpu_speed] harness: {' '.join(cmd[1:])} (timeout {timeout:.0f}s)", flush=True)
    t0 = time.perf_counter()
    with open(work / "harness.log", "w") as log:
        try:
            rc = subprocess.run(cmd, cwd=TEMPLATE, stdout=log, stderr=subprocess.STDOUT,
                                timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    print(f"[gpu_speed] harness: rc {rc} after {time.perf_counter() - t0:.0f}s", flush=True)
    append_log(out, "harness", work / "harness.log")
    path = work / "harness.json"
    return json.loads(path.read_text()) if path.exists() else None


if __name__ == "__main__":
    sys.exit(main())
