"""The stored diff of a child: difflib's unified diff, with the matching run on the lines that
differ only. It must apply exactly, and where the file has no repeated blocks it is difflib's
whole-file diff line for line."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from evolve.mutate.base import _lines, unified_diff

REPO = Path(__file__).resolve().parent.parent
SEEDS = [(REPO / "train_template" / name).read_text() for name in ("train.py", "train_cpu.py")]
SNIPPETS = ["x = 1", "", "    return y", "# note", "def f():", "    pass", "LR = 0.1"]
HUNK = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def whole_file_diff(old: str, new: str) -> str:
    """difflib over the whole files, as unified_diff computed it before."""
    lines = difflib.unified_diff(_lines(old), _lines(new), fromfile="a/train.py",
                                 tofile="b/train.py")
    return "diff --git a/train.py b/train.py\n" + "".join(lines)


def apply(old: str, diff: str) -> str:
    """The new file from the old one and the diff's hunks (each checked against the old)."""
    source, out, at = _lines(old), [], 0
    lines = diff.splitlines(keepends=True)[3:]  # diff --git, ---, +++
    for k in range(len(lines) - 1, 0, -1):  # a last line without its newline
        if lines[k].startswith("\\ No newline"):
            lines[k - 1] = lines[k - 1][:-1]
            del lines[k]
    i = 0
    while i < len(lines):
        start, length = (int(x) if x is not None else 1 for x in HUNK.match(lines[i]).group(1, 2))
        first = start - 1 if length else start
        out += source[at:first]
        at = first
        i += 1
        while i < len(lines) and not lines[i].startswith("@@"):
            mark, text = lines[i][0], lines[i][1:]
            if mark in " -":
                assert source[at] == text, (at, source[at], text)
                at += 1
            if mark in " +":
                out.append(text)
            i += 1
    return "".join(out + source[at:])


def edit(data: st.DataObject, seed: str) -> str:
    lines = seed.split("\n")
    child = lines
    for _ in range(data.draw(st.integers(1, 3))):  # one to three places edited
        start = data.draw(st.integers(0, len(child) - 1))
        stop = data.draw(st.integers(start, min(len(child), start + 8)))
        new = data.draw(st.lists(st.sampled_from(SNIPPETS + child[start:stop + 4]), max_size=6))
        child = child[:start] + new + child[stop:]
    return "\n".join(child)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_diff_of_any_edit_applies_exactly(data):
    seed = data.draw(st.sampled_from(SEEDS))
    child = edit(data, seed)
    diff = unified_diff({"train.py": seed}, {"train.py": child})
    if child == seed:
        assert diff == ""
        return
    assert apply(seed, diff) == child


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_one_changed_line_is_the_whole_file_diff(data):
    """The common edit (a constant changed, a line rewritten): byte for byte what difflib
    gives for the whole files."""
    seed = data.draw(st.sampled_from(SEEDS))
    lines = seed.split("\n")
    at = data.draw(st.integers(0, len(lines) - 2))
    lines[at] = data.draw(st.sampled_from(["x = 1", "LR = 0.1", lines[at] + "  # note",
                                           lines[at].replace("0", "1")]))
    child = "\n".join(lines)
    if child != seed:
        assert unified_diff({"train.py": seed}, {"train.py": child}) == \
            whole_file_diff(seed, child)


def test_edits_at_either_end_and_of_the_whole_file():
    seed = SEEDS[1]
    first = seed.index("\n") + 1
    for child in (seed.replace("import", "import  ", 1), seed + "x = 1\n", "x = 1\n" + seed,
                  seed[:first], seed[first:], seed[:-1] + "  \n", ""):
        diff = unified_diff({"train.py": seed}, {"train.py": child})
        assert diff == whole_file_diff(seed, child)
        assert apply(seed, diff) == child
