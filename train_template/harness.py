"""One experiment: seed, train the candidate, then score and check what it returned.

prepare.py parses the command line and loads the data source; this module owns the clock
and the score, and is the only part of the harness that imports torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import random
import resource
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from context import TrainContext
from corpus import Corpus, JudgedFailure, UsageError, eval_rows
from mfu import mfu_percent
from profiles import Profile, get_profile
from scoring import InvalidModel, causality_probe, evaluate_bpb


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(profile: Profile) -> torch.device:
    if profile.device == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"profile {profile.name} needs a CUDA GPU and none is visible")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def import_train(path: Path):
    """Import the candidate's train script as module `train`; it must define train(ctx)."""
    if not path.is_file():
        raise UsageError(f"train script {path} not found")
    spec = importlib.util.spec_from_file_location("train", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train"] = module
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        traceback.print_exc()
        raise JudgedFailure("crash", f"{path.name} failed to import: {type(exc).__name__}: {exc}") from exc
    if not callable(getattr(module, "train", None)):
        raise JudgedFailure("crash", f"{path.name} defines no train(ctx) function")
    return module


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory on CUDA; on CPU the process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def overrun_reason(ctx: TrainContext, returned_at: float) -> str | None:
    """Under a time budget, train() must return soon after the budget is spent.

    Otherwise it could keep training on batches it stored: seconds past the budget beyond
    max(30 s, 10% of the budget) make the run invalid. Token budgets need no such guard.
    """
    if ctx.budget_kind != "time" or ctx.spent_at is None:
        return None
    overrun = returned_at - ctx.spent_at
    allowed = max(30.0, 0.1 * ctx.budget)
    if overrun <= allowed:
        return None
    return (f"train() returned {overrun:.1f}s after the time budget was spent "
            f"(allowed {allowed:.0f}s): training past the budget")


def floor_tolerance(floor: float) -> float:
    """How far below the floor a score may fall by rounding before it is impossible."""
    return max(1e-3, 1e-3 * floor)


def run(args: argparse.Namespace, load_corpus: Callable[[], Corpus], start: float) -> dict:
    """Train, score, check; returns the result dict. Raises UsageError/DataError/JudgedFailure.

    load_corpus: the data source (prepare.py's registry); start: process start, time.time().
    """
    profile = dataclasses.replace(get_profile(args.profile))  # a private copy: train.py cannot edit it
    device = pick_device(profile)
    corpus = load_corpus()
    train_split = corpus.load_split("train")
    module = import_train(args.train)
    seed_everything(args.seed)
    ctx = TrainContext(profile, device, train_split, corpus.vocab_size, args.seed,
                       args.budget_fraction)
    t0 = time.perf_counter()
    try:
        model = module.train(ctx)
    except (Exception, SystemExit) as exc:  # SystemExit too: train.py does not end the harness
        traceback.print_exc()
        raise JudgedFailure("crash", f"train.py crashed: {type(exc).__name__}: {exc}") from exc
    returned_at = time.perf_counter()
    wall = returned_at - t0
    if (reason := overrun_reason(ctx, returned_at)) is not None:
        raise JudgedFailure("invalid", reason)
    if not isinstance(model, torch.nn.Module):
        raise JudgedFailure("invalid", f"train(ctx) returned {type(model).__name__}, not a torch.nn.Module")
    model.eval()
    result: dict = {"status": "ok"}
    evals = {split: eval_rows(corpus.load_split(split), profile.seq_len, profile.val_tokens)
             for split in args.splits}  # loaded only now, after training returned
    try:
        for split, (rows, first) in evals.items():
            if split == "val":
                causality_probe(model, rows, corpus.vocab_size, device, args.seed, ctx.autocast)
            result[f"{split}_bpb"] = evaluate_bpb(model, rows, first, corpus.token_bytes, device,
                                                  profile.eval_batch_rows, ctx.autocast)
            if split == "val" and corpus.floor_bpb is not None:
                result["entropy_floor_bpb"] = corpus.floor_bpb(rows, first)
    except InvalidModel as exc:
        raise JudgedFailure("invalid", str(exc)) from exc
    except Exception as exc:
        traceback.print_exc()
        raise JudgedFailure("crash", f"the model failed during evaluation: {type(exc).__name__}: {exc}") from exc
    floor = result.get("entropy_floor_bpb")
    if floor is not None and result["val_bpb"] < floor - floor_tolerance(floor):
        raise JudgedFailure("invalid", f"val_bpb {result['val_bpb']:.6f} is below the entropy floor "
                            f"{floor:.6f}: impossible, so a bug or a leak")
    training_seconds = ctx.counted_seconds if profile.budget_kind == "time" else wall
    params = sum(p.numel() for p in model.parameters())
    depth = getattr(module, "DEPTH", 0)
    result.update({
        "training_seconds": training_seconds,
        "total_seconds": time.time() - start,
        "peak_vram_mb": peak_memory_mb(device),
        "mfu_percent": mfu_percent(model, module, profile.seq_len, ctx.tokens_used,
                                   training_seconds, device),
        "total_tokens_M": ctx.tokens_used / 1e6,
        "num_steps": ctx.steps,
        "num_params_M": params / 1e6,
        "depth": depth if isinstance(depth, int) else 0,
        "device": "cpu" if device.type == "cpu" else torch.cuda.get_device_name(device),
        "budget_kind": profile.budget_kind,
    })
    return result
