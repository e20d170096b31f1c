"""Speed variants of the GPU seed train.py, measured one after another on the real shape.

    python benchmarks/gpu_variants.py --out OUT [--seconds 10] [--deadline 240]
    python benchmarks/gpu_variants.py --out OUT --dry     # CPU plumbing, tiny shape
    python benchmarks/gpu_variants.py --check [--steps 40]  # CPU: variant losses vs baseline

Each variant is the tree's train_template/train.py with a few explicit source patches ((old,
new) strings that must each match exactly once, or the script stops before running anything):
kernel or precision choices only, never the model's or the optimizer's math. Every run is one
`benchmarks/gpu_speed.py --one shape` process (the real gpu-5min shape, the tree's context.py),
the baseline first and last (the two baselines show the drift). Before them, one short
process times F.scaled_dot_product_attention per backend on the model's attention shape,
reads which backend PyTorch picks by default, and lists the ops a torch.compile'd SDPA runs
under a backend forced around the compiled function (which, on the H100, did not reach the
graph: the variants now force it inside the attention forward); an SDPA variant that failed
there, or was no faster than eager's default, is skipped. Runs that would not fit the
--deadline are skipped, the closing baseline's time kept. OUT gets two files: summary.json (rewritten after every run) and gpu_variants.log
(the variants' diffs, then every child's output).

Every run's train.py, the baseline's included, gets a few lines appended that record each
loss train() reads (its divergence check, every 10 steps and after the last) to a file named
by $GPU_VARIANTS_LOSSES; nothing else of the baseline changes.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "train_template"
TRAIN = TEMPLATE / "train.py"
GPU_SPEED = ROOT / "benchmarks" / "gpu_speed.py"
LOSSES_ENV = "GPU_VARIANTS_LOSSES"

LOSS_HOOK = f'''

# ---- appended by benchmarks/gpu_variants.py: record every loss train() reads ----
def _gpu_variants_record(checked):
    import json
    import os

    def recorded(loss, step, limit):
        value = checked(loss, step, limit)
        path = os.environ.get("{LOSSES_ENV}")
        if path:
            with open(path, "a") as out:
                out.write(json.dumps([step, value]) + "\\n")
        return value

    return recorded


checked = _gpu_variants_record(checked)
'''


IMPORT_F = "import torch.nn.functional as F\n"
FULL_CAUSAL = "            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)\n"


def sdpa_patches(backend: str) -> list[tuple[str, str]]:
    """Force one SDPA backend inside the attention forward, so inside the compiled graph.

    Forcing it around the compiled call does not reach the graph: on the H100 (session 2) the
    compiled model ran FlashAttention-2 with cuDNN forced outside, while eager picks cuDNN.
    On CPU (the dry run) the CPU's own kernels stand in: the CUDA backends do not exist there.
    """
    return [
        (IMPORT_F, IMPORT_F + "from torch.nn.attention import SDPBackend, sdpa_kernel\n"),
        (FULL_CAUSAL,
         f"            with sdpa_kernel([SDPBackend.{backend}] if q.is_cuda else\n"
         "                             [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]):\n"
         "                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)\n"),
    ]


BF16_LOGITS = [
    # the head's bf16 output goes into softcap and cross-entropy as it is: autocast runs
    # log_softmax in fp32 anyway, and the compiled kernel computes tanh in fp32 registers; only
    # what is stored between kernels is bf16. Scoring (model.eval()) still gets fp32 logits.
    ("        logits = self.head(norm(x)).float()\n",
     "        logits = self.head(norm(x))\n"
     "        if not self.training:  # scoring reads fp32 logits, as before\n"
     "            logits = logits.float()\n"),
    ("return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))",
     "return F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))"),
]

FUSED_ADAMW = [
    ("eps=1e-10,\n                             weight_decay=0.0)",
     "eps=1e-10,\n                             weight_decay=0.0, fused=True)"),
]

COORD_TUNING = [
    (IMPORT_F, IMPORT_F + "import torch._inductor.config\n\n"
     "torch._inductor.config.coordinate_descent_tuning = True\n"),
]


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    why: str
    patches: tuple[tuple[str, str], ...]
    sdpa: str | None = None  # the backend it forces, if any


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("sdpa_cudnn", "attention through cuDNN's fused kernel (Hopper-tuned, FA3-like)",
            tuple(sdpa_patches("CUDNN_ATTENTION")), sdpa="CUDNN_ATTENTION"),
    Variant("bf16_logits", "logits stay bf16 into softcap + cross-entropy (fp32 inside kernels)",
            tuple(BF16_LOGITS)),
    Variant("fused_adamw", "AdamW(fused=True): one kernel instead of foreach launches",
            tuple(FUSED_ADAMW)),
    Variant("sdpa_flash", "attention forced onto the FlashAttention-2 kernel",
            tuple(sdpa_patches("FLASH_ATTENTION")), sdpa="FLASH_ATTENTION"),
    Variant("sdpa_efficient", "attention forced onto the memory-efficient (xformers) kernel",
            tuple(sdpa_patches("EFFICIENT_ATTENTION")), sdpa="EFFICIENT_ATTENTION"),
    Variant("coord_tuning", "inductor coordinate-descent tuning of its Triton kernels "
            "(longer compile)", tuple(COORD_TUNING)),
)}
COMBO = "combo"  # bf16_logits + fused_adamw + the fastest SDPA backend if it is not the default
# the most promising first (the deadline cuts from the end). bf16_logits measured no gain
# (RESULTS.md, speed variants), so it runs only when asked for.
DEFAULT_ORDER = ["sdpa_cudnn", "fused_adamw", "sdpa_flash"]


def apply_patches(source: str, patches: tuple[tuple[str, str], ...] | list, name: str) -> str:
    """Each old string must occur exactly once in the text as patched so far."""
    for old, new in patches:
        count = source.count(old)
        if count != 1:
            raise SystemExit(f"[gpu_variants] variant {name}: patch expects exactly one "
                             f"{old.strip()[:60]!r} in train.py, found {count}")
        source = source.replace(old, new)
    return source


def combo_patches(best_sdpa: str | None) -> tuple[tuple[str, str], ...]:
    parts = ["bf16_logits", "fused_adamw"]
    sdpa = next((v.name for v in VARIANTS.values() if best_sdpa and v.sdpa == best_sdpa), None)
    if sdpa:
        parts.insert(0, sdpa)
    return tuple(p for name in parts for p in VARIANTS[name].patches)


def write_variant(work: Path, name: str, patches) -> Path:
    """train.py with `patches` and the loss hook, in its own folder; returns its path."""
    source = apply_patches(TRAIN.read_text(), patches, name) + LOSS_HOOK
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train.py"
    path.write_text(source)
    compile(source, str(path), "exec")  # a patch that breaks the syntax fails here, not later
    return path


def diff_of(name: str, patches) -> str:
    new = apply_patches(TRAIN.read_text(), patches, name)
    return "".join(difflib.unified_diff(TRAIN.read_text().splitlines(True), new.splitlines(True),
                                        "train.py", f"{name}/train.py", n=1))


def load_gpu_speed():
    """benchmarks/gpu_speed.py as a module: its tiny dry shape and train.py loader."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_speed
    return gpu_speed


