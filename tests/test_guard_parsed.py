"""One parse per child: the shared tree, and the statement memo that pre-flight's harness check
keeps. A memo must never change a verdict, only skip work."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evolve.guard import parsed, preflight
from evolve.guard.preflight import check_harness, preflight as run_preflight
from evolve.mutate.edit_format import syntax_problems

TRAIN = "def train(ctx):\n    return None\n"


def forget() -> None:
    """Both memos empty: the verdict of a first sight."""
    preflight._CLEAN = parsed.StatementMemo()
    preflight._ALIASES = parsed.StatementMemo()


def test_the_mutators_syntax_check_and_preflight_share_one_tree():
    source = "LR = 0.1\n" + TRAIN + "# shared 1\n"
    assert syntax_problems({"train.py": source}) == []
    assert parsed.parse(source) is parsed.parse(source, "train.py")
    assert run_preflight({"train.py": "LR = 0.2\n" + TRAIN}, {"train.py": source},
                         mutable_files=["train.py"]) is None


def test_a_source_that_does_not_parse_fails_every_time():
    broken = "def train(ctx):\n    return (\n"
    for _ in range(2):
        with pytest.raises(SyntaxError):
            parsed.parse(broken)
    assert "does not parse" in check_harness({"train.py": broken}) or \
        "syntax error" in check_harness({"train.py": broken})


def test_two_statements_on_one_line_are_checked_apart():
    forget()
    source = "a = 1; import prepare\n" + TRAIN
    first = check_harness({"train.py": source})
    again = check_harness({"train.py": source})  # `a = 1` is remembered clean; the import is not
    assert first == again == "train.py:1: imports the harness module 'prepare'; the harness " \
                             "is off limits"


def test_a_clean_statement_is_judged_again_under_other_imports():
    forget()
    reseed = "def reseed():\n    np.random.seed(0)\n"
    assert check_harness({"train.py": "import os as np\n" + reseed + TRAIN}) is None
    problem = check_harness({"train.py": "import numpy as np\n" + reseed + TRAIN})
    assert problem is not None and "calls numpy.random.seed()" in problem


POOL = [
    "import numpy as np\n", "import os as np\n", "import torch\n", "from math import log\n",
    "LR = 0.1\n", "LR = 0.2; DEPTH = 4\n", "x = 'train.bin'\n",
    "def helper(y):\n    return np.random.seed(y)\n",
    "def helper2(y):\n    return torch.manual_seed(y)\n",
    "@staticmethod\ndef deco():\n    import prepare\n",
    "class Model:\n    def f(self, ctx):\n        return ctx._data\n",
    "def peek(ctx):\n    return ctx.tokens\n",
    "torch.backends.cudnn.benchmark = True\n", "log.x = 1\n", "a = 1; import sys\n",
    "def train(ctx):\n    return None\n", "def train(run):\n    return run._secret\n",
]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.sampled_from(POOL), min_size=1, max_size=8), min_size=1,
                max_size=6))
def test_remembered_statements_never_change_a_verdict(sources):
    """A run of children (each a list of statements) checked with the memo as it fills up,
    against the same checks with the memo emptied first."""
    forget()
    remembered = [check_harness({"train.py": "".join(s)}) for s in sources]
    fresh = []
    for statements in sources:
        forget()
        fresh.append(check_harness({"train.py": "".join(statements)}))
    assert remembered == fresh
