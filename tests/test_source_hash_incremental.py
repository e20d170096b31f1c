"""A child's source hash normalises only the lines it changed from its parent: the same
normalised text, so the same hash, as normalising the whole child."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from population import candidate
from population.candidate import normalise_source, source_hash

SEED = (Path(__file__).resolve().parent.parent / "train_template" / "train_cpu.py").read_text()
LINES = SEED.split("\n")
COMMENT = re.compile(r"#[^\n]*")


def reference_normalise(source: str) -> str:
    """The whole-source normalisation, line by line."""
    kept = []
    for line in source.splitlines():
        stripped = COMMENT.sub("", line).rstrip() if "#" in line else line.rstrip()
        if stripped.strip():
            kept.append(stripped)
    return "\n".join(kept)


def reference_hash(files: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name, source in sorted(files.items()):
        digest.update(name.encode() + b"\0" + reference_normalise(source).encode() + b"\0")
    return digest.hexdigest()


@settings(max_examples=300, deadline=None)
@given(start=st.integers(0, len(LINES)), length=st.integers(0, 6),
       added=st.lists(st.sampled_from(["X = 1", "", "   ", "# note", "y = 2  # why",
                                       "\tz = 3", "s = '#'", "\x0c", "a\rb"]), max_size=5),
       newline=st.booleans())
def test_a_child_normalised_from_its_parent_is_normalised_as_a_whole(
        start: int, length: int, added: list[str], newline: bool) -> None:
    child = "\n".join(LINES[:start] + added + LINES[start + length:])
    child = child if newline or not child.endswith("\n") else child[:-1]
    candidate._forms.clear()
    candidate._hash_of.cache_clear()
    digest = source_hash({"train.py": child}, like={"train.py": SEED})
    assert normalise_source(child) == reference_normalise(child)
    assert digest == reference_hash({"train.py": child})


def test_comment_only_edits_hash_as_their_parent() -> None:
    child = SEED.replace("DEPTH = 3", "DEPTH = 3  # a note", 1) + "\n# the end\n"
    assert child != SEED
    assert source_hash({"train.py": child}, like={"train.py": SEED}) == \
        source_hash({"train.py": SEED})