# ---- the SDPA probe (a child process) ------------------------------------------------------

def sdpa_probe(dry: bool) -> dict:
    """Which SDPA backend PyTorch picks for the model's attention, and each one's fwd+bwd time.

    The layout is the model's: q, k, v [B, T, heads, head_dim] tensors seen as [B, heads, T,
    head_dim] (transposed views), causal, bf16 on CUDA.
    """
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    sys.path.insert(0, str(TEMPLATE))
    from profiles import get_profile

    module = load_gpu_speed().load_train(TRAIN, "probe_train", dry)
    device = torch.device("cpu" if dry else "cuda")
    dtype = torch.float32 if dry else torch.bfloat16
    B, T = module.BATCH_SIZE, 128 if dry else get_profile("gpu-5min").seq_len
    H, D = module.MODEL_DIM // module.HEAD_DIM, module.HEAD_DIM
    names = {int(v): k for k, v in SDPBackend.__members__.items()}
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, T, H, D, device=device, dtype=dtype).transpose(1, 2).requires_grad_()
               for _ in range(3))
    out: dict = {"shape_BHTD": [B, H, T, D], "dtype": str(dtype), "torch": torch.__version__,
                 "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                 "cudnn": torch.backends.cudnn.version(), "depth": module.DEPTH,
                 "window_pattern": module.WINDOW_PATTERN}
    try:
        out["default"] = names.get(int(torch._fused_sdp_choice(q, k, v, is_causal=True)), "?")
    except (AttributeError, RuntimeError) as err:
        out["default"] = None
        out["default_error"] = str(err).splitlines()[0][:300]
    backends = ["MATH", "FLASH_ATTENTION"] if dry else ["FLASH_ATTENTION", "CUDNN_ATTENTION",
                                                         "EFFICIENT_ATTENTION"]
    timings = {}
    for name in backends:
        try:
            timings[name] = time_sdpa(torch, F, sdpa_kernel, getattr(SDPBackend, name), q, k, v)
        except RuntimeError as err:
            timings[name] = {"error": str(err).strip().splitlines()[0][:300]}
        print(f"[sdpa_probe] {name}: {timings[name]}", flush=True)
    out["backends"] = timings
    out["compiled"] = {name: compiled_ops(torch, F, sdpa_kernel, getattr(SDPBackend, name), q, k, v,
                                          "aot_eager" if dry else "inductor")
                       for name in (["FLASH_ATTENTION"] if dry
                                    else ["FLASH_ATTENTION", "CUDNN_ATTENTION"])}
    ok = {n: t["fwd_bwd_ms"] for n, t in timings.items() if "fwd_bwd_ms" in t}
    out["fastest"] = min(ok, key=ok.get) if ok else None
    if out["default"] in ok and out["fastest"]:
        saved = ok[out["default"]] - ok[out["fastest"]]
        out["fastest_saves_ms_per_step"] = saved * module.DEPTH  # every block is full-context
    return out


