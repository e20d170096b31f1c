"""Applying an edit reads the file's lines at C speed where lines are plain '\n'-ended ones:
the same lines, endings and matches as the general (line-break-aware) path."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from evolve.mutate.edit_format import _EXACT, _find, _splice, _split_lines

SEED = (Path(__file__).resolve().parent.parent / "train_template" / "train_cpu.py").read_text()
LINES = SEED.split("\n")


def reference_split(text: str) -> tuple[list[str], list[str]]:
    parts = text.splitlines(keepends=True)
    bodies = [p.rstrip("\r\n") for p in parts]
    return bodies, [p[len(b):] for p, b in zip(parts, bodies, strict=True)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["", "x = 1", "  y", "\r", "\t", "\x0c", "# é", "\u2028"]),
                max_size=8), st.booleans())
def test_lines_and_endings_as_the_general_path_reads_them(parts: list[str], end: bool) -> None:
    text = "\n".join(parts) + ("\n" if end else "")
    assert _split_lines(text) == reference_split(text)


@settings(max_examples=300, deadline=None)
@given(start=st.integers(0, len(LINES) - 1), length=st.integers(0, 4),
       extra=st.sampled_from([[], ["    return y"], [""], ["import math"]]))
def test_exact_matches_are_the_ones_the_general_search_finds(start: int, length: int,
                                                             extra: list[str]) -> None:
    search = LINES[start:start + length] + extra
    fast = _find(LINES, search, _EXACT, False)
    slow = _find(LINES, search, lambda s: s, False)  # the general path, normalising nothing
    assert fast == slow
    if search and not extra:  # the file's own lines: found where they were taken from
        assert (start, start + len(search)) in fast


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "", "  b", "c\r", "d\x0c"]), max_size=8), st.booleans(),
       st.data())
def test_a_spliced_file_keeps_every_line_ending(parts: list[str], end: bool,
                                                data: st.DataObject) -> None:
    text = "\n".join(parts) + ("\n" if end else "")
    lines, ends = _split_lines(text)
    start = data.draw(st.integers(0, len(lines)))
    stop = data.draw(st.integers(start, len(lines)))
    new = data.draw(st.lists(st.sampled_from(["x = 1", ""]), max_size=3))
    spliced = _splice(lines, ends, start, stop, new)
    newline = next((e for e in ends if e), "\n")  # the reference: every line and its ending
    new_ends = [newline] * len(new)
    if new and stop == len(lines) and ends and ends[-1] == "":
        new_ends[-1] = ""
    if not new and start > 0 and stop == len(lines) and ends[-1] == "":
        ends = ends[:start - 1] + [""] + ends[start:]
    expected = "".join(b + e for b, e in zip(lines[:start] + new + lines[stop:],
                                             ends[:start] + new_ends + ends[stop:], strict=True))
    assert spliced == expected
