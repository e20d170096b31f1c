"""One parse per child, of what changed: the parse against the parent's outline, and the
statement memo pre-flight's harness check keeps. Neither may change a verdict, only skip work."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evolve.guard import harness_rules, parsed
from evolve.guard.preflight import check_harness
from evolve.guard.preflight import preflight as run_preflight
from evolve.mutate.edit_format import syntax_problems

REPO = Path(__file__).resolve().parent.parent
TRAIN = "def train(ctx):\n    return None\n"


def forget() -> None:
    """Both memos empty: the verdict of a first sight."""
    harness_rules._CLEAN = parsed.StatementMemo()
    harness_rules._FACTS = parsed.StatementMemo()


def test_a_child_is_parsed_where_it_changed_and_outlined_as_a_whole():
    parent = "import math\n\nLR = 0.1\n\n\n@decorated\ndef helper(x):\n    return x\n\n" + TRAIN
    child = parent.replace("LR = 0.1\n", "LR = 0.2  # raised\nWD = 0.1\n")
    found = parsed.parse(child, "train.py", parent=parent)
    whole = parsed.parse(child, "train.py")
    assert not found.full and whole.full
    assert found.outline == whole.outline
    assert [n is None for n in found.nodes] == [True, False, False, True, True]
    assert [type(n).__name__ for n in found.nodes if n] == ["Assign", "Assign"]
    assert found.nodes[2].lineno == 4  # line numbers are the child's own
    assert syntax_problems({"train.py": child}, {"train.py": parent}) == []
    assert run_preflight({"train.py": parent}, {"train.py": child},
                         mutable_files=["train.py"]) is None


def test_a_child_checked_again_is_not_parsed_again(monkeypatch):
    """The mutator's syntax check, its vetting and the shell's pre-flight ask about the same
    child: one parse of its change serves them all; a caller that asks for every node (no
    parent) still gets every node."""
    parent = "import math\n\nLR = 0.1\n\n" + TRAIN
    child = parent.replace("LR = 0.1\n", "LR = 0.3\n")
    parsed.parse(parent, "train.py")
    calls = []
    real = ast.parse
    monkeypatch.setattr(ast, "parse", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    assert syntax_problems({"train.py": child}, {"train.py": parent}) == []
    assert calls == ["\nLR = 0.3\n\n"]  # the change alone (with the blank lines around)
    first = parsed.parse(child, "train.py", parent=parent)
    assert run_preflight({"train.py": parent}, {"train.py": child},
                         mutable_files=["train.py"]) is None
    assert parsed.parse(child, "train.py", parent=parent) is first
    assert calls == ["\nLR = 0.3\n\n"]
    whole = parsed.parse(child, "train.py")
    assert whole.full and None not in whole.nodes and len(calls) == 2
    assert [ast.dump(n) for n in whole.nodes] == [ast.dump(n) for n in real(child).body]


def test_a_change_that_breaks_the_syntax_reports_the_whole_files_line():
    parent = "X = 0\nLR = 0.1\n\n" + TRAIN + "\nY = 1\n"
    child = parent.replace("LR = 0.1\n", "LR = (0.1\n")
    with pytest.raises(SyntaxError) as caught:
        parsed.parse(child, "train.py", parent=parent)
    assert caught.value.lineno == 2
    assert check_harness({"train.py": child}, parents={"train.py": parent}).startswith(
        "train.py:2: syntax error")


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
    problem = check_harness({"train.py": "import numpy as np\n" + reseed + TRAIN},
                            parents={"train.py": "import os as np\n" + reseed + TRAIN})
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
    "async def train(ctx):\n    return None\n", "def train():\n    return None\n",
]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.sampled_from(POOL), min_size=1, max_size=8), min_size=1,
                max_size=6))
def test_remembered_statements_never_change_a_verdict(sources):
    """A run of children (each a list of statements, each checked against the one before as
    its parent) with the memos as they fill up, against whole checks with the memos emptied."""
    forget()
    remembered, parent = [], None
    for statements in sources:
        source = "".join(statements)
        remembered.append(check_harness({"train.py": source},
                                        parents={"train.py": parent} if parent else None))
        parent = source
    fresh = []
    for statements in sources:
        forget()
        fresh.append(check_harness({"train.py": "".join(statements)}))
    assert remembered == fresh


SEED = (REPO / "train_template" / "train.py").read_text()
SNIPPETS = [
    "x = (", ")", '"""', "'''", "else:", "    y = 1", "        return y", "a = 1; b = 2",
    "@decorated", "def f():", "class K:", "return 1", "z = 1 + \\", "# comment", "",
    "import prepare", "if True:", "    pass", "from __future__ import annotations",
    "s = '''a", "b'''", "lambda: (", "], 1", "\t", "\x0c", "\u2028", "x = '\u2028'", "\r",
    "async def train(ctx):", "def train():", "try:", "except Exception:", "finally:",
]


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_parsing_the_change_agrees_with_parsing_everything(data):
    """Random line edits of the real seed: the child parses against its parent exactly when
    it parses whole, with the same outline (every statement's exact source) and nodes."""
    lines = SEED.split("\n")
    start = data.draw(st.integers(0, len(lines) - 1))
    stop = data.draw(st.integers(start, min(len(lines), start + 6)))
    new = data.draw(st.lists(st.sampled_from(SNIPPETS + lines[start:stop + 3]), max_size=5))
    child = "\n".join(lines[:start] + new + lines[stop:])
    parsed._parsed.clear()  # a parse kept from an earlier example would prove nothing
    try:
        whole = ast.parse(child)
    except (SyntaxError, ValueError) as error:
        with pytest.raises(type(error)):
            parsed.parse(child, "train.py", parent=SEED)
        return
    found = parsed.parse(child, "train.py", parent=SEED)
    if "\r" not in child:
        assert found.outline == parsed.outline_of(whole, child)
    for node, reference in zip(found.nodes, whole.body, strict=True):
        if node is not None:
            assert ast.dump(node, include_attributes=True) == \
                ast.dump(reference, include_attributes=True)


def test_a_statement_that_starts_on_an_unchanged_line_is_parsed_whole():
    parent = "a = 1; b = 1 + \\\n    2\n" + TRAIN
    child = parent.replace("    2\n", "import os\n")  # `b = 1 + \` now runs into an import
    with pytest.raises(SyntaxError):
        ast.parse(child)
    with pytest.raises(SyntaxError):
        parsed.parse(child, "train.py", parent=parent)
    tail = TRAIN + "c = 2; d = (\n    3)\n"
    with pytest.raises(SyntaxError):
        parsed.parse(tail.replace("c = 2", "c = ("), "train.py", parent=tail)