def compiled_ops(torch, F, sdpa_kernel, backend, q, k, v, compiler: str) -> dict:
    """The attention ops and kernels a torch.compile'd SDPA runs when the sdpa_kernel context
    is entered outside the compiled function, as the sdpa_* variants do."""
    from torch.profiler import ProfilerActivity, profile

    torch._dynamo.reset()
    fn = torch.compile(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True),
                       backend=compiler)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if q.is_cuda else [])
    try:
        with sdpa_kernel([backend]):
            fn(q, k, v).sum().backward()  # compiles here
            with profile(activities=activities) as prof:
                fn(q, k, v).sum().backward()
                if q.is_cuda:
                    torch.cuda.synchronize()
    except Exception as err:  # noqa: BLE001 - any failure is the answer here
        return {"error": str(err).strip().splitlines()[0][:300]}
    finally:
        q.grad = k.grad = v.grad = None
    words = ("attention", "flash", "cudnn", "fmha", "sdpa")
    names = sorted({e.key for e in prof.key_averages() if any(w in e.key.lower() for w in words)})
    return {"ops": [n[:120] for n in names[:12]]}


def time_sdpa(torch, F, sdpa_kernel, backend, q, k, v, warm: int = 3, reps: int = 10) -> dict:
    """Median forward and forward+backward milliseconds of causal SDPA on one backend."""
    cuda = q.is_cuda
    fwd, total = [], []
    with sdpa_kernel([backend]):
        for i in range(warm + reps):
            if cuda:
                marks = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
                marks[0].record()
            t0 = time.perf_counter()
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            if cuda:
                marks[1].record()
            t1 = time.perf_counter()
            y.backward(torch.ones_like(y))
            if cuda:
                marks[2].record()
                marks[2].synchronize()
                f, t = marks[0].elapsed_time(marks[1]), marks[0].elapsed_time(marks[2])
            else:
                f, t = 1e3 * (t1 - t0), 1e3 * (time.perf_counter() - t0)
            q.grad = k.grad = v.grad = None
            if i >= warm:
                fwd.append(f)
                total.append(t)
    return {"fwd_ms": statistics.median(fwd), "fwd_bwd_ms": statistics.median(total)}


