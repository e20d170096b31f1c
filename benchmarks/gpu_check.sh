#!/usr/bin/env bash
# The GPU check of issue 4 (results: benchmarks/RESULTS.md, "GPU path (issue 4)").
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # from the repository root, on a CUDA machine
#
# 1. The harness itself: `prepare.py run --profile gpu-5min --data synthetic` with the seed
#    train.py and --budget-fraction 0.2 (~60 s of training), result JSON + log.
# 2. The real gpu-5min shape (vocab 8192, as on climbmix) through train.py's own loop and the
#    harness's TrainContext, on random tokens for 20 s: tokens/s, MFU, peak memory.
# MFU is reported twice: the harness's number and an honest one (mfu.py: matmul parameters
# only, plus the attention term, over the tokens of the timed steps only).
#
# Knobs: GPU_CHECK_FRACTION (0.2), GPU_CHECK_CACHE (a synthetic cache tarball to unpack first,
# saves generating ~180 MB of text on the GPU machine), GPU_CHECK_DRY=1 (CPU plumbing test:
# cpu-micro profile, tiny shape). Wheels in .whl/ (filelock) are installed to /tmp/site first.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT_DIR=${1:-${OUT:-/tmp/gpu_check}}
FRACTION=${GPU_CHECK_FRACTION:-0.2}
DRY=${GPU_CHECK_DRY:-0}
CACHE=${EVOLVE_CACHE_DIR:-/tmp/evolve-cache}
mkdir -p "$OUT_DIR" "$CACHE"
export PYTHONUNBUFFERED=1

if ls "$REPO"/.whl/*.whl >/dev/null 2>&1 && ! python3 -c "import filelock" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$REPO"/.whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -n "${GPU_CHECK_CACHE:-}" ] && [ -f "$GPU_CHECK_CACHE" ]; then
    tar -xJf "$GPU_CHECK_CACHE" -C "$CACHE" || exit 1
fi
(nvidia-smi || echo "no nvidia-smi") >"$OUT_DIR/nvidia-smi.txt" 2>&1

if [ "$DRY" = 1 ]; then PROFILE=cpu-micro; else PROFILE=gpu-5min; fi
cd "$REPO/train_template" || exit 1
start=$(date +%s)
timeout "${GPU_CHECK_HARNESS_TIMEOUT:-270}" python3 prepare.py run --profile "$PROFILE" --data synthetic --seed 0 --train train.py \
    --budget-fraction "$FRACTION" --cache-dir "$CACHE" --result "$OUT_DIR/result.json" \
    2>&1 | tee "$OUT_DIR/run.log"
harness_rc=${PIPESTATUS[0]}
echo "harness exit $harness_rc after $(( $(date +%s) - start )) s" | tee -a "$OUT_DIR/run.log"

GPU_CHECK_DRY=$DRY OUT_DIR=$OUT_DIR timeout "${GPU_CHECK_SHAPE_TIMEOUT:-120}" python3 - <<'EOF' 2>&1 | tee "$OUT_DIR/shape.log"
"""Honest MFU for the harness run, then the real gpu-5min shape (vocab 8192) for 20 s."""
import dataclasses, importlib.util, json, os, sys, time
import numpy as np, torch
sys.path.insert(0, ".")
import mfu
from context import TrainContext
from corpus import Split
from profiles import get_profile

dry = os.environ["GPU_CHECK_DRY"] == "1"
out = os.environ["OUT_DIR"]
device = torch.device("cpu" if dry else "cuda")
profile = get_profile("gpu-5min")
if dry:
    profile = dataclasses.replace(profile, device="cpu", seq_len=128, clock_skip_steps=1)

def load_seed(tiny=False):
    spec = importlib.util.spec_from_file_location("seed_train", "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if tiny:
        module.BATCH_SIZE, module.DEPTH, module.MODEL_DIM = 2, 2, 128
    return module

def honest_mfu(model, module, seq_len, steps, skip, seconds):
    timed_tokens = max(0, steps - skip) * module.BATCH_SIZE * seq_len
    return mfu.mfu_percent(model, module, seq_len, timed_tokens, seconds, device), timed_tokens

summary = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
           "torch": torch.__version__}
try:
    result = json.load(open(os.path.join(out, "result.json")))
    summary["harness"] = result
    if result.get("status") == "ok":
        module = load_seed()
        with torch.device("meta"):
            model = module.GPT(256, profile.seq_len)  # synthetic data: byte vocab
        run_profile = get_profile(result["profile"])
        value, timed = honest_mfu(model, module, run_profile.seq_len, result["num_steps"],
                                  run_profile.clock_skip_steps, result["training_seconds"])
        summary["harness_honest_mfu_percent"] = value
        summary["harness_timed_tokens_per_s"] = timed / max(result["training_seconds"], 1e-9)
except FileNotFoundError:
    summary["harness"] = "no result.json"

# the real shape: vocab 8192 like climbmix, train.py's own loop, the harness's TrainContext
module = load_seed(tiny=dry)
budget = 3.0 if dry else 20.0
shape_profile = dataclasses.replace(profile, budget=budget)
rng = np.random.default_rng(0)
tokens = rng.integers(0, 8192, size=8_000_000, dtype=np.uint16)
starts = np.arange(0, len(tokens) - shape_profile.seq_len - 1, 997, dtype=np.int64)
torch.manual_seed(0)
if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
ctx = TrainContext(shape_profile, device, Split(tokens=tokens, starts=starts), 8192, 0, 1.0)
t0 = time.perf_counter()
model = module.train(ctx)
wall = time.perf_counter() - t0
value, timed = honest_mfu(model, module, shape_profile.seq_len, ctx.steps,
                          shape_profile.clock_skip_steps, ctx.counted_seconds)
summary["shape_8192"] = {
    "num_params_M": sum(p.numel() for p in model.parameters()) / 1e6,
    "flops_per_token": mfu.flops_per_token(model, module, shape_profile.seq_len),
    "steps": ctx.steps, "timed_seconds": ctx.counted_seconds, "wall_seconds_incl_compile": wall,
    "timed_tokens_per_s": timed / max(ctx.counted_seconds, 1e-9),
    "honest_mfu_percent": value,
    "peak_vram_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0,
}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(json.dumps({k: v for k, v in summary.items() if k != "harness"}, indent=1))
EOF
shape_rc=${PIPESTATUS[0]}
echo "harness_rc=$harness_rc shape_rc=$shape_rc"
[ "$harness_rc" = 0 ] && [ "$shape_rc" = 0 ]
