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
from typing import Any

import numpy as np

# input rows [B, T] (int64) -> logits [B, T, V] float32 (validated). Where the maths runs is
# `device`: a torch device, or None for numpy on the host. The referee on a CPU profile uses
# None and never imports torch (an interpreter's torch import costs ~1.5 CPU-s, and the
# referee's would be the fourth of the run: trainer, scorer and prober each need their own).
LogitsFn = Callable[[Any], Any]


def host_array(values: Any) -> np.ndarray:
    """A numpy copy-or-view of a numpy array or a torch tensor (on any device)."""
    if isinstance(values, np.ndarray):
        return values
    return values.detach().cpu().numpy()


def as_rows(rows: np.ndarray, device: Any) -> Any:
    """int64 rows as the maths on `device` takes them (numpy for None)."""
    if device is None:
        return np.asarray(rows, dtype=np.int64)
    import torch

    return torch.as_tensor(rows, dtype=torch.long, device=device)


def cross_entropy(logits: Any, targets: Any, device: Any) -> Any:
    """Per-position cross-entropy (nats) of `targets` [...] under `logits` [..., V]: torch's
    on a device; on the host (None) the same maths in numpy (float64 sums), so a NaN or an
    infinite logit gives a non-finite loss either way."""
    if device is not None:
        import torch.nn.functional as F

        vocab_size = logits.shape[-1]
        return F.cross_entropy(logits.reshape(-1, vocab_size), targets.reshape(-1),
                               reduction="none").view(targets.shape)
    z = np.asarray(logits, dtype=np.float32)
    top = z.max(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        # exp in float32 as torch's kernel does, summed and logged in float64
        lse = np.log(np.exp(z - top).sum(axis=-1, dtype=np.float64)) + top[..., 0]
    picked = np.take_along_axis(z, np.asarray(targets)[..., None], axis=-1)[..., 0]
    return lse - picked


class InvalidModel(Exception):
    """The model's output cannot be scored or breaks the rules (shape, causality, NaN)."""


def shape_problem(got: object, batch: int, seq: int, vocab_size: int) -> str:
    return (f"model returned {got}, expected logits of shape [{batch}, {seq}, {vocab_size}] "
            f"for input [{batch}, {seq}]")


def model_logits(model, vocab_size: int,
                 autocast: Callable[[], AbstractContextManager] = nullcontext) -> LogitsFn:
    """A LogitsFn over a model in this process (tests, notebooks; the harness never does this)."""
    import torch

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
    """A split's score and what the causality check needs of it (numpy arrays on the host,
    tensors on a device)."""

    bpb: float
    nll: Any      # [N, T]: cross-entropy of every target, scored or not
    weights: Any  # float64 [N, T]: bytes of each scored target (0: not scored)


def score_rows(logits_fn: LogitsFn, rows: np.ndarray, score_from: np.ndarray,
               token_bytes: np.ndarray, device: Any, batch_rows: int = 64) -> Scored:
    """Bits per byte on eval rows ([N, T+1]; targets j >= score_from[i] count)."""
    if device is None:
        return _score_rows_host(logits_fn, rows, score_from, token_bytes, batch_rows)
    import torch
    import torch.nn.functional as F

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
    return _scored(float(nats / nbytes / math.log(2)), torch.cat(all_nll), torch.cat(all_weights))


def _score_rows_host(logits_fn: LogitsFn, rows: np.ndarray, score_from: np.ndarray,
                     token_bytes: np.ndarray, batch_rows: int) -> Scored:
    """score_rows with numpy: the same sums, in float64 throughout."""
    tb = np.asarray(token_bytes, dtype=np.float64)
    positions = np.arange(rows.shape[1] - 1)
    nats = nbytes = 0.0
    all_nll, all_weights = [], []
    for i in range(0, len(rows), batch_rows):
        chunk = np.asarray(rows[i : i + batch_rows], dtype=np.int64)
        first = np.asarray(score_from[i : i + batch_rows], dtype=np.int64)
        x, y = chunk[:, :-1], chunk[:, 1:]
        nll = cross_entropy(logits_fn(x), y, None)
        weights = tb[y] * (positions[None, :] >= first[:, None])
        with np.errstate(invalid="ignore"):  # a non-finite loss is judged below, not warned
            nats += float((nll * (weights > 0)).sum())
        nbytes += float(weights.sum())
        all_nll.append(nll)
        all_weights.append(weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = float(np.float64(nats) / nbytes / math.log(2))
    return _scored(value, np.concatenate(all_nll), np.concatenate(all_weights))


def _scored(value: float, nll: Any, weights: Any) -> Scored:
    if not math.isfinite(value):
        raise InvalidModel(f"model produced non-finite logits (val_bpb={value})")
    return Scored(value, nll, weights)


def evaluate_bpb(model, rows: np.ndarray, score_from: np.ndarray,
                 token_bytes: np.ndarray, device, batch_rows: int = 64,
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
