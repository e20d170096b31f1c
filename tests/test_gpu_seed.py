"""The GPU seed (train_template/train.py) on CPU: the real shape builds, a tiny override trains."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

TEMPLATE = Path(__file__).resolve().parent.parent / "train_template"
sys.path.insert(0, str(TEMPLATE))

import mfu  # noqa: E402
from causality import check_model  # noqa: E402
from context import TrainContext  # noqa: E402
from corpus import Split  # noqa: E402
from profiles import get_profile  # noqa: E402

TINY = {"DEPTH": "3", "MODEL_DIM": "64", "HEAD_DIM": "32", "BATCH_SIZE": "2",
        "WINDOW_PATTERN": '"SL"', "SHORT_WINDOW": "8"}


def load_seed(name: str, overrides: dict[str, str] | None = None) -> ModuleType:
    """Import train.py as a fresh module, with constants replaced in its source (file untouched)."""
    source = (TEMPLATE / "train.py").read_text()
    for const, literal in (overrides or {}).items():
        source, count = re.subn(rf"^{const} = [^#\n]*", f"{const} = {literal}  ", source, flags=re.M)
        assert count == 1, f"constant {const} not found once in train.py"
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, str(TEMPLATE / "train.py"), "exec"), module.__dict__)
    return module


def cpu_context(seq_len: int, steps: int, batch: int, vocab: int = 256) -> TrainContext:
    """The gpu-5min profile with only the machine-sized knobs changed: CPU, a token budget."""
    profile = dataclasses.replace(get_profile("gpu-5min"), device="cpu", budget_kind="tokens",
                                  budget=steps * batch * seq_len, seq_len=seq_len)
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, vocab, size=20_000).astype(np.uint16)
    starts = np.arange(0, 20_000, 97, dtype=np.int64)
    tokens[starts] = 0
    return TrainContext.local(profile, torch.device("cpu"), Split(tokens=tokens, starts=starts),
                              vocab, seed=0, budget_fraction=1.0)


def test_seed_constants_match_the_cpu_seed() -> None:
    """Same names in the same order as train_cpu.py: the mutator edits both alike."""
    pattern = re.compile(r"^([A-Z][A-Z0-9_]*) = ", re.M)
    gpu = pattern.findall((TEMPLATE / "train.py").read_text())
    cpu = pattern.findall((TEMPLATE / "train_cpu.py").read_text())
    assert gpu[: len(cpu)] == cpu


def test_real_gpu_shape_builds_and_runs_forward_on_cpu() -> None:
    seed = load_seed("seed_real")
    assert (seed.DEPTH, seed.MODEL_DIM, seed.HEAD_DIM) == (8, 512, 128)
    torch.manual_seed(0)
    model = seed.GPT(8192, 2048)
    params = sum(p.numel() for p in model.parameters())
    assert 40e6 < params < 60e6  # tens of millions: one H100's worth for 5 minutes
    logits = model(torch.randint(0, 8192, (1, 16)))
    assert logits.shape == (1, 16, 8192) and torch.isfinite(logits).all()
    # embedding tables (token + 4 value embeddings) are lookups, not matmuls
    assert mfu.matmul_params(model) == params - 5 * 8192 * 512
    per_token = mfu.flops_per_token(model, seed, 2048)
    assert per_token == 6 * mfu.matmul_params(model) + 12 * 512 * 8 * 2048


def test_tiny_override_takes_optimizer_steps_and_stays_causal() -> None:
    seed = load_seed("seed_tiny", TINY)
    torch.manual_seed(0)
    ctx = cpu_context(seq_len=32, steps=3, batch=2)  # the last step's LR is 0 (full warmdown)
    model = seed.train(ctx)
    assert ctx.steps == 3 and ctx.tokens_used == 3 * 64
    # zero_out init: the output projections only move through an optimizer step
    assert all(b.attn.proj.weight.abs().sum() > 0 for b in model.blocks)
    assert [b.attn.window for b in model.blocks] == [8, None, 8]
    assert model.ve_layers == [0, 2]
    model.eval()
    rows = np.asarray(ctx._source.server._tokens[:32 * 4 + 4], dtype=np.int64)[: 4 * 33].reshape(4, 33)
    _, problem = check_model(model, rows, np.zeros(4, dtype=np.int64), np.ones(256),
                             torch.device("cpu"), autocast=ctx.autocast)
    assert problem is None, problem


def test_sliding_window_limits_what_a_token_sees() -> None:
    seed = load_seed("seed_window", {**TINY, "DEPTH": "1", "WINDOW_PATTERN": '"S"', "SHORT_WINDOW": "4",
                                     "VALUE_EMBEDS": "False", "INIT_SCHEME": '"normal"'})
    torch.manual_seed(0)
    model = seed.GPT(64, 16).eval()
    x = torch.randint(0, 64, (1, 16))
    far = x.clone()
    far[0, 0] = (x[0, 0] + 1) % 64  # a token outside position 15's window of 4 (one block)
    near = x.clone()
    near[0, 13] = (x[0, 13] + 1) % 64  # inside it
    with torch.no_grad():
        base, out_far, out_near = model(x), model(far), model(near)
    assert torch.allclose(base[0, 15], out_far[0, 15], atol=1e-5)
    assert not torch.allclose(base[0, 15], out_near[0, 15], atol=1e-5)


@pytest.mark.parametrize("name, peak", [("NVIDIA H100 80GB HBM3", 989.4e12), ("NVIDIA H200", 989.4e12),
                                        ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA H100 PCIe", 756e12),
                                        ("NVIDIA GH200 480GB", 989.4e12), ("Some Future GPU", None)])
def test_peak_flops_named_per_gpu_model(name: str, peak: float | None) -> None:
    assert mfu.peak_flops(name) == peak
