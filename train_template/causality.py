"""Causality, checked after the fact by a second, fresh evaluator.

After a split is scored, random cuts are drawn among its scored positions; each cut (row i,
position c) becomes a probe row: row i's inputs up to c, then other validation text. A causal
model predicts the same distribution for the token after c from both, so the scored
log-prob of that true token minus the probe's (d) is zero up to floating noise. A model that
peeked at later tokens, mixed rows, cached by prefix or learnt from rows it had scored scores
the true token better in scoring than in the probe: d > 0.

The probe runs in a fresh process with the same artefact and the same batch shapes as
scoring (every shape scoring used), so it cannot be told apart by shape and shares no state
with the scoring run. A row's cuts are probed in increasing order and never two in one
batch: a later cut's row holds the true token of an earlier cut, so it must come after.

Two rules, either makes the run invalid:
  * mean: the mean of d over all cuts exceeds K standard errors and MEAN_TOL (a small
    advantage on every token: a bonus to the true token, learning from scored rows);
  * leak: LEAK_COUNT or more cuts with d > LEAK_TOL (a large advantage on a few tokens: a
    model that peeks on 0.5% of positions). The mean rule alone fires only after about K^2
    such cuts, which would take thousands of probe rows; an honest deterministic model never
    has one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scoring import LogitsFn, Scored, model_logits, score_rows

K_SE = 4.0
# per device type: (MEAN_TOL nats, LEAK_TOL nats, LEAK_COUNT). CPU forward passes of the same
# shapes are bit-reproducible; CUDA bf16 kernels may differ by rounding between batches.
TOLERANCES = {"cpu": (1e-4, 1e-3, 1), "cuda": (2e-3, 0.5, 3)}


@dataclass(frozen=True)
class Probe:
    rows: np.ndarray     # int64 [P, T]: probe inputs
    source: np.ndarray   # int64 [P]: scored row of each probe
    cut: np.ndarray      # int64 [P]: position whose next token is compared
    batches: list[slice]  # the batches to send, with scoring's shapes


def batch_sizes(n_rows: int, batch_rows: int, total: int) -> list[int]:
    """Batch sizes for about `total` probe rows using every shape scoring used on `n_rows`."""
    full = min(batch_rows, n_rows)
    last = n_rows % batch_rows if n_rows > batch_rows else 0
    sizes = [last] if last else []
    while not sizes or sum(sizes) + full <= total:
        sizes.append(full)
    return sizes


def plan(scored: Scored, inputs: np.ndarray, batch_rows: int, probe_rows: int,
         seed: int) -> Probe:
    """Draw the cuts and build the probe rows (inputs: the scored rows' inputs, [N, T])."""
    rng = np.random.default_rng([seed, 0x5EED])
    mask = (scored.weights > 0).cpu().numpy()
    n_rows, seq = inputs.shape
    per_row = max(1, math.ceil(probe_rows / n_rows))
    cuts = []
    for i in range(n_rows):
        candidates = np.flatnonzero(mask[i])
        if len(candidates):
            # at most half a row's positions: the rows of one round then differ in where they
            # are cut, so a row's neighbours in a probe batch differ from scoring's too
            take = min(per_row, max(1, len(candidates) // 2))
            cuts.append(np.sort(rng.choice(candidates, size=take, replace=False)))
        else:
            cuts.append(np.empty(0, dtype=np.int64))
    queue = [(i, int(cuts[i][r])) for r in range(per_row) for i in rng.permutation(n_rows)
             if r < len(cuts[i])]
    sizes = batch_sizes(n_rows, batch_rows, min(probe_rows, len(queue)))
    order: list[tuple[int, int]] = []
    batches = []
    for size in sizes:
        taken, seen, rest = [], set(), []
        for item in queue:  # the first cuts of rows not yet in this batch, in round order
            if len(taken) < size and item[0] not in seen:
                taken.append(item)
                seen.add(item[0])
            else:
                rest.append(item)
        if not taken:
            break
        # short of distinct rows: pad with unchanged rows (cut -1: not compared), same shape
        taken += [(i, -1) for i in range(n_rows) if i not in seen][: size - len(taken)]
        queue = rest
        batches.append(slice(len(order), len(order) + len(taken)))
        order.extend(taken)
    source = np.asarray([i for i, _ in order], dtype=np.int64)
    cut = np.asarray([c for _, c in order], dtype=np.int64)
    return Probe(_spliced(inputs, source, cut, rng), source, cut, batches)


def _spliced(inputs: np.ndarray, source: np.ndarray, cut: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    """Each probe row: its source row up to the cut, then validation text from a random place
    (so the tokens beside it in a batch differ from scoring's too: row mixing shows)."""
    n_rows, seq = inputs.shape
    flat = inputs.ravel()
    out = inputs[source].copy()
    for p, (i, c) in enumerate(zip(source, cut, strict=True)):
        length = seq - c - 1
        if c < 0 or length <= 0:
            continue  # padding, or the cut is the last input (its next token is no input)
        own = i * seq + c + 1  # where row i's true continuation sits in `flat`
        for _ in range(16):  # text whose first token differs from the true next one
            start = int(rng.integers(0, flat.size - length + 1))
            if start != own and flat[start] != inputs[i, c + 1]:
                break
        out[p, c + 1:] = flat[start : start + length]
    return out


def probe_nll(logits_fn: LogitsFn, probe: Probe, rows: np.ndarray,
              device: torch.device) -> torch.Tensor:
    """Cross-entropy of the true next token at each probe's cut (same maths as scoring).

    rows: the scored rows [N, T+1]; the true next token at cut c of row i is rows[i, c+1].
    """
    targets = rows[probe.source, np.maximum(probe.cut, 0) + 1]
    out = []
    for part in probe.batches:
        x = torch.as_tensor(probe.rows[part], dtype=torch.long, device=device)
        logits = logits_fn(x)
        vocab_size = logits.shape[-1]
        cut = torch.as_tensor(np.maximum(probe.cut[part], 0), device=device)
        picked = logits[torch.arange(len(cut), device=device), cut].reshape(-1, vocab_size)
        target = torch.as_tensor(targets[part], dtype=torch.long, device=device)
        out.append(F.cross_entropy(picked, target, reduction="none"))
    return torch.cat(out)


def verdict(scored: Scored, probe: Probe, probe_losses: torch.Tensor,
            device_type: str) -> tuple[str | None, dict]:
    """(why the run is invalid or None, the statistics for the record)."""
    real = probe.cut >= 0
    src, cut = probe.source[real], probe.cut[real]
    scored_nll = scored.nll.double().cpu().numpy()[src, cut]
    d = probe_losses.double().cpu().numpy()[real] - scored_nll  # scored log-prob minus the probe's
    mean_tol, leak_tol, leak_count = TOLERANCES.get(device_type, TOLERANCES["cuda"])
    n = len(d)
    mean = float(d.mean()) if n else 0.0
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    leaks = int((d > leak_tol).sum()) if n else 0
    stats = {"causality_cuts": n, "causality_mean_nats": mean, "causality_leaks": leaks}
    if not all(map(math.isfinite, (mean, se))):
        return "causality check failed: the probe's log-probs are not finite", stats
    if leaks >= leak_count:
        return (f"causality check failed: at {leaks} of {n} random cuts the true next token "
                f"scored up to {float(d.max()):.3g} nats better than when only the tokens after "
                "it were replaced (the model sees the tokens it predicts, or its output is not "
                "deterministic)"), stats
    if mean > K_SE * se and mean > mean_tol:
        return (f"causality check failed: replacing the tokens after a random cut lowered the "
                f"true next token's log-prob by {mean:.3g} nats on average over {n} cuts "
                f"({mean / se if se else math.inf:.1f} standard errors): the scored outputs "
                "depended on later tokens or on rows already scored"), stats
    return None, stats


def check(probe_fn: LogitsFn, scored: Scored, rows: np.ndarray, batch_rows: int,
          probe_rows: int, seed: int, device: torch.device) -> tuple[str | None, dict]:
    """Run the probe (probe_fn: a fresh evaluator's logits) against a scored split."""
    probe = plan(scored, rows[:, :-1], batch_rows, probe_rows, seed)
    losses = probe_nll(probe_fn, probe, rows, device)
    return verdict(scored, probe, losses, device.type)


def check_model(model: torch.nn.Module, rows: np.ndarray, score_from: np.ndarray,
                token_bytes: np.ndarray, device: torch.device, *, batch_rows: int = 64,
                probe_rows: int = 256, seed: int = 0,
                autocast: Callable[[], AbstractContextManager] = nullcontext
                ) -> tuple[float, str | None]:
    """(bpb, causality problem or None) of a model in this process: a research notebook's or
    a test's check. The harness never runs candidate code in-process; it uses check()."""
    fn = model_logits(model, len(token_bytes), autocast)
    scored = score_rows(fn, rows, score_from, token_bytes, device, batch_rows)
    problem, _ = check(fn, scored, rows, batch_rows, probe_rows, seed, device)
    return scored.bpb, problem