# ---- the runs (children: gpu_speed.py --one shape) -------------------------------------------

KEEP = ("timed_tokens_per_s", "honest_mfu_percent", "median_step_s", "step_s_quartiles",
        "median_tokens_per_s", "peak_vram_mb", "clocked_steps", "counted_seconds",
        "wall_seconds_incl_compile", "num_params_M", "device", "torch")


def run_child(cmd: list[str], name: str, work: Path, out: Path, timeout: float,
              env: dict | None = None) -> tuple[object, float]:
    """One child process, output kept under work/ and appended to OUT's log; (rc, seconds)."""
    print(f"[gpu_variants] {name}: timeout {timeout:.0f}s", flush=True)
    t0 = time.perf_counter()
    log_path = work / f"{name}.log"
    with open(log_path, "w") as log:
        try:
            rc: object = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                                        env={**os.environ, **(env or {})}).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.perf_counter() - t0
    print(f"[gpu_variants] {name}: rc {rc} after {wall:.0f}s", flush=True)
    with open(out / "gpu_variants.log", "a") as log:
        log.write(f"===== {name} (rc {rc}, {wall:.1f}s) =====\n{log_path.read_text()}\n")
    return rc, wall


def shape_run(name: str, train: Path, args: argparse.Namespace, work: Path, out: Path,
              timeout: float) -> dict:
    """gpu_speed.py's one-shape measurement of `train` (the tree's context.py), plus its losses."""
    result_path, losses_path = work / f"{name}.json", work / f"{name}.losses"
    cmd = [sys.executable, str(GPU_SPEED), "--baseline", str(TEMPLATE), "--one", "shape",
           "--train", str(train), "--ctx-dir", str(TEMPLATE), "--seconds", str(args.seconds),
           "--tokens", args.tokens, "--json", str(result_path)] + (["--dry"] if args.dry else [])
    rc, wall = run_child(cmd, name, work, out, timeout, {LOSSES_ENV: str(losses_path)})
    row: dict = {"name": name, "rc": rc, "wall_s": round(wall, 1), "timeout_s": round(timeout)}
    if result_path.exists():
        result = json.loads(result_path.read_text())
        row.update({key: result.get(key) for key in KEEP})
    losses = read_losses(losses_path)
    row["losses"] = losses
    row["final_loss"] = losses[-1][1] if losses else None
    return row


def read_losses(path: Path) -> list[list]:
    if not path.exists():
        return []
    losses = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [pair for i, pair in enumerate(losses) if i == 0 or pair != losses[i - 1]]  # last read twice


def compare(rows: list[dict]) -> list[dict]:
    """Each run against the mean of the baselines: tokens/s ratio and early-loss difference."""
    bases = [r for r in rows if r["name"].startswith("baseline") and r.get("timed_tokens_per_s")]
    if not bases:
        return []
    base_tps = statistics.mean(r["timed_tokens_per_s"] for r in bases)
    base_losses = dict(map(tuple, bases[0]["losses"]))
    table = []
    for r in rows:
        if not r.get("timed_tokens_per_s"):
            table.append({"name": r["name"], "rc": r["rc"]})
            continue
        early = (r.get("clocked_steps") or 0) // 2  # LR is at peak until 60% of the budget
        diffs = [abs(v - base_losses[s]) for s, v in r["losses"] if s in base_losses and s <= early]
        table.append({
            "name": r["name"], "tokens_per_s": round(r["timed_tokens_per_s"]),
            "vs_baseline": round(r["timed_tokens_per_s"] / base_tps, 4),
            "honest_mfu_percent": round(r["honest_mfu_percent"], 2),
            "median_step_ms": round(1e3 * r["median_step_s"], 2),
            "peak_vram_mb": round(r["peak_vram_mb"]), "final_loss": r["final_loss"],
            "max_early_loss_diff_vs_baseline": round(max(diffs), 4) if diffs else None})
    return table


