"""Harness profiles: budget, context length, eval size, data and device, per machine size.

Profiles set harness constants only; the model lives in the seed script each profile names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    seed_script: str        # the seed train script for this profile (train_cpu.py / train.py)
    device: str             # "cpu" | "cuda"
    budget_kind: str        # "tokens" (deterministic, CPU) | "time" (training seconds, GPU)
    budget: float           # training tokens, or training seconds
    seq_len: int            # context length of every training and eval row
    val_tokens: int         # tokens scored on val (and on test)
    default_data: str       # data source when --data is not given
    synthetic_train_tokens: int  # size of the synthetic train split this profile draws from
    eval_batch_rows: int    # rows per forward pass when scoring
    autocast_bf16: bool     # ctx.autocast() is bf16 on CUDA
    compile: bool           # ctx.compile: the seed may torch.compile its model
    clock_skip_steps: int   # time budgets: first steps (compilation, warm-up) are not counted
    warmup_max_s: float     # time budgets: the unclocked warm-up ends after this many seconds
    max_batch_rows: int     # the most rows one ctx.batches() batch may have
    handback_s: float       # after the budget is spent: seconds to return the model, then killed
    handback_base_s: float  # time budgets: a hand-back slower than this + size/rate is invalid
    eval_floor_s: float     # an evaluator's seconds to load the model, before per-token time
    probe_rows: int         # causality check: rows recomputed with their tail replaced
    description: str


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="cpu-micro", seed_script="train_cpu.py", device="cpu", budget_kind="tokens",
            budget=8_192, seq_len=64, val_tokens=8_192, default_data="synthetic",
            synthetic_train_tokens=200_000, eval_batch_rows=64, autocast_bf16=False,
            compile=False, clock_skip_steps=0, warmup_max_s=0.0, max_batch_rows=256,
            handback_s=15.0, handback_base_s=3.0, eval_floor_s=1.5, probe_rows=1024,
            description="a few seconds on one core; for tests",
        ),
        Profile(
            name="cpu-bench", seed_script="train_cpu.py", device="cpu", budget_kind="tokens",
            budget=24_576, seq_len=64, val_tokens=8_192, default_data="synthetic",
            synthetic_train_tokens=400_000, eval_batch_rows=64, autocast_bf16=False,
            compile=False, clock_skip_steps=0, warmup_max_s=0.0, max_batch_rows=256,
            handback_s=15.0, handback_base_s=3.0, eval_floor_s=1.5, probe_rows=1024,
            description="strategy benchmarks: ~8 s on one core, room for hundreds of runs",
        ),
        Profile(
            name="cpu-tiny", seed_script="train_cpu.py", device="cpu", budget_kind="tokens",
            budget=262_144, seq_len=128, val_tokens=65_536, default_data="synthetic",
            synthetic_train_tokens=4_000_000, eval_batch_rows=64, autocast_bf16=False,
            compile=False, clock_skip_steps=0, warmup_max_s=0.0, max_batch_rows=512,
            handback_s=15.0, handback_base_s=3.0, eval_floor_s=1.5, probe_rows=1024,
            description="the embedded demo: a real result in ~20-30 s on one core",
        ),
        Profile(
            name="gpu-5min", seed_script="train.py", device="cuda", budget_kind="time",
            budget=300.0, seq_len=2048, val_tokens=20_971_520, default_data="climbmix",
            synthetic_train_tokens=50_000_000, eval_batch_rows=32, autocast_bf16=True,
            compile=True, clock_skip_steps=10, warmup_max_s=120.0, max_batch_rows=512,
            handback_s=10.0, handback_base_s=3.0, eval_floor_s=10.0, probe_rows=2048,
            description="300 s of training on one H100, context 2048, ~20M eval tokens",
        ),
    )
}


def get_profile(name: str) -> Profile:
    """The named profile, or a ValueError listing the known ones."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r} (known: {', '.join(PROFILES)})")
    return PROFILES[name]
