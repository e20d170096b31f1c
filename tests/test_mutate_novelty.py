"""The novelty filter's edit summary: what an edit removes and adds, however the file is cut."""

from __future__ import annotations

import difflib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from evolve.mutate.novelty import _norm, changed_lines, similar, similarity

SEED = (Path(__file__).resolve().parent.parent / "train_template" / "train_cpu.py").read_text()
LINES = SEED.splitlines()


def whole_file_diff(old: str, new: str) -> str:
    """The summary computed over the whole files, as before the head and tail were trimmed."""
    a = [_norm(line) for line in old.splitlines()]
    b = [_norm(line) for line in new.splitlines()]
    return "\n".join(line for line in difflib.unified_diff(a, b, lineterm="", n=0)
                     if not line.startswith(("---", "+++", "@@")) and line[1:].strip())


@settings(max_examples=60, deadline=None)
@given(start=st.integers(0, len(LINES)), length=st.integers(0, 6),
       added=st.lists(st.sampled_from(["X = 1", "LR = 0.02", "", "# note", "DEPTH = 4"]),
                      max_size=5))
def test_changed_lines_match_the_whole_file_diff(start: int, length: int, added: list[str]) -> None:
    joined = "\n".join(LINES[:start] + added + LINES[start + length:])
    for child in (joined, joined + "\n"):  # the line-by-line walk, and the text comparison
        # the same lines removed and added (difflib may order a hunk's lines differently)
        trimmed = changed_lines({"train.py": SEED}, {"train.py": child}).splitlines()
        assert sorted(trimmed) == sorted(whole_file_diff(SEED, child).splitlines())


def test_an_unchanged_file_has_no_changed_lines() -> None:
    assert changed_lines({"train.py": SEED}, {"train.py": SEED}) == ""
    assert changed_lines({"train.py": SEED}, {"train.py": SEED + "\nX = 1"}) == "+X = 1"


@settings(max_examples=200, deadline=None)
@given(a=st.text(alphabet="ab +-=x1", max_size=40), b=st.text(alphabet="ab +-=x1", max_size=40),
       threshold=st.sampled_from([0.0, 0.5, 0.9, 0.95, 1.0]))
def test_the_bounded_comparison_decides_as_the_full_ratio(a: str, b: str,
                                                          threshold: float) -> None:
    """`similar` skips difflib's full matching when a cheap bound already says no; its answer
    must be the full ratio's, every time (also for b's characters reordered)."""
    assert similar(a, b, threshold) == (similarity(a, b) >= threshold)
    reordered = "".join(sorted(a))
    assert similar(a, reordered, threshold) == (similarity(a, reordered) >= threshold)


def test_near_edits_are_similar_and_far_ones_are_not() -> None:
    edit = "-LR = 0.02\n+LR = 0.03"
    assert similar(edit, "-LR = 0.02\n+LR = 0.035")
    assert not similar(edit, "-DEPTH = 4\n+DEPTH = 6\n+WIDTH = 512")
    assert not similar(edit, "")
    shuffled = "".join(sorted(edit))  # the same characters, in another order
    assert similarity(edit, shuffled) < 0.9 and not similar(edit, shuffled)
