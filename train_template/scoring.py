"""Scoring a returned model from its logits, and checking that it cannot see the future.

Bits per byte: the summed cross-entropy (nats) of the scored target tokens, divided by the
UTF-8 bytes those tokens stand for, divided by ln 2. Tokens worth 0 bytes (special tokens)
are not scored, so the number is comparable across tokenizers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
import torch.nn.functional as F


class InvalidModel(Exception):
    """The model's output cannot be scored or breaks the rules (shape, causality, NaN)."""


def _logits(model: torch.nn.Module, x: torch.Tensor, vocab_size: int,
            autocast: Callable[[], AbstractContextManager]) -> torch.Tensor:
    with torch.no_grad(), autocast():
        out = model(x)
    if not isinstance(out, torch.Tensor) or out.dim() != 3 or tuple(out.shape[:2]) != tuple(x.shape) \
            or out.shape[2] < vocab_size:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InvalidModel(
            f"model returned {shape}, expected logits of shape "
            f"[{x.shape[0]}, {x.shape[1]}, {vocab_size}] for input [{x.shape[0]}, {x.shape[1]}]")
    return out[..., :vocab_size].float()


def evaluate_bpb(model: torch.nn.Module, rows: np.ndarray, score_from: np.ndarray,
                 token_bytes: np.ndarray, device: torch.device, batch_rows: int = 64,
                 autocast: Callable[[], AbstractContextManager] = nullcontext) -> float:
    """Bits per byte of the model on eval rows ([N, T+1]; targets j >= score_from[i] count)."""
    vocab_size = len(token_bytes)
    tb = torch.as_tensor(np.asarray(token_bytes), dtype=torch.float64, device=device)
    seq = rows.shape[1] - 1
    nats = torch.zeros((), dtype=torch.float64, device=device)
    nbytes = torch.zeros((), dtype=torch.float64, device=device)
    positions = torch.arange(seq, device=device)
    for i in range(0, len(rows), batch_rows):
        chunk = torch.as_tensor(rows[i : i + batch_rows], dtype=torch.long, device=device)
        first = torch.as_tensor(score_from[i : i + batch_rows], dtype=torch.long, device=device)
        x, y = chunk[:, :-1], chunk[:, 1:]
        logits = _logits(model, x, vocab_size, autocast)
        nll = F.cross_entropy(logits.reshape(-1, vocab_size), y.reshape(-1), reduction="none")
        weights = tb[y] * (positions[None, :] >= first[:, None])
        scored = weights > 0
        nats += (nll.view_as(y).double() * scored).sum()
        nbytes += weights.sum()
    value = float(nats / nbytes / math.log(2))
    if not math.isfinite(value):
        raise InvalidModel(f"model produced non-finite logits (val_bpb={value})")
    return value


def causality_probe(model: torch.nn.Module, rows: np.ndarray, vocab_size: int,
                    device: torch.device, seed: int = 0,
                    autocast: Callable[[], AbstractContextManager] = nullcontext) -> None:
    """Raise InvalidModel if changing later tokens, or other rows, changes earlier logits."""
    x = torch.as_tensor(rows[:4, :-1], dtype=torch.long, device=device)
    if x.shape[0] < 2:
        x = torch.cat([x, x.flip(1)])
    gen = torch.Generator().manual_seed(seed)
    B, T = x.shape
    base = _logits(model, x, vocab_size, autocast)
    rel = 5e-2 if device.type == "cuda" else 1e-3
    tol = rel * max(1.0, float(base.abs().max()))
    for k in sorted({1, T // 2, T - 1}):
        if k < 1:
            continue
        changed = x.clone()
        changed[:, k:] = torch.randint(0, vocab_size, (B, T - k), generator=gen).to(device)
        diff = float((_logits(model, changed, vocab_size, autocast)[:, :k] - base[:, :k]).abs().max())
        if not diff <= tol:
            raise InvalidModel(
                f"causality probe failed: changing tokens from position {k} on changed the "
                f"logits at earlier positions by {diff:.3g} (the model sees future tokens)")
    others = x.clone()
    others[1:] = torch.randint(0, vocab_size, (B - 1, T), generator=gen).to(device)
    diff = float((_logits(model, others, vocab_size, autocast)[0] - base[0]).abs().max())
    if not diff <= tol:
        raise InvalidModel(
            f"causality probe failed: changing the other rows of the batch changed row 0's "
            f"logits by {diff:.3g} (the model mixes rows)")
