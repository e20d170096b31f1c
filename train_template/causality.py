"""Causality, checked after the fact by a second, fresh evaluator.

After val is scored, a fresh evaluator process (same artefact, no state shared with the
scoring one) is asked for two things, in batches of exactly the shapes scoring used:

  * a replay: first of all, one batch scoring sent late, unchanged. A deterministic model
    returns the same logits; one that learnt from the rows it had scored before (it is
    fresh now) scores them worse than it did then;
  * cuts: random scored positions (row i, position c), each as a probe row holding row i's
    inputs up to c and then other text (from the train split, so the probe teaches a learner
    no validation text). A causal model predicts the same distribution for the token after c
    from both; one that peeked at later tokens, mixed rows or cached by prefix scored the true
    token better in scoring than in the probe. A row's cuts are probed in increasing order
    and never two in one batch (a later cut's row holds an earlier cut's true token).

d = the scored log-prob of a true token minus the probe's, per cut and per replayed position;
an honest model's d is 0 up to floating noise. Two rules, either makes the run invalid:
  * mean: the mean of d exceeds K_SE standard errors and MEAN_TOL (a small advantage on
    every token: a bonus to the true token, learning from scored rows);
  * leak: LEAK_COUNT or more d > LEAK_TOL (a large advantage on a few tokens: a model that
    peeks on 0.5% of positions). The mean rule alone fires only after about K_SE^2 such
    cuts, which would take thousands of probe rows; an honest deterministic model never has
    one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
from scoring import LogitsFn, Scored, as_rows, cross_entropy, host_array, model_logits, score_rows

K_SE = 4.0
# per device type: (MEAN_TOL nats, LEAK_TOL nats, LEAK_COUNT). CPU forward passes of the same
# shapes are bit-reproducible; CUDA bf16 kernels may differ by rounding between batches.
TOLERANCES = {"cpu": (1e-4, 1e-3, 1), "cuda": (2e-3, 0.5, 3)}


@dataclass(frozen=True)
class Probe:
    replay: slice        # the scored rows replayed unchanged (the first batch sent)
    rows: np.ndarray     # int64 [P, T]: cut probe inputs
    source: np.ndarray   # int64 [P]: scored row of each probe
    cut: np.ndarray      # int64 [P]: position whose next token is compared (-1: padding)
    batches: list[slice]  # the cut batches to send, with scoring's shapes


def batch_sizes(n_rows: int, batch_rows: int, total: int) -> list[int]:
    """Batch sizes for about `total` probe rows using every shape scoring used on `n_rows`."""
    full = min(batch_rows, n_rows)
    last = n_rows % batch_rows if n_rows > batch_rows else 0
    sizes = [last] if last else []
    while not sizes or sum(sizes) + full <= total:
        sizes.append(full)
    return sizes


def plan(scored: Scored, inputs: np.ndarray, filler: np.ndarray, batch_rows: int,
         probe_rows: int, seed: int) -> Probe:
    """Draw the cuts and build the probe rows (inputs: the scored rows' inputs, [N, T];
    filler: 1-D tokens of other text for the tails)."""
    rng = np.random.default_rng([seed, 0x5EED])
    mask = host_array(scored.weights) > 0
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
    last = (n_rows - 1) // batch_rows * batch_rows  # the last batch scoring sent
    return Probe(slice(last, n_rows), _spliced(inputs, filler, source, cut, rng), source, cut,
                 batches)


def _spliced(inputs: np.ndarray, filler: np.ndarray, source: np.ndarray, cut: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    """Each probe row: its source row up to the cut, then filler text from a random place
    (so a probe row's neighbours in its batch differ from scoring's too: row mixing shows)."""
    seq = inputs.shape[1]
    out = inputs[source].copy()
    for p, (i, c) in enumerate(zip(source, cut, strict=True)):
        length = seq - c - 1
        if c < 0 or length <= 0:
            continue  # padding, or the cut is the last input (its next token is no input)
        for _ in range(16):  # text whose first token differs from the true next one
            start = int(rng.integers(0, len(filler) - length + 1))
            tail = np.asarray(filler[start : start + length], dtype=np.int64)
            if tail[0] != inputs[i, c + 1]:
                break
        out[p, c + 1:] = tail
    return out


def probe_nll(logits_fn: LogitsFn, probe: Probe, rows: np.ndarray,
              device: Any) -> tuple[np.ndarray, np.ndarray]:
    """(the replayed rows' cross-entropies [R, T], the true next token's at each cut [P]),
    with scoring's maths (device: as score_rows's). rows: the scored rows [N, T+1]."""
    replay = as_rows(rows[probe.replay], device)
    replay_nll = cross_entropy(logits_fn(replay[:, :-1]), replay[:, 1:], device)
    targets = rows[probe.source, np.maximum(probe.cut, 0) + 1]
    out = []
    for part in probe.batches:
        logits = logits_fn(as_rows(probe.rows[part], device))
        cut = np.maximum(probe.cut[part], 0)
        if device is None:
            picked = logits[np.arange(len(cut)), cut]
        else:
            import torch

            cut = torch.as_tensor(cut, device=device)
            picked = logits[torch.arange(len(cut), device=device), cut]
        out.append(host_array(cross_entropy(picked, as_rows(targets[part], device), device)))
    return host_array(replay_nll), np.concatenate(out)


def verdict(scored: Scored, probe: Probe, replay_nll: np.ndarray, cut_nll: np.ndarray,
            device_type: str) -> tuple[str | None, dict]:
    """(why the run is invalid or None, the statistics for the record)."""
    nll = host_array(scored.nll).astype(np.float64)
    real = probe.cut >= 0
    d_cut = cut_nll.astype(np.float64)[real] - nll[probe.source[real], probe.cut[real]]
    mask = host_array(scored.weights)[probe.replay] > 0
    d_replay = (replay_nll.astype(np.float64) - nll[probe.replay])[mask]
    d = np.concatenate([d_cut, d_replay])  # scored log-prob minus the probe's
    mean_tol, leak_tol, leak_count = TOLERANCES.get(device_type, TOLERANCES["cuda"])
    n = len(d)
    mean = float(d.mean()) if n else 0.0
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    leaks = int((d > leak_tol).sum())
    stats = {"causality_cuts": len(d_cut), "causality_replayed": len(d_replay),
             "causality_mean_nats": mean, "causality_leaks": leaks}
    if not all(map(math.isfinite, (mean, se))):
        return "causality check failed: the probe's log-probs are not finite", stats
    if leaks >= leak_count:
        return (f"causality check failed: at {leaks} of {n} probed positions the true next "
                f"token scored up to {float(d.max()):.3g} nats better in scoring than in a fresh "
                "evaluator that saw only the tokens before it (the model sees the tokens it "
                "predicts, learns while scored, or is not deterministic)"), stats
    if mean > K_SE * se and mean > mean_tol:
        return (f"causality check failed: a fresh evaluator that saw only the tokens before "
                f"each probed position scored the true token {mean:.3g} nats worse on average "
                f"over {n} positions ({mean / se if se else math.inf:.1f} standard errors): the "
                "scored outputs depended on later tokens or on rows already scored"), stats
    return None, stats


def check(probe_fn: LogitsFn, scored: Scored, rows: np.ndarray, filler: np.ndarray,
          batch_rows: int, probe_rows: int, seed: int,
          device: Any) -> tuple[str | None, dict]:
    """Run the probe (probe_fn: a fresh evaluator's logits) against a scored split (device:
    as score_rows's; None is the host, whose forward passes were on the CPU)."""
    probe = plan(scored, rows[:, :-1], filler, batch_rows, probe_rows, seed)
    replay_nll, cut_nll = probe_nll(probe_fn, probe, rows, device)
    return verdict(scored, probe, replay_nll, cut_nll, "cpu" if device is None else device.type)


def check_model(model, rows: np.ndarray, score_from: np.ndarray,
                token_bytes: np.ndarray, device, *, filler: np.ndarray | None = None,
                batch_rows: int = 64,
                probe_rows: int = 256, seed: int = 0,
                autocast: Callable[[], AbstractContextManager] = nullcontext
                ) -> tuple[float, str | None]:
    """(bpb, causality problem or None) of a model in this process: a research notebook's or
    a test's check. The harness never runs candidate code in-process; it uses check()."""
    fn = model_logits(model, len(token_bytes), autocast)
    scored = score_rows(fn, rows, score_from, token_bytes, device, batch_rows)
    filler = rows[::-1].ravel() if filler is None else filler  # other text: rows reversed
    problem, _ = check(fn, scored, rows, filler, batch_rows, probe_rows, seed, device)
    return scored.bpb, problem
