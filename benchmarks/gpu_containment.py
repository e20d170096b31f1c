"""GPU check of issue 7: a child's GPU memory is free again after it ends, and CUDA works in
the network namespace children run in (`workers.network: isolate`, i.e. `unshare -rn`).

Runs the real runner (`evolve.workers.runner.run_candidate`, no Ray: the device machine has
none) on the real template, with candidates that hold GPU memory in processes of their own:

    finishes  the seed train.py (gpu-5min, short budget) that first starts two GPU holders,
              one in its process group, one in a new session (setsid) — then trains normally
    times_out a train() that allocates, starts both holders, then sleeps past the timeout
    crashes   a train() that allocates, starts both holders, then raises

After each run: the holders' pids must be gone and the GPU's used memory (nvidia-smi, sampled
every 0.25 s; this process never touches CUDA) must be back to its level before the run.

    python benchmarks/gpu_containment.py --out $OUT [--cache-tar T] [--fraction 0.05]
    python benchmarks/gpu_containment.py --dry --out /tmp/gc   # CPU plumbing check (cpu-micro)

Writes `summary.json` into --out after every case. Results: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from evolve.workers.network import isolation  # noqa: E402
from evolve.workers.runner import RunRequest, experiment_dir, run_candidate  # noqa: E402

TEMPLATE = REPO / "train_template"
SETTLE_S = 15.0          # for the driver to hand back a dead process's memory
TOLERANCE_MIB = 64       # "back to baseline" within this much
EXPECTED = {"finishes": "done", "times_out": "timed_out", "crashes": "crashed"}

HOLDER = """\
import os, sys, time, torch
device = sys.argv[3]
x = torch.empty(int(sys.argv[1]) * 2**20, dtype=torch.uint8, device=device)
x.fill_(1)
if device == "cuda":
    torch.cuda.synchronize()
open(sys.argv[2] + ".tmp", "w").write(str(os.getpid()))
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
time.sleep(3600)
"""

# Starts the two holders and waits until both hold their memory. Indented for train()'s body.
START_HOLDERS = """\
    import os as _os, subprocess as _sp, sys as _sys, time as _time
    open("holder.py", "w").write({holder!r})
    _sp.Popen([_sys.executable, "holder.py", "{mib}", "ingroup.pid", "{device}"])
    _sp.Popen([_sys.executable, "holder.py", "{mib}", "escaped.pid", "{device}"],
              start_new_session=True)
    while not (_os.path.exists("ingroup.pid") and _os.path.exists("escaped.pid")):
        _time.sleep(0.05)
    print("holders ready", flush=True)
"""

LEAKER = """\
import torch


def train(ctx):
{start}    x = torch.ones({mib} * 2**20, dtype=torch.uint8, device=ctx.device)
    open("main.pid", "w").write(str(__import__("os").getpid()))
    {ending}
