#!/usr/bin/env bash
# The refereed harness on a GPU, against the in-process one before it, in one device call
# (issue 12, item 6: clocked tokens/s within 2%, at most +15 s outside the budget).
#
#   git archive c6dd3d2 train_template | tar -x -C benchmarks/.baseline   # here, before
#   bash benchmarks/gpu_judge.sh [OUT_DIR]                                 # on the device
#
# 1. Whether the jail works there, and whether a CUDA IPC handle opens from a jailed evaluator
#    in the referee's PID namespace (else the logits come through host memory: correct, slow).
# 2. bench_judge.py on gpu-5min with --budget-fraction (GPU_JUDGE_FRACTION, 0.1: 30 s of
#    training), old then new, GPU_JUDGE_RUNS times each: val_bpb, tokens/s, seconds outside
#    the budget, the causality pass, and which way the logits went.
# Knobs: EVOLVE_CACHE_DIR (a synthetic gpu-5min cache saves generating 50M tokens there),
# GPU_JUDGE_RUNS (1), GPU_JUDGE_FRACTION (0.1).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT_DIR=${1:-${OUT:-/tmp/gpu_judge}}
RUNS=${GPU_JUDGE_RUNS:-1}
FRACTION=${GPU_JUDGE_FRACTION:-0.1}
export EVOLVE_CACHE_DIR=${EVOLVE_CACHE_DIR:-/tmp/evolve-cache}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR" "$EVOLVE_CACHE_DIR"
BASELINE="$REPO/benchmarks/.baseline/train_template"
if [ ! -f "$BASELINE/prepare.py" ]; then
    echo "error: no baseline harness at $BASELINE (see the header of this script)" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/gpu.txt"

echo "== jail and CUDA IPC =="
(cd "$REPO/train_template" && python3 - <<'EOF') 2>&1 | tee "$OUT_DIR/ipc.txt"
import jail
print("sandbox_problem:", jail.sandbox_problem())
EOF

echo "== prepare gpu-5min synthetic data =="
python3 "$REPO/train_template/prepare.py" prepare --profile gpu-5min --data synthetic \
    2>&1 | tail -2 | tee "$OUT_DIR/prepare.txt"

echo "== old vs new, $RUNS run(s) each, budget fraction $FRACTION =="
python3 "$REPO/benchmarks/bench_judge.py" --baseline-dir "$BASELINE" --profiles gpu-5min \
    --runs "$RUNS" --budget-fraction "$FRACTION" 2>&1 | tee "$OUT_DIR/bench_judge.txt"
