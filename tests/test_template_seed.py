"""The CPU seed: every contract constant exists, and every allowed value trains causally."""

from __future__ import annotations

import ast
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

TEMPLATE = Path(__file__).resolve().parent.parent / "train_template"
sys.path.insert(0, str(TEMPLATE))

from causality import check_model  # noqa: E402
from context import TrainContext  # noqa: E402
from corpus import Split, eval_rows  # noqa: E402
from profiles import get_profile  # noqa: E402
from synthlang import Language, LanguageSpec  # noqa: E402

SEED = (TEMPLATE / "train_cpu.py").read_text()
CONTRACT = {  # docs/contracts.md section 2: name -> type
    "DEPTH": int, "MODEL_DIM": int, "HEAD_DIM": int, "MLP_RATIO": (int, float), "BATCH_SIZE": int,
    "EMBED_LR": float, "UNEMBED_LR": float, "MATRIX_LR": float, "SCALAR_LR": float,
    "WEIGHT_DECAY": float, "ADAM_BETA1": float, "ADAM_BETA2": float, "MUON_MOMENTUM": float,
    "WARMUP_FRAC": float, "WARMDOWN_FRAC": float, "FINAL_LR_FRAC": float, "GRAD_CLIP": float,
    "ACTIVATION": str, "NORM_PLACEMENT": str, "INIT_SCHEME": str, "TIE_EMBEDDINGS": bool,
    "LOGIT_SOFTCAP": float, "QK_NORM": bool, "ROPE_BASE": float,
}


def constants(source: str) -> dict[str, tuple[ast.Assign, object]]:
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.Constant):
            out[node.targets[0].id] = (node, node.value.value)
    return out


def with_constants(source: str, **values: object) -> str:
    """Edit module-level `NAME = literal` lines, as the heuristic mutator does."""
    lines = source.splitlines(keepends=True)
    found = constants(source)
    for name, value in values.items():
        node = found[name][0].value
        line = lines[node.lineno - 1]
        lines[node.lineno - 1] = line[: node.col_offset] + repr(value) + line[node.end_col_offset:]
    return "".join(lines)


def test_every_contract_constant_is_a_literal_of_its_type() -> None:
    found = constants(SEED)
    for name, kind in CONTRACT.items():
        assert name in found, f"train_cpu.py lacks {name}"
        assert isinstance(found[name][1], kind), f"{name} = {found[name][1]!r} is not {kind}"
    assert found["MODEL_DIM"][1] % found["HEAD_DIM"][1] == 0


@pytest.fixture(scope="module")
def data() -> tuple[Split, Split]:
    language = Language(LanguageSpec(vocab=80, topics=3, seed=2))
    def split(seed: int) -> Split:
        tokens = np.frombuffer(language.sample_stream(20_000, seed=seed).encode(), dtype=np.uint8)
        return Split(tokens, np.flatnonzero(tokens == 10).astype(np.int64))
    return split(1), split(2)


def train_variant(tmp_path: Path, data: tuple[Split, Split], **values: object) -> float:
    path = tmp_path / "variant.py"
    path.write_text(with_constants(SEED, **values))
    spec = importlib.util.spec_from_file_location("variant", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    train, val = data
    profile = get_profile("cpu-micro")
    ctx = TrainContext.local(profile, torch.device("cpu"), train, 256, seed=0, budget_fraction=0.5)
    model = module.train(ctx).eval()
    assert ctx.steps > 0 and ctx.progress() == pytest.approx(1.0, abs=0.15)
    rows, first = eval_rows(val, profile.seq_len, 1024)
    bpb, problem = check_model(model, rows, first, np.ones(256), torch.device("cpu"))
    assert problem is None, problem
    return bpb


VARIANTS = [
    {"ACTIVATION": "relu2"}, {"ACTIVATION": "gelu"}, {"ACTIVATION": "silu"},
    {"ACTIVATION": "swiglu"},
    {"NORM_PLACEMENT": "post"}, {"NORM_PLACEMENT": "sandwich"},
    {"INIT_SCHEME": "normal"}, {"INIT_SCHEME": "scaled"},
    {"TIE_EMBEDDINGS": True, "LOGIT_SOFTCAP": 0.0, "QK_NORM": False},
    {"GRAD_CLIP": 1.0, "WARMUP_FRAC": 0.5, "WARMDOWN_FRAC": 1.0, "FINAL_LR_FRAC": 0.1,
     "WEIGHT_DECAY": 0.1},
    {"DEPTH": 1, "MODEL_DIM": 48, "HEAD_DIM": 16, "MLP_RATIO": 2.5, "BATCH_SIZE": 3,
     "ROPE_BASE": 500.0},
]


@pytest.mark.parametrize("values", VARIANTS, ids=lambda v: ",".join(f"{k}={v[k]}" for k in v))
def test_every_allowed_value_trains_and_stays_causal(tmp_path: Path, data, values) -> None:
    bpb = train_variant(tmp_path, data, **values)
    assert math.isfinite(bpb) and bpb < 8.0


def test_the_seed_learns(tmp_path: Path, data) -> None:
    assert train_variant(tmp_path, data) < 7.0  # uniform guessing over bytes scores 8


def test_a_time_budget_stops_the_iterator(data) -> None:
    import dataclasses
    import time

    profile = dataclasses.replace(get_profile("cpu-micro"), budget_kind="time", budget=0.3,
                                  clock_skip_steps=2, warmup_max_s=10.0)
    ctx = TrainContext.local(profile, torch.device("cpu"), data[0], 256, seed=0,
                             budget_fraction=1.0)
    start = time.perf_counter()
    steps = 0
    for _ in ctx.batches(2):
        steps += 1
        time.sleep(0.02)
    assert ctx.progress() == 1.0 and ctx.counted_seconds >= 0.3 and ctx.time_left() == 0
    assert steps == ctx.steps >= 3 and time.perf_counter() - start >= 0.3 + 2 * 0.02
    assert ctx.tokens_left() == math.inf
    assert list(ctx.batches(2)) == []  # a second iterator does not reopen the budget