"""


def gpu_used_mib() -> float | None:
    """Used memory of GPU 0 by nvidia-smi, or None where there is none."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                               "-i", "0"], capture_output=True, text=True, timeout=20, check=True)
        return float(done.stdout.strip().splitlines()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def compute_apps() -> list[str]:
    try:
        done = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return ["nvidia-smi failed"]
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


class Sampler:
    """Peak GPU memory while a case runs (a thread polling nvidia-smi)."""

    def __init__(self) -> None:
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            used = gpu_used_mib()
            if used is not None:
                self.peak = used if self.peak is None else max(self.peak, used)
            self._stop.wait(0.25)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def unshare_probe(dry: bool) -> dict:
    """CUDA (a matmul) inside the same namespace the runner gives children, and what network
    interfaces it sees there."""
    sandbox = isolation("isolate")
    code = ("import os, torch\n"
            "d = 'cpu' if os.environ.get('DRY') == '1' else 'cuda'\n"
            "x = torch.randn(4096, 4096, device=d)\n"
            "y = (x @ x).float().abs().mean().item()\n"
            "name = torch.cuda.get_device_name() if d == 'cuda' else 'cpu'\n"
            "lines = open('/proc/self/net/dev').read().splitlines()[2:]\n"
            "nets = sorted(line.split(':')[0].strip() for line in lines)\n"
            "print({'cuda_available': torch.cuda.is_available(), 'device': name,\n"
            "       'matmul_mean_abs': y, 'interfaces': nets})\n")
    env = dict(os.environ, DRY="1" if dry else "0")
    started = time.perf_counter()
    done = subprocess.run([*sandbox.prefix, sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=120, env=env, check=False)
    return {"isolated": sandbox.isolated, "note": sandbox.note, "exit_code": done.returncode,
            "stdout": done.stdout.strip()[-2000:], "stderr": done.stderr.strip()[-2000:],
            "seconds": round(time.perf_counter() - started, 2)}


def candidate(case: str, args: argparse.Namespace) -> tuple[str, str]:
    """(file name, source) of the candidate for `case`."""
    device = "cpu" if args.dry else "cuda"
    seed_name = "train_cpu.py" if args.dry else "train.py"  # the harness runs train.py
    start = START_HOLDERS.format(holder=HOLDER, mib=args.holder_mib, device=device)
    if case == "finishes":
        seed = (TEMPLATE / seed_name).read_text()
        head = "def train(ctx):\n"
        assert head in seed
        return "train.py", seed.replace(head, head + start, 1)
    ending = {"times_out": "__import__('time').sleep(3600)",
              "crashes": "raise RuntimeError('deliberate crash while holding GPU memory')"}[case]
    return "train.py", LEAKER.format(start=start, mib=args.holder_mib, ending=ending)


def run_case(case: str, args: argparse.Namespace, work: Path) -> dict:
    name, source = candidate(case, args)
    request = RunRequest(
        candidate_id=case, files={name: source}, template_dir=str(TEMPLATE),
        profile="cpu-micro" if args.dry else "gpu-5min", data="synthetic", seed=0,
        timeout_s=args.timeout if case == "times_out" else 600.0, work_root=str(work),
        budget_fraction=args.fraction, cache_dir=args.cache_dir, network="isolate",
        keep_workdir=True,  # the holders' pid files are read afterwards
    )
    before = gpu_used_mib()
    apps_before = compute_apps()
    with Sampler() as sampler:
        result = run_candidate(request)
    ended = time.perf_counter()
    directory = experiment_dir(request)
    pids = {}
    for label in ("ingroup", "escaped", "main"):
        path = directory / f"{label}.pid"
        if path.exists():
            pids[label] = int(path.read_text())
    settle, after = None, gpu_used_mib()
    while before is not None and after is not None:
        if after <= before + TOLERANCE_MIB:
            settle = round(time.perf_counter() - ended, 2)
            break
        if time.perf_counter() - ended > SETTLE_S:
            break
        time.sleep(0.25)
        after = gpu_used_mib()
    survivors = [f"{label}:{pid}" for label, pid in pids.items() if alive(pid)]
    metrics = dict(result.metrics)
    return {
        "outcome": result.outcome, "reason": result.reason[:300],
        "val_bpb": metrics.get("val_bpb"), "training_seconds": metrics.get("training_seconds"),
        "wall_s": round(result.ended_at - result.started_at, 1),
        "holder_pids": pids, "holders_started": {"ingroup", "escaped"} <= set(pids),
        "survivors": survivors,
        "gpu_used_mib_before": before, "gpu_used_mib_peak": sampler.peak,
        "gpu_used_mib_after": after, "seconds_until_freed": settle,
        "compute_apps_before": apps_before, "compute_apps_after": compute_apps(),
        "log_head": (directory / "run.log").read_text()[:600],
        "as_expected": result.outcome == EXPECTED[case],
        "freed": {"ingroup", "escaped"} <= set(pids) and not survivors and (
            before is None or (after is not None and after <= before + TOLERANCE_MIB)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry", action="store_true", help="CPU plumbing check (cpu-micro)")
    parser.add_argument("--cache-tar", type=Path, help="a data cache tarball to unpack first")
    parser.add_argument("--cache-dir", default=os.environ.get("EVOLVE_CACHE_DIR", "/tmp/evolve-cache"))
    parser.add_argument("--fraction", type=float, default=0.05, help="of gpu-5min's 300 s budget")
    parser.add_argument("--timeout", type=float, default=60.0, help="the times_out case's limit")
    parser.add_argument("--holder-mib", type=int, default=4096)
    parser.add_argument("--cases", nargs="+", default=["finishes", "times_out", "crashes"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cache_tar:
        Path(args.cache_dir).mkdir(parents=True, exist_ok=True)
        with tarfile.open(args.cache_tar) as tar:
            tar.extractall(args.cache_dir, filter="data")
    summary: dict = {"nvidia_smi": shutil.which("nvidia-smi"), "python": sys.version.split()[0]}

    def save() -> None:
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))

    summary["unshare_probe"] = unshare_probe(args.dry)
    save()
    print(json.dumps(summary["unshare_probe"], indent=1), flush=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "gpu-containment"
    shutil.rmtree(work, ignore_errors=True)
    for case in args.cases:
        summary[case] = run_case(case, args, work)
        save()
        print(case, json.dumps({k: v for k, v in summary[case].items() if k != "log_head"},
                               indent=1), flush=True)
    ok = all(summary[case]["freed"] and summary[case]["as_expected"] for case in args.cases)
    summary["all_freed"] = ok
    save()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