def plan_variants(names: list[str], probe: dict | None) -> tuple[list[tuple[str, tuple]], list]:
    """The runs between the two baselines, and the SDPA variants the probe rules out: the
    default backend (the baseline already runs it), one that failed, or one no faster."""
    default = (probe or {}).get("default")
    fastest = (probe or {}).get("fastest")
    timings = (probe or {}).get("backends", {})
    default_ms = timings.get(default, {}).get("fwd_bwd_ms")
    runs, skipped = [], []
    for name in names:
        if name == COMBO:
            best = fastest if fastest and fastest != default else None
            runs.append((COMBO, combo_patches(best)))
            continue
        variant = VARIANTS[name]
        probed = timings.get(variant.sdpa, {}) if variant.sdpa else {}
        # No skip for eager's default backend: the compiled graph picks its own (it ran
        # FlashAttention-2 where eager picks cuDNN), so only a measurement can tell.
        if "error" in probed:
            skipped.append({"name": name, "why": f"failed in the probe: {probed['error']}"})
            continue
        if default_ms and probed.get("fwd_bwd_ms", 0.0) >= default_ms:
            skipped.append({"name": name, "why": f"no faster than {default} in the probe"})
            continue
        runs.append((name, variant.patches))
    return runs, skipped


def main_runs(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    left = lambda: args.deadline - (time.perf_counter() - start)  # noqa: E731
    names = args.variants or DEFAULT_ORDER
    for name in names:  # every patch must apply before any device time is spent
        if name != COMBO and name not in VARIANTS:
            raise SystemExit(f"[gpu_variants] unknown variant {name!r} (known: "
                             f"{', '.join([*VARIANTS, COMBO])})")
    for best in [None, *(v.sdpa for v in VARIANTS.values() if v.sdpa)]:
        apply_patches(TRAIN.read_text(), combo_patches(best), COMBO)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_variants-"))
    with open(out / "gpu_variants.log", "w") as log:
        for name in names:
            if name != COMBO:
                log.write(f"===== diff {name}: {VARIANTS[name].why} =====\n"
                          f"{diff_of(name, VARIANTS[name].patches)}\n")
    summary: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "dry": args.dry,
                     "tokens": args.tokens,
                     "seconds": args.seconds, "deadline": args.deadline,
                     "variants": {n: VARIANTS[n].why for n in names if n != COMBO},
                     "runs": [], "skipped": []}

    def save() -> None:
        summary["compare"] = compare(summary["runs"])
        summary["seconds_total"] = round(time.perf_counter() - start, 1)
        (out / "summary.json").write_text(json.dumps(summary, indent=1))

    save()
    probe_json = work / "sdpa_probe.json"
    cmd = [sys.executable, __file__, "--one", "sdpa", "--json", str(probe_json)]
    rc, _ = run_child(cmd + (["--dry"] if args.dry else []), "sdpa_probe", work, out,
                      min(60, left() - 30))
    probe = json.loads(probe_json.read_text()) if probe_json.exists() else None
    summary["sdpa_probe"] = probe or {"rc": rc}
    middle, summary["skipped"] = plan_variants(names, probe)
    if COMBO in names:
        summary["variants"][COMBO] = "bf16_logits + fused_adamw" + (
            f" + {probe['fastest']}" if probe and probe.get("fastest") not in (None, probe.get("default"))
            else "")
    save()
    plan = [("baseline", ()), *middle, ("baseline_end", ())]
    first_wall = None
    for name, patches in plan:
        path = write_variant(work, name, patches)
        if name == "baseline":
            timeout = left() - 5
        elif name == "baseline_end":
            timeout = left()
        else:
            walls = [r["wall_s"] for r in summary["runs"] if r["rc"] == 0]
            need = 0.9 * max(walls) if walls else 0.0
            reserve = 0.9 * first_wall + 5 if first_wall else 0.0
            timeout = min(left() - reserve, 3 * max(walls) if walls else left())
            if timeout < need or timeout < 10:
                summary["skipped"].append({"name": name, "why": f"deadline ({left():.0f}s left)"})
                save()
                continue
        if timeout < 10:
            summary["skipped"].append({"name": name, "why": f"deadline ({left():.0f}s left)"})
            save()
            continue
        row = shape_run(name, path, args, work, out, timeout)
        if name == "baseline":
            first_wall = row["wall_s"]
        summary["runs"].append(row)
        save()
    print(json.dumps(summary["compare"], indent=1))
    ok = [r for r in summary["runs"] if r["rc"] == 0]
    return 0 if any(r["name"] == "baseline" for r in ok) else 1


