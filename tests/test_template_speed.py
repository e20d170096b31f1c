"""The GPU-path speed work keeps the data and the clock honest (checked on CPU).

The train-batch iterator no longer drains the GPU every step and the GPU seed's Muon batches
Newton-Schulz by shape; neither may change which tokens a seed sees, what the clock counts,
or the orthogonalised update.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

TEMPLATE = Path(__file__).resolve().parent.parent / "train_template"
sys.path.insert(0, str(TEMPLATE))

from context import TrainContext  # noqa: E402
from corpus import Split  # noqa: E402
from profiles import get_profile  # noqa: E402

# sha256 of the cpu-micro stream below as the iterator before the speed work (commit 88bfbcb)
# produced it: 32 batches of 4 rows, the inputs then each row's last target.
COMMITTED_STREAM = "7525e999f5492d5226c704acadc0b0766a04ea68eaae03e0c5580d11eb801485"


def split() -> Split:
    rng = np.random.default_rng(1234)
    tokens = rng.integers(1, 256, size=50_000).astype(np.uint16)
    starts = np.arange(0, 50_000, 89, dtype=np.int64)
    tokens[starts] = 0
    return Split(tokens, starts)


def context(**changes) -> TrainContext:
    profile = dataclasses.replace(get_profile("cpu-micro"), **changes)
    return TrainContext.local(profile, torch.device("cpu"), split(), 256, seed=7, budget_fraction=1.0)


def stream_hash(batches) -> tuple[int, str]:
    digest, count = hashlib.sha256(), 0
    for x, y in batches:
        assert x.dtype == y.dtype == torch.int64 and torch.equal(x[:, 1:], y[:, :-1])
        digest.update(x.numpy().tobytes())
        digest.update(y[:, -1].numpy().tobytes())
        count += 1
    return count, digest.hexdigest()


def test_the_token_stream_is_the_committed_iterators() -> None:
    assert stream_hash(context().batches(4)) == (32, COMMITTED_STREAM)


def test_a_time_budget_hands_out_the_same_stream() -> None:
    ctx = context(budget_kind="time", budget=60.0, clock_skip_steps=3, warmup_max_s=10.0)
    taken = []
    for pair in ctx.batches(4):
        taken.append(pair)
        if len(taken) == 32:
            break
    assert stream_hash(taken) == (32, COMMITTED_STREAM)


def test_the_clock_skips_warm_up_and_counts_up_to_leaving_the_loop() -> None:
    ctx = context(budget_kind="time", budget=60.0, clock_skip_steps=2, warmup_max_s=10.0)
    start = time.perf_counter()
    for step, _ in enumerate(ctx.batches(2)):
        time.sleep(0.3 if step < 2 else 0.05)  # the two warm-up steps are slow and not counted
        if step == 5:
            break  # the iterator is closed here: the clock catches up
    elapsed = time.perf_counter() - start
    assert ctx.steps == 6
    # clocked: batches 3..6 handed out after the warm-up (4 x 0.05 s), not the 0.6 s of warm-up
    assert 4 * 0.05 <= ctx.counted_seconds < elapsed - 2 * 0.3 + 0.01
    assert ctx._source.server.spent_at is None and 0 < ctx.progress() < 1


def reference_orthogonalize(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Muon's Newton-Schulz as the seed wrote it before batching: one matrix at a time."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.float()
    transpose = x.size(0) > x.size(1)
    if transpose:
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return x.T if transpose else x


def load_gpu_seed():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_seed_speed", TEMPLATE / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_batched_newton_schulz_matches_one_matrix_at_a_time() -> None:
    seed = load_gpu_seed()
    torch.manual_seed(0)
    for shape in [(6, 96, 32), (6, 32, 96), (3, 32, 32)]:
        stack = torch.randn(shape)
        batched = seed.orthogonalize(stack)
        for g, got in zip(stack, batched, strict=True):
            assert torch.allclose(got, reference_orthogonalize(g), atol=1e-5)
            assert torch.allclose(seed.orthogonalize(g), got, atol=1e-5)
        # the update is roughly semi-orthogonal: singular values pulled towards 1
        singular = torch.linalg.svdvals(batched)
        assert singular.max() < 1.5 and singular.median() > 0.6


def test_muon_steps_grouped_by_shape_match_per_matrix_updates() -> None:
    seed = load_gpu_seed()
    torch.manual_seed(0)
    shapes = [(48, 16), (16, 16), (48, 16), (64, 16), (16, 64), (16, 16)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    expected = [p.detach().clone() for p in params]
    bufs = [torch.zeros_like(p) for p in params]
    opt = seed.Muon(params, lr=0.02, momentum=0.95, weight_decay=0.1)
    for _ in range(3):
        grads = [torch.randn(s) for s in shapes]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()
        for i, g in enumerate(grads):  # the update rule, written out per matrix
            bufs[i].lerp_(g, 1 - 0.95)
            update = reference_orthogonalize(g.lerp(bufs[i], 0.95))
            scale = max(1.0, shapes[i][0] / shapes[i][1]) ** 0.5
            expected[i] = expected[i] * (1 - 0.02 * 0.1) - 0.02 * scale * update
    for p, e in zip(params, expected, strict=True):
        assert torch.allclose(p.detach(), e, atol=1e-5)
