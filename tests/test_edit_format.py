"""SEARCH/REPLACE parsing and applying: tolerant matching, precise errors, newlines intact."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evolve.mutate.edit_format import (
    EditError,
    ParsedAnswer,
    apply_answer,
    describe_change,
    feedback,
    parse_answer,
    resolve_file,
)

MUTABLE = ["train.py"]


def apply_edit(text: str, files: Mapping[str, str], mutable_files: Sequence[str]) -> tuple[
        ParsedAnswer, dict[str, str], str]:
    """Parse and apply a whole answer; raise EditError (feedback text) if any part fails (the
    parse + apply + feedback steps the mutators take, in one call for these tests)."""
    answer = parse_answer(text, mutable_files)
    result = apply_answer(answer, files, mutable_files)
    if result.failed:
        raise EditError(feedback(result))
    if not result.applied:
        raise EditError("the answer has no edit: give SEARCH/REPLACE blocks (or a complete file) "
                        "in the format described.")
    return answer, result.files, "\n\n".join(result.applied)


def block(search: str, replace: str, name: str = "train.py") -> str:
    return f"{name}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


def apply(source: str, answer: str) -> str:
    _, files, _ = apply_edit(answer, {"train.py": source}, MUTABLE)
    return files["train.py"]


def test_fields_and_blocks_parse():
    answer = ("**Description:** raise the matrix LR\nRATIONALE: the loss still falls fast\n"
              "at the end.\n\n" + block("A = 1", "A = 2") + block("B = 1", "B = 2"))
    parsed = parse_answer(answer)
    assert parsed.description == "raise the matrix LR"
    assert parsed.rationale == "the loss still falls fast\nat the end."
    assert [(b.number, b.file, b.search, b.replace) for b in parsed.blocks] == [
        (1, "train.py", "A = 1", "A = 2"), (2, "train.py", "B = 1", "B = 2")]


def test_blocks_inside_fences_and_unnamed_default_to_the_only_mutable_file():
    answer = ("DESCRIPTION: x\n```python\n<<<<<<< SEARCH\nA = 1\n=======\nA = 3\n"
              ">>>>>>> REPLACE\n```\n")
    assert apply("A = 1\nB = 2\n", answer) == "A = 3\nB = 2\n"


@pytest.mark.parametrize("source, search, replace, expected", [
    # first line, last line without a final newline, next to blank lines
    ("Y1 = 1\nY2 = 2\nY3 = 3\n", "Y1 = 1", "Y1 = 10", "Y1 = 10\nY2 = 2\nY3 = 3\n"),
    ("Y1 = 1\nY2 = 2\nY3 = 3", "Y3 = 3", "Y3 = 30", "Y1 = 1\nY2 = 2\nY3 = 30"),
    ("Y1 = 1\nY2 = 2\nY3 = 3\n", "Y3 = 3", "Y3 = 30", "Y1 = 1\nY2 = 2\nY3 = 30\n"),
    ("Y1 = 1\n\nY2 = 2\n\nY3 = 3\n", "Y2 = 2", "Y2 = 20", "Y1 = 1\n\nY2 = 20\n\nY3 = 3\n"),
    ("Y1 = 1\nY2 = 2   \nY3 = 3\n", "Y2 = 2", "Y2 = 20", "Y1 = 1\nY2 = 20\nY3 = 3\n"),
    ("Y1 = 1\nY2 = 2\nY3 = 3\n", "Y2 = 2   ", "Y2 = 20", "Y1 = 1\nY2 = 20\nY3 = 3\n"),
    # deleting a line keeps its neighbours apart
    ("Y1 = 1\nY2 = 2\nY3 = 3\n", "Y2 = 2", "", "Y1 = 1\nY3 = 3\n"),
    # replacing one line by several
    ("Y1 = 1\nY2 = 2\nY3 = 3", "Y3 = 3", "Y3 = 3\nY4 = 4", "Y1 = 1\nY2 = 2\nY3 = 3\nY4 = 4"),
    # Windows line endings stay Windows line endings
    ("Y1 = 1\r\nY2 = 2\r\nY3 = 3\r\n", "Y2 = 2", "Y2 = 20\nY5 = 5",
     "Y1 = 1\r\nY2 = 20\r\nY5 = 5\r\nY3 = 3\r\n"),
])
def test_newlines_are_preserved(source, search, replace, expected):
    result = apply(source, block(search, replace))
    assert result == expected
    assert "2Y3" not in result


def test_search_spanning_blank_lines_and_the_whole_file():
    source = "A = 1\n\nB = 2\n"
    assert apply(source, block("A = 1\n\nB = 2", "A = 1\nB = 3")) == "A = 1\nB = 3\n"
    # the model dropped the blank line in its SEARCH: still one unambiguous place
    assert apply(source, block("A = 1\nB = 2", "A = 5\nB = 6")) == "A = 5\nB = 6\n"


def test_indentation_tolerant_match_reindents_the_replacement():
    source = "def f(x):\n    if x:\n        return 1\n    return 0\n"
    answer = block("if x:\n  return 1", "if x:\n  y = x * 2\n  return y")
    assert apply(source, answer) == (
        "def f(x):\n    if x:\n        y = x * 2\n        return y\n    return 0\n")


def test_fragment_inside_a_line():
    source = "LR = 0.01  # tuned\n"
    assert apply(source, block("LR = 0.01", "LR = 0.02")) == "LR = 0.02  # tuned\n"


def test_missing_search_names_the_block_and_shows_nearest_lines():
    source = "A = 1\nMATRIX_LR = 0.04\nB = 2\n"
    answer = block("A = 1", "A = 2") + block("MATRIX_LR = 0.05", "MATRIX_LR = 0.06")
    with pytest.raises(EditError) as caught:
        apply(source, answer)
    message = str(caught.value)
    assert "block 2" in message and "not found" in message
    assert "2| MATRIX_LR = 0.04" in message
    assert "1 edit(s) applied" in message


def test_ambiguous_search_lists_the_places():
    source = "x = 1\ny = 2\nx = 1\n"
    with pytest.raises(EditError, match=r"block 1 .*ambiguous.*lines 1, 3"):
        apply(source, block("x = 1", "x = 3"))


def test_edits_to_the_harness_are_rejected():
    answer = block("SEED = 0", "SEED = 1", name="prepare.py")
    with pytest.raises(EditError, match="prepare.py, which may not change"):
        apply("A = 1\n", answer)
    with pytest.raises(EditError, match="may not change"):
        resolve_file("train_template/prepare.py", MUTABLE)
    assert resolve_file("./train.py", MUTABLE) == "train.py"
    assert resolve_file("some/dir/train.py", MUTABLE) == "train.py"


def test_complete_file_is_a_full_rewrite():
    new = "import torch\n\n\ndef train(ctx):\n    return None\n"
    answer = f"DESCRIPTION: rewrite\nRATIONALE: simpler\n\nFILE: train.py\n```python\n{new}```\n"
    assert apply("old = 1\n", answer) == new
    # an unnamed complete file (defines train) also counts when there is one mutable file
    answer = f"DESCRIPTION: rewrite\n\n```python\n{new}```\n"
    assert apply("old = 1\n", answer) == new
    # a snippet in the prose is not a rewrite
    with pytest.raises(EditError, match="no edit"):
        apply("old = 1\n", "DESCRIPTION: idea\n\n```python\nLR = 2\n```\n")


def test_truncated_block_is_reported():
    answer = "DESCRIPTION: x\n\ntrain.py\n<<<<<<< SEARCH\nA = 1\n=======\nA = 2\n"
    parsed = parse_answer(answer)
    assert not parsed.blocks and "cut off" in parsed.problems[0]


def test_failed_blocks_do_not_stop_the_others_and_already_applied_blocks_are_noops():
    source = "A = 1\nB = 2\n"
    first = apply_answer(parse_answer(block("A = 1", "A = 5") + block("Q = 0", "Q = 1")),
                         {"train.py": source}, MUTABLE)
    assert first.files["train.py"] == "A = 5\nB = 2\n" and len(first.failed) == 1
    # the model resends everything: the applied block is recognised, the fixed one applies
    again = apply_answer(parse_answer(block("A = 1", "A = 5") + block("B = 2", "B = 7")),
                         first.files, MUTABLE)
    assert again.failed == () and again.files["train.py"] == "A = 5\nB = 7\n"


def test_multiple_mutable_files_need_names():
    answer = "<<<<<<< SEARCH\nA = 1\n=======\nA = 2\n>>>>>>> REPLACE\n"
    files = {"train.py": "A = 1\n", "model.py": "A = 1\n"}
    result = apply_answer(parse_answer(answer, ["train.py", "model.py"]), files,
                          ["train.py", "model.py"])
    assert "name the file" in result.failed[0]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<=>SEARCHREPLACE`\n #:=.pytrain_AB12 \t")),
               max_size=400))
def test_garbage_never_raises_anything_but_edit_error(text):
    parsed = parse_answer(text)
    assert isinstance(parsed.description, str)
    try:
        apply_edit(text, {"train.py": "A = 1\nB = 2\n"}, MUTABLE)
    except EditError:
        pass


def test_answer_without_prose_gets_a_description_from_its_change():
    parsed = parse_answer(block("A = 1", "A = 2"))
    assert parsed.description == "" and parsed.rationale == ""
    assert describe_change({"train.py": "A = 1\nB = 2\n"}, {"train.py": "A = 2\nB = 2\n"}) == \
        "train.py: A = 1 -> A = 2"
    assert describe_change({"train.py": "A = 1\n"}, {"train.py": "A = 1\nC = 3\n"}) == \
        "train.py: add C = 3"


_LINE = st.text(alphabet=st.sampled_from(list("abcXYZ=01 ()#:")), max_size=12)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_LINE, min_size=1, max_size=12), data=st.data(),
       final_newline=st.booleans())
def test_exact_search_replace_is_an_exact_splice(lines, data, final_newline):
    """Replacing any unique run of whole lines splices exactly: no newline lost or added."""
    lines = [f"L{k} {line}" for k, line in enumerate(lines)]  # every line unique
    source = "\n".join(lines) + ("\n" if final_newline else "")
    start = data.draw(st.integers(0, len(lines) - 1))
    end = data.draw(st.integers(start + 1, len(lines)))
    new = data.draw(st.lists(_LINE.map(lambda s: "N " + s), max_size=4))
    answer = block("\n".join(lines[start:end]), "\n".join(new))
    result = apply_answer(parse_answer(answer), {"train.py": source}, MUTABLE)
    assert result.failed == ()
    expected = lines[:start] + new + lines[end:]
    # the file still ends as it did: with a newline or without one
    text = "\n".join(expected) + ("\n" if expected and final_newline else "")
    assert result.files["train.py"] == text
