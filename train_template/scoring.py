"""Scoring from logits: the referee's maths (the model itself runs in the evaluator process).

Bits per byte: the summed cross-entropy (nats) of the scored target tokens, divided by the
UTF-8 bytes those tokens stand for, divided by ln 2. Tokens worth 0 bytes (special tokens)
are not scored, so the number is comparable across tokenizers. The per-position losses are
kept: the causality check (causality.py) compares against them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# input rows [B, T] (int64, on the device) -> logits [B, T, V] float32 (validated)
LogitsFn = Callable[[torch.Tensor], torch.Tensor]


class InvalidModel(Exception):
    """The model's output cannot be scored or breaks the rules (shape, causality, NaN)."""


def shape_problem(got: object, batch: int, seq: int, vocab_size: int) -> str:
    return (f"model returned {got}, expected logits of shape [{batch}, {seq}, {vocab_size}] "
            f"for input [{batch}, {seq}]")


def model_logits(model: torch.nn.Module, vocab_size: int,
                 autocast: Callable[[], AbstractContextManager] = nullcontext) -> LogitsFn:
    """A LogitsFn over a model in this process (tests, notebooks; the harness never does this)."""
    def logits(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast():
            out = model(x)
        if not isinstance(out, torch.Tensor) or out.dim() != 3 \
                or tuple(out.shape[:2]) != tuple(x.shape) or out.shape[2] < vocab_size:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InvalidModel(shape_problem(got, x.shape[0], x.shape[1], vocab_size))
        return out[..., :vocab_size].float()
    return logits


@dataclass(frozen=True)
class Scored:
    """A split's score and what the causality check needs of it."""

    bpb: float
    nll: torch.Tensor      # float32 [N, T]: cross-entropy of every target, scored or not
    weights: torch.Tensor  # float64 [N, T]: bytes of each scored target (0: not scored)


def score_rows(logits_fn: LogitsFn, rows: np.ndarray, score_from: np.ndarray,
               token_bytes: np.ndarray, device: torch.device, batch_rows: int = 64) -> Scored:
    """Bits per byte on eval rows ([N, T+1]; targets j >= score_from[i] count)."""
    vocab_size = len(token_bytes)
    tb = torch.as_tensor(np.asarray(token_bytes), dtype=torch.float64, device=device)
    seq = rows.shape[1] - 1
    nats = torch.zeros((), dtype=torch.float64, device=device)
    nbytes = torch.zeros((), dtype=torch.float64, device=device)
    positions = torch.arange(seq, device=device)
    all_nll, all_weights = [], []
    for i in range(0, len(rows), batch_rows):
        chunk = torch.as_tensor(rows[i : i + batch_rows], dtype=torch.long, device=device)
        first = torch.as_tensor(score_from[i : i + batch_rows], dtype=torch.long, device=device)
        x, y = chunk[:, :-1], chunk[:, 1:]
        logits = logits_fn(x)
        nll = F.cross_entropy(logits.reshape(-1, vocab_size), y.reshape(-1), reduction="none")
        weights = tb[y] * (positions[None, :] >= first[:, None])
        scored = weights > 0
        nats += (nll.view_as(y).double() * scored).sum()
        nbytes += weights.sum()
        all_nll.append(nll.view_as(y))
        all_weights.append(weights)
    value = float(nats / nbytes / math.log(2))
    if not math.isfinite(value):
        raise InvalidModel(f"model produced non-finite logits (val_bpb={value})")
    return Scored(value, torch.cat(all_nll), torch.cat(all_weights))


def evaluate_bpb(model: torch.nn.Module, rows: np.ndarray, score_from: np.ndarray,
                 token_bytes: np.ndarray, device: torch.device, batch_rows: int = 64,
                 autocast: Callable[[], AbstractContextManager] = nullcontext) -> float:
    """score_rows of a model in this process (tests, notebooks)."""
    fn = model_logits(model, len(token_bytes), autocast)
    return score_rows(fn, rows, score_from, token_bytes, device, batch_rows).bpb


def floor_tolerance(floor: float) -> float:
    """How far below the floor a score may fall by rounding before it is impossible."""
    return max(1e-3, 1e-3 * floor)


def below_floor(bpb: float, floor: float | None) -> str | None:
    """Why a score is impossible against the entropy floor (NaN-safe), else None."""
    if floor is None:
        return None
    if not math.isfinite(floor):
        return f"the entropy floor is not finite ({floor}): the data or the harness is broken"
    if not bpb >= floor - floor_tolerance(floor):  # `not >=`: a NaN score fails too
        return (f"val_bpb {bpb:.6f} is below the entropy floor {floor:.6f}: impossible, "
                "so a bug or a leak")
    return None
