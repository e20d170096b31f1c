"""Pre-flight: each violation is caught with file, line and what was found; the seeds pass."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from evolve.guard.preflight import (
    check_harness,
    check_not_duplicate,
    harness_modules,
    preflight,
)
from population.candidate import source_hash

REPO = Path(__file__).resolve().parent.parent
SEED = textwrap.dedent(
    """\
    import torch

    DEPTH = 2  # blocks


    def train(ctx):
        model = torch.nn.Embedding(ctx.vocab_size, ctx.vocab_size)
        for x, y in ctx.batches(4):
            ctx.log(f"loss: {0.0:.3f}")
        return model
    """
)
LINE = SEED.count("\n") + 1  # the first line of anything appended to SEED


def run(
    child: str, *, parent: str = SEED, seen: object = (), mutable: tuple[str, ...] = ("train.py",)
) -> str | None:
    return preflight(
        {"train.py": parent},
        {"train.py": child},
        mutable_files=list(mutable),
        has_hash=seen,  # type: ignore[arg-type]
    )


# ---- what passes ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["train_cpu.py", "train.py"])
def test_the_real_seeds_pass(name: str) -> None:
    source = (REPO / "train_template" / name).read_text()
    modules = harness_modules(REPO / "train_template", ["train.py"])
    assert check_harness({"train.py": source}, harness_modules=modules) is None
    child = source.replace("DEPTH = ", "DEPTH = 1 + ", 1)
    assert (
        preflight(
            {"train.py": source},
            {"train.py": child},
            mutable_files=["train.py"],
            harness_modules=modules,
        )
        is None
    )


@pytest.mark.parametrize(
    "snippet",
    [
        "g = torch.Generator().manual_seed(1234)",  # a local generator, not the global one
        "torch.backends.cuda.matmul.allow_tf32 = True",
        "torch._inductor.config.coordinate_descent_tuning = True",
        "import os\nos.environ['PYTORCH_CUDA_ALLOC_CONF'] = 'expandable_segments:True'",
        "import gc\ngc.collect()",
        "print('step 1 loss: 3.2 val_bpb is computed by the harness')",
        "class Model(torch.nn.Module):\n    def set(self):\n        self.scale = 2",
        "def helper(model):\n    model.head.weight = model.embed.weight",
    ],
)
def test_ordinary_training_code_passes(snippet: str) -> None:
    assert run(SEED + snippet + "\n") is None


# ---- each violation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("snippet", "found"),
    [
        ("import prepare", "imports the harness module 'prepare'"),
        ("import prepare as p", "imports the harness module 'prepare'"),
        ("from prepare import evaluate_bpb", "imports from the harness module prepare"),
        ("m = __import__('prepare')", "imports the harness module 'prepare' dynamically"),
        (
            "import importlib\nm = importlib.import_module('prepare')",
            "imports the harness module 'prepare' dynamically",
        ),
        ("import sys\nsys.modules['prepare'].EVAL_TOKENS = 1", "sys.modules"),
        ("from sys import modules", "imports sys.modules"),
        ("import sys\nf = sys._getframe(1)", "sys._getframe"),
        ("import inspect\nf = inspect.stack()", "calls inspect.stack()"),
        ("import gc\nobjs = gc.get_objects()", "calls gc.get_objects()"),
        ("def f(frame):\n    return frame.f_back.f_globals", "walks into the caller"),
        (
            "def f(ctx):\n    ctx.seq_len = 4096",
            "assigns ctx.seq_len, changing the harness context",
        ),
        ("def f(ctx):\n    setattr(ctx, 'budget', 1)", "calls setattr() on ctx"),
        ("def f(ctx):\n    return ctx._tokens_seen", "reads ctx._tokens_seen, a private part"),
        (
            "import torch.nn.functional as F\nF.cross_entropy = None",
            "assigns F.cross_entropy, patching a module",
        ),
        ("import math\nmath.log = abs", "assigns math.log, patching a module"),
        ("torch.manual_seed(0)", "calls torch.manual_seed(), which reseeds a global RNG"),
        ("torch.cuda.manual_seed_all(0)", "calls torch.cuda.manual_seed_all()"),
        ("import random\nrandom.seed(0)", "calls random.seed()"),
        ("import numpy as np\nnp.random.seed(0)", "calls numpy.random.seed()"),
        ("from random import seed as s\ns(1)", "calls random.seed()"),
        ("open('/root/.cache/evolve/synthetic/val.bin', 'rb')", "refers to the data cache"),
        (
            "import os\np = os.environ['EVOLVE_CACHE_DIR']",
            "refers to the data cache ('EVOLVE_CACHE_DIR')",
        ),
        ("p = 'tokens/val.bin'", "refers to the data cache ('tokens/val.bin')"),
        ("print(f'val_bpb:          {0.5:.6f}')", "shaped like the summary block (val_bpb:)"),
        ("print('---\\ntest_bpb: 0.1')", "shaped like the summary block (test_bpb:)"),
    ],
)
def test_harness_violations_name_file_line_and_finding(snippet: str, found: str) -> None:
    reason = run(SEED + snippet + "\n")
    assert reason is not None and found in reason, reason
    last = LINE + snippet.count("\n")  # each snippet's offending line is its last
    assert reason.startswith(f"train.py:{last}: "), reason


def test_other_template_modules_are_harness_too() -> None:
    modules = harness_modules(REPO / "train_template", ["train.py"])
    assert "prepare" in modules and "train" not in modules
    child = SEED + "import corpus\n"
    reason = preflight(
        {"train.py": SEED}, {"train.py": child}, mutable_files=["train.py"], harness_modules=modules
    )
    assert (
        reason == f"train.py:{LINE}: imports the harness module 'corpus'; the harness is off limits"
    )


def test_every_mutable_file_is_checked() -> None:
    parent = {"train.py": SEED, "model.py": "X = 1\n"}
    child = {"train.py": SEED, "model.py": "X = 1\nimport prepare\n"}
    reason = preflight(parent, child, mutable_files=["train.py", "model.py"])
    assert reason is not None and reason.startswith("model.py:2: imports the harness module")


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("import torch\nDEPTH = 2\n", "train.py:1: defines no top-level function train(ctx)"),
        ("def train():\n    pass\n", "train.py:1: train() takes no argument"),
        ("async def train(ctx):\n    pass\n", "train.py:1: train is async"),
        (
            "class M:\n    def train(self, ctx):\n        pass\n",
            "train.py:1: defines no top-level function train",
        ),
    ],
)
def test_train_must_be_defined(source: str, found: str) -> None:
    reason = run(source)
    assert reason is not None and reason.startswith(found), reason


# ---- the other checks --------------------------------------------------------------------------


def test_syntax_error_names_file_and_line() -> None:
    reason = run(SEED + "def broken(:\n")
    assert reason is not None and reason.startswith(f"train.py:{LINE}: syntax error")


def test_null_bytes_do_not_crash_the_check() -> None:
    reason = run(SEED + "x = 1\0\n")
    assert reason is not None and reason.startswith("train.py:")


def test_child_identical_to_parent() -> None:
    assert run(SEED) == "train.py: is identical to the parent"


def test_child_that_only_changes_comments_and_blank_lines() -> None:
    child = SEED.replace("DEPTH = 2  # blocks", "DEPTH = 2  # more blocks?") + "\n\n# a note\n"
    assert run(child) == "train.py: differs from the parent only in comments or blank lines"


def test_duplicate_by_set_and_by_callable() -> None:
    child = SEED.replace("DEPTH = 2", "DEPTH = 3")
    digest = source_hash({"train.py": child})
    reason = run(child, seen={digest})
    assert reason is not None and "duplicate of a candidate already stored or in flight" in reason
    assert run(child, seen=lambda h: h == digest) == reason
    assert run(child, seen=lambda h: False) is None
    assert check_not_duplicate({"train.py": child}, set()) is None


def test_touching_a_file_that_is_not_mutable() -> None:
    reason = preflight(
        {"train.py": SEED},
        {"train.py": SEED + "x = 1\n", "prepare.py": "EVIL = 1\n"},
        mutable_files=["train.py"],
    )
    assert reason == "prepare.py: touches a file that is not mutable (mutable files: train.py)"


def test_a_mutable_file_missing_from_the_child() -> None:
    reason = preflight(
        {"train.py": SEED, "model.py": ""},
        {"train.py": SEED + "x = 1\n"},
        mutable_files=["train.py", "model.py"],
    )
    assert reason == "model.py: missing from the child (every mutable file must be present)"


def test_order_reports_the_cheapest_real_problem_first() -> None:
    # a duplicate that also imports the harness is reported as a harness problem
    child = SEED + "import prepare\n"
    reason = run(child, seen={source_hash({"train.py": child})})
    assert reason is not None and "harness module" in reason


# ---- typed verdicts (check_child) ---------------------------------------------------------------


def test_check_child_returns_every_verdict_typed_with_file_and_line() -> None:
    from evolve.guard.preflight import Check, check_child

    child = SEED + "import prepare\n"
    report = check_child({"train.py": SEED, "model.py": "A = 1\n"},
                         {"train.py": child, "model.py": "A = (\n", "extra.py": "B = 2\n"},
                         mutable_files=["train.py", "model.py"])
    assert not report.ok
    assert [v.check for v in report.verdicts] == [Check.ONLY_MUTABLE, Check.PARSES, Check.HARNESS]
    only, parses, harness = report.verdicts
    assert only.file == "extra.py" and only.line is None
    assert parses.file == "model.py" and parses.line == 1 and "syntax error" in parses.message
    assert harness.file == "train.py" and harness.line == LINE and "prepare" in harness.message
    # The stored reason is the first verdict, as `preflight` has always reported it.
    assert report.reason == only.message == preflight(
        {"train.py": SEED, "model.py": "A = 1\n"},
        {"train.py": child, "model.py": "A = (\n", "extra.py": "B = 2\n"},
        mutable_files=["train.py", "model.py"])


def test_check_child_passes_a_good_child_and_skips_duplicates_unless_asked() -> None:
    from evolve.guard.preflight import Check, check_child

    child = SEED.replace("DEPTH = 2", "DEPTH = 3")
    assert check_child({"train.py": SEED}, {"train.py": child}, mutable_files=["train.py"]).ok
    seen = {source_hash({"train.py": child})}
    report = check_child({"train.py": SEED}, {"train.py": child}, mutable_files=["train.py"],
                         has_hash=seen)
    assert [v.check for v in report.verdicts] == [Check.DUPLICATE]
    same = check_child({"train.py": SEED}, {"train.py": SEED + "# note\n"},
                       mutable_files=["train.py"])
    assert [v.check for v in same.verdicts] == [Check.DIFFERS]