# ---- the CPU equivalence check ------------------------------------------------------------

def cpu_check(names: list[str], steps: int, bf16: bool) -> dict:
    """Baseline and each variant for `steps` steps of the tiny shape on CPU, same seed and
    data, a token budget (so the LR schedule is the same step by step): the losses read."""
    import numpy as np
    import torch

    sys.path.insert(0, str(TEMPLATE))
    from context import TrainContext
    from corpus import Split
    from profiles import get_profile

    gpu_speed = load_gpu_speed()

    class Ctx(TrainContext):
        def autocast(self):
            return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else super().autocast()

    tokens = gpu_speed.learnable_tokens(200_000)
    starts = np.arange(0, len(tokens) - 129, 997, dtype=np.int64)
    batch = gpu_speed.TINY["BATCH_SIZE"]
    profile = dataclasses.replace(get_profile("gpu-5min"), device="cpu", seq_len=128,
                                  budget_kind="tokens", budget=steps * batch * 128,
                                  clock_skip_steps=0)
    work = Path(tempfile.mkdtemp(prefix="gpu_variants-check-"))
    runs = [("baseline", ())] + [(n, combo_patches("CUDNN_ATTENTION") if n == COMBO
                                  else VARIANTS[n].patches) for n in names]
    result: dict = {"steps": steps, "autocast_bf16": bf16, "losses": {}}
    for name, patches in runs:
        path = write_variant(work, name, patches)
        module = gpu_speed.load_train(path, f"check_{name}", True)
        losses_path = work / f"{name}.losses"
        os.environ[LOSSES_ENV] = str(losses_path)
        torch.manual_seed(0)
        module.train(Ctx(profile, torch.device("cpu"), Split(tokens=tokens, starts=starts),
                         8192, 0, 1.0))
        result["losses"][name] = read_losses(losses_path)
    base = dict(map(tuple, result["losses"]["baseline"]))
    result["max_abs_diff_vs_baseline"] = {
        name: max(abs(v - base[s]) for s, v in losses) for name, losses in result["losses"].items()}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp/gpu_variants"))
    parser.add_argument("--seconds", type=float, default=None,
                        help="clocked seconds per run (default 10; 3 with --dry)")
    parser.add_argument("--deadline", type=float, default=240.0, help="seconds for everything")
    parser.add_argument("--variants", nargs="+", default=None,
                        help=f"default: {' '.join(DEFAULT_ORDER)}; known: "
                             f"{', '.join([*VARIANTS, COMBO])}")
    parser.add_argument("--tokens", choices=["random", "learnable"], default="random",
                        help="the runs' token stream: random ids, or one whose loss falls "
                             "(loss curves that can differ)")
    parser.add_argument("--dry", action="store_true", help="CPU, tiny shape: the plumbing")
    parser.add_argument("--check", action="store_true",
                        help="CPU: each variant's losses against the baseline's (same seed)")
    parser.add_argument("--steps", type=int, default=40, help="of --check")
    parser.add_argument("--one", choices=["sdpa"], help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 3.0 if args.dry else 10.0
    if args.one:
        result = sdpa_probe(args.dry)
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(json.dumps(result, indent=1))
        return 0
    if args.check:
        names = args.variants or [*VARIANTS, COMBO]
        report = {mode: cpu_check(names, args.steps, mode == "bf16_autocast")
                  for mode in ("fp32", "bf16_autocast")}
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "check.json").write_text(json.dumps(report, indent=1))
        for mode, res in report.items():
            print(f"{mode}: losses at steps {[s for s, _ in res['losses']['baseline']]}")
            for name, losses in res["losses"].items():
                print(f"  {name:14s} max |diff| {res['max_abs_diff_vs_baseline'][name]:.5f}  "
                      f"{' '.join(f'{v:.4f}' for _, v in losses)}")
        return 0
    return main_runs(args)


if __name__ == "__main__":
    sys.exit(main())
