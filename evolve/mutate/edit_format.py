"""The answer format of the LLM: a description, a rationale, and SEARCH/REPLACE edits.

Parsing never raises; applying raises `EditError` whose text is written for the model
(it goes back to it as feedback), naming each failing block and showing the nearest lines.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from evolve.guard.parsed import ast_parse, parse

_SEARCH = re.compile(r"^\s*<{5,9}\s*SEARCH\b.*$", re.IGNORECASE)
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_REPLACE = re.compile(r"^\s*>{5,9}\s*REPLACE\b.*$", re.IGNORECASE)
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})(.*)$")
_FILE_MARK = re.compile(r"^\s*[#*>\s]*(?:file|filename|path)\s*[:=]\s*(.+?)\s*$", re.IGNORECASE)
_FIELD = re.compile(r"^\s*[#*_>\s-]*(description|rationale)\s*[*_]*\s*[:=-]\s*[*_]*\s*(.*)$",
                    re.IGNORECASE)
_NAME_CHARS = re.compile(r"^[\w./\\-]+\.\w+$")
MAX_DESCRIPTION = 200


@dataclass(frozen=True)
class Block:
    """One SEARCH/REPLACE block, numbered from 1 in the order of the answer."""

    number: int
    file: str | None  # as written in the answer; None when not named
    search: str
    replace: str


@dataclass(frozen=True)
class ParsedAnswer:
    description: str
    rationale: str
    blocks: tuple[Block, ...] = ()
    rewrites: Mapping[str, str] = field(default_factory=dict)  # file -> complete new source
    problems: tuple[str, ...] = ()  # malformed parts, written for the model


class EditError(ValueError):
    """The edit could not be applied; `str(error)` is feedback for the model."""


# ---------------------------------------------------------------- parsing

def _clean_name(raw: str) -> str:
    name = raw.strip().strip("`*'\":").strip()
    for prefix in ("a/", "b/", "./"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def _filename_in(line: str) -> str | None:
    """The file a line names (`train.py`, `FILE: train.py`, `### train.py`), else None."""
    mark = _FILE_MARK.match(line)
    text = mark.group(1) if mark else line.strip().lstrip("#").strip()
    text = _clean_name(text)
    return text if _NAME_CHARS.match(text) and len(text) < 200 else None


def _name_before(lines: Sequence[str], index: int) -> str | None:
    """Look back from a block or fence for the line that names its file (skipping a fence)."""
    j = index - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    if j >= 0:
        fence = _FENCE.match(lines[j])
        if fence:
            info = fence.group(2).strip().split()
            for word in info:
                name = _filename_in(word)
                if name:
                    return name
            j -= 1
            while j >= 0 and not lines[j].strip():
                j -= 1
    return _filename_in(lines[j]) if j >= 0 else None


def _parse_fields(prose: str) -> tuple[str, str]:
    """DESCRIPTION and RATIONALE fields, with fallbacks for answers that ignore the format."""
    description = ""
    rationale_lines: list[str] = []
    current = None
    for line in prose.splitlines():
        match = _FIELD.match(line)
        if match:
            current = match.group(1).lower()
            value = match.group(2).strip().strip("*_").strip()
            if current == "description":
                if not description:
                    description = value
            elif value:
                rationale_lines.append(value)
            continue
        if current == "rationale":
            rationale_lines.append(line)
        elif current == "description" and not description and line.strip():
            description = line.strip()
    rationale = "\n".join(rationale_lines).strip()
    text_lines = [ln.strip() for ln in prose.splitlines() if ln.strip() and not _FENCE.match(ln)]
    if not description and text_lines:
        description = text_lines[0].lstrip("#*-> ").strip()
    if not rationale:
        rationale = "\n".join(text_lines[1:] if text_lines else []).strip()
    description = " ".join(description.split())[:MAX_DESCRIPTION]
    return description, rationale[:4000]


def _looks_like_full_file(source: str) -> bool:
    try:
        tree = ast_parse(source)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(node, ast.FunctionDef) and node.name == "train" for node in tree.body)


def parse_answer(text: str, mutable_files: Sequence[str] = ("train.py",)) -> ParsedAnswer:
    """Split an answer into fields, SEARCH/REPLACE blocks and whole-file rewrites. Never raises."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    blocks: list[Block] = []
    rewrites: dict[str, str] = {}
    problems: list[str] = []
    prose: list[str] = []
    unnamed_fences: list[str] = []
    i = 0
    first_edit_line = None
    while i < len(lines):
        line = lines[i]
        if _SEARCH.match(line):
            number = len(blocks) + 1
            name = _name_before(lines, i)
            first_edit_line = i if first_edit_line is None else first_edit_line
            search: list[str] = []
            replace: list[str] = []
            j = i + 1
            while j < len(lines) and not _DIVIDER.match(lines[j]) and not _SEARCH.match(lines[j]):
                search.append(lines[j])
                j += 1
            if j >= len(lines) or not _DIVIDER.match(lines[j]):
                problems.append(f"block {number}: SEARCH has no '=======' divider "
                                "(the answer may have been cut off)")
                i = j
                continue
            j += 1
            while j < len(lines) and not _REPLACE.match(lines[j]) and not _SEARCH.match(lines[j]):
                replace.append(lines[j])
                j += 1
            if j >= len(lines) or not _REPLACE.match(lines[j]):
                problems.append(f"block {number}: no '>>>>>>> REPLACE' line closes it "
                                "(the answer may have been cut off)")
                i = j
                continue
            blocks.append(Block(number, name, "\n".join(search), "\n".join(replace)))
            i = j + 1
            continue
        fence = _FENCE.match(line)
        if fence:
            closing = fence.group(1)
            j = i + 1
            body: list[str] = []
            has_markers = False
            while j < len(lines) and not lines[j].strip().startswith(closing):
                if _SEARCH.match(lines[j]):
                    has_markers = True
                    break
                body.append(lines[j])
                j += 1
            if has_markers:  # blocks inside a fence: the fence is only decoration
                i += 1
                continue
            closed = j < len(lines)
            name = _name_before(lines, i)
            source = "\n".join(body) + "\n"
            if name and closed and (_FILE_MARK.match(_prev_text(lines, i)) or
                                    _looks_like_full_file(source)):
                first_edit_line = i if first_edit_line is None else first_edit_line
                rewrites[_clean_name(name)] = source
            elif closed and _looks_like_full_file(source):
                unnamed_fences.append(source)
            elif not closed and name:
                problems.append(f"the complete {name} was cut off before its closing fence")
            i = j + 1 if closed else j
            continue
        if first_edit_line is None:
            prose.append(line)
        i += 1
    while prose and (not prose[-1].strip() or _FENCE.match(prose[-1])
                     or _filename_in(prose[-1])):
        prose.pop()  # the file name (and fence) that open the first edit are not prose
    if not blocks and not rewrites and len(unnamed_fences) == 1 and len(mutable_files) == 1:
        rewrites[mutable_files[0]] = unnamed_fences[0]
    description, rationale = _parse_fields("\n".join(prose)) if prose else ("", "")
    return ParsedAnswer(description, rationale, tuple(blocks), rewrites, tuple(problems))


def _prev_text(lines: Sequence[str], index: int) -> str:
    j = index - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    return lines[j] if j >= 0 else ""


# ---------------------------------------------------------------- resolving file names

def resolve_file(name: str | None, mutable_files: Sequence[str], block: int | None = None) -> str:
    """Map a file name as written by the model to a mutable file, or raise EditError."""
    where = f"block {block}" if block else "rewrite"
    if name is None:
        if len(mutable_files) == 1:
            return mutable_files[0]
        raise EditError(f"{where}: name the file on the line before the block "
                        f"(one of {', '.join(mutable_files)})")
    clean = _clean_name(name)
    if clean in mutable_files:
        return clean
    tails = [f for f in mutable_files if clean.endswith("/" + f)]
    if len(tails) == 1:
        return tails[0]
    raise EditError(f"{where} edits {clean}, which may not change: only "
                    f"{', '.join(mutable_files)} may be edited (the harness is fixed). "
                    "Drop that edit.")


# ---------------------------------------------------------------- applying

_OTHER_BREAKS = ("\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def _split_lines(text: str) -> tuple[list[str], list[str]]:
    """Lines without their endings, and each line's ending ('' for a last line without one)."""
    if not any(mark in text for mark in _OTHER_BREAKS):  # '\n' only: at C speed
        bodies = text.split("\n")
        if text.endswith("\n") or not text:
            bodies.pop()
        ends = ["\n"] * len(bodies)
        if bodies and not text.endswith("\n"):
            ends[-1] = ""
        return bodies, ends
    parts = text.splitlines(keepends=True)
    bodies = [p.rstrip("\r\n") for p in parts]
    ends = [p[len(b):] for p, b in zip(parts, bodies, strict=True)]
    return bodies, ends


def _leading(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


_Normaliser = Callable[[str], str]


def _EXACT(s: str) -> str:  # noqa: N802 - a normaliser, named for its level
    return s


_LEVELS: tuple[tuple[str, _Normaliser, bool], ...] = (
    ("exact", _EXACT, False),
    ("trailing whitespace", str.rstrip, False),
    ("indentation", str.strip, False),
    ("blank lines", lambda s: " ".join(s.split()), True),
)


def _find(file_lines: list[str], search_lines: list[str], norm: _Normaliser,
          skip_blank: bool) -> list[tuple[int, int]]:
    """Spans [start, end) of file lines matching the search lines under a normaliser."""
    if norm is _EXACT:  # the first level: only where the first line is, at C speed
        return _find_exact(file_lines, search_lines)
    if skip_blank:
        index = [k for k, line in enumerate(file_lines) if line.strip()]
        needle = [norm(s) for s in search_lines if s.strip()]
    else:
        index = list(range(len(file_lines)))
        needle = [norm(s) for s in search_lines]
    hay = [norm(file_lines[k]) for k in index]
    n = len(needle)
    if n == 0:
        return []
    spans = []
    for start in range(len(hay) - n + 1):
        if hay[start:start + n] == needle:
            spans.append((index[start], index[start + n - 1] + 1))
    return spans


def _find_exact(file_lines: list[str], search_lines: list[str]) -> list[tuple[int, int]]:
    """`_find` with no normalising: the spans where the search lines are, word for word."""
    n = len(search_lines)
    if n == 0:
        return []
    spans, start, last = [], -1, len(file_lines) - n
    while True:
        try:
            start = file_lines.index(search_lines[0], start + 1, last + 1)
        except ValueError:
            return spans
        if file_lines[start:start + n] == search_lines:
            spans.append((start, start + n))


def _reindent(replace_lines: list[str], search_lines: list[str], matched: list[str]) -> list[str]:
    """Carry the file's indentation over to the replacement when SEARCH was indented otherwise.

    Indent widths seen in SEARCH map to the widths at the matched file lines; other widths
    (new nesting in REPLACE) follow the same scale, so a 2-space answer fits a 4-space file.
    """
    s_lines = [s for s in search_lines if s.strip()]
    m_lines = [m for m in matched if m.strip()]
    pairs = {}
    for s, m in zip(s_lines, m_lines, strict=False):
        pairs.setdefault(len(_leading(s)), _leading(m))
    if all(_leading(s) == _leading(m) for s, m in zip(s_lines, m_lines, strict=False)):
        return replace_lines
    unit = next((v[0] for v in pairs.values() if v), " ")
    keys = sorted(pairs)
    if len(keys) >= 2:
        (s1, s2), (f1, f2) = (keys[0], keys[-1]), (len(pairs[keys[0]]), len(pairs[keys[-1]]))
        scale = (f2 - f1) / (s2 - s1)
    else:
        s1, f1, scale = keys[0] if keys else 0, len(pairs[keys[0]]) if keys else 0, 1.0
    out = []
    for line in replace_lines:
        if not line.strip():
            out.append(line)
            continue
        width = len(_leading(line))
        if width in pairs:
            indent = pairs[width]
        else:
            indent = unit * max(0, round(f1 + (width - s1) * scale))
        out.append(indent + line.lstrip())
    return out


def _nearest(file_lines: list[str], search_lines: list[str], context: int = 2) -> str:
    """The file's window most like the SEARCH text, with line numbers, for the error message."""
    needle = "\n".join(s.strip() for s in search_lines)
    n = max(1, len(search_lines))
    best, best_start = -1.0, 0
    for start in range(max(1, len(file_lines) - n + 1)):
        window = "\n".join(x.strip() for x in file_lines[start:start + n])
        matcher = difflib.SequenceMatcher(None, needle, window, autojunk=False)
        if matcher.real_quick_ratio() <= best or matcher.quick_ratio() <= best:
            continue
        ratio = matcher.ratio()
        if ratio > best:
            best, best_start = ratio, start
    lo = max(0, best_start - context)
    hi = min(len(file_lines), best_start + n + context)
    shown = "\n".join(f"{k + 1:5d}| {file_lines[k]}" for k in range(lo, hi))
    return f"the nearest lines in the file ({best:.0%} similar) are:\n{shown}"


def _apply_block(source: str, block: Block, file: str) -> tuple[str, str]:
    """Apply one block to one file's source; returns (new source, how it matched)."""
    lines, ends = _split_lines(source)
    search = block.search.split("\n")
    replace = block.replace.split("\n") if block.replace != "" else []
    if not block.search.strip():
        raise EditError(f"block {block.number} ({file}): SEARCH is empty. Quote the exact lines "
                        "to replace, or give the complete file instead.")
    for level, norm, skip_blank in _LEVELS:
        spans = _find(lines, search, norm, skip_blank)
        if len(spans) > 1:
            where = ", ".join(str(s + 1) for s, _ in spans[:6])
            raise EditError(f"block {block.number} ({file}): SEARCH text is ambiguous: it matches "
                            f"{len(spans)} places (lines {where}). Add surrounding lines so it "
                            "matches exactly one place.")
        if spans:
            start, end = spans[0]
            new = replace if level == "exact" else _reindent(replace, search, lines[start:end])
            return _splice(lines, ends, start, end, new), level
    # Not found at any level: a single-line fragment may still sit inside a longer line.
    if len(search) == 1 and "\n" not in block.replace:
        count = source.count(block.search)
        if count == 1:
            return source.replace(block.search, block.replace), "inside a line"
        if count > 1:
            raise EditError(f"block {block.number} ({file}): SEARCH text is ambiguous: it occurs "
                            f"{count} times. Quote whole lines with more context.")
    if replace and len(_find(lines, replace, str.rstrip, False)) == 1:
        return source, "already applied"
    raise EditError(f"block {block.number} ({file}): SEARCH text not found. SEARCH must copy "
                    f"existing lines exactly; {_nearest(lines, search)}")


def _splice(lines: list[str], ends: list[str], start: int, end: int, new: list[str]) -> str:
    """Replace lines[start:end] with new lines, keeping every line ending intact."""
    newline = next((e for e in ends if e), "\n")
    new_ends = [newline] * len(new)
    if new and end == len(lines) and ends and ends[-1] == "":
        new_ends[-1] = ""  # the file had no final newline: keep it that way
    if not new and start > 0 and end == len(lines) and ends[-1] == "":
        ends = ends[:start - 1] + [""] + ends[start:]  # deleted the last line: drop its separator
    bodies = lines[:start] + new + lines[end:]
    all_ends = ends[:start] + new_ends + ends[end:]
    newlines = all_ends.count("\n")
    if newlines == len(all_ends) or (newlines == len(all_ends) - 1 and all_ends[-1] == ""):
        return "\n".join(bodies) + ("\n" if all_ends and all_ends[-1] else "")  # C speed
    return "".join(b + e for b, e in zip(bodies, all_ends, strict=True))


@dataclass(frozen=True)
class Applied:
    files: dict[str, str]  # every mutable file, edited or not
    applied: tuple[str, ...]  # human-readable record of what was applied, in order
    failed: tuple[str, ...]  # one message per failed block (empty on success)


def apply_answer(answer: ParsedAnswer, files: Mapping[str, str],
                 mutable_files: Sequence[str]) -> Applied:
    """Apply rewrites then blocks in order; failed blocks are collected, the rest still apply."""
    current = {name: files.get(name, "") for name in mutable_files}
    applied: list[str] = []
    failed: list[str] = list(answer.problems)
    for name, source in answer.rewrites.items():
        try:
            target = resolve_file(name, mutable_files)
        except EditError as error:
            failed.append(str(error))
            continue
        current[target] = source
        applied.append(f"complete rewrite of {target}")
    for block in answer.blocks:
        try:
            target = resolve_file(block.file, mutable_files, block.number)
            current[target], how = _apply_block(current[target], block, target)
        except EditError as error:
            failed.append(str(error))
            continue
        applied.append(render_block(block, target, how))
    return Applied(current, tuple(applied), tuple(failed))


def render_block(block: Block, file: str, how: str = "exact") -> str:
    note = "" if how == "exact" else f"  (matched: {how})"
    return (f"{file}{note}\n<<<<<<< SEARCH\n{block.search}\n=======\n{block.replace}\n"
            ">>>>>>> REPLACE")


def syntax_problems(files: Mapping[str, str],
                    parents: Mapping[str, str] | None = None) -> list[str]:
    """Python files that no longer parse, with the line, for the model to fix. With the
    files they were edited from, only the changed statements are parsed."""
    problems = []
    for name, source in files.items():
        if not name.endswith(".py"):
            continue
        try:
            parse(source, name, parent=(parents or {}).get(name))
        except SyntaxError as error:
            line = (error.text or "").rstrip()
            problems.append(f"{name} no longer parses: {error.msg} at line {error.lineno}: {line}")
        except ValueError as error:
            problems.append(f"{name} no longer parses: {error}")
    return problems


def feedback(result: Applied) -> str:
    """The message that goes back to the model after a partly failed apply."""
    parts = []
    if result.applied:
        parts.append(f"{len(result.applied)} edit(s) applied; do not send those again.")
    parts.append("These parts failed:\n" + "\n\n".join(f"- {f}" for f in result.failed))
    return "\n".join(parts)


def describe_change(old: Mapping[str, str], new: Mapping[str, str]) -> str:
    """A one-line description of an edit for answers that gave none: its first changed line."""
    for name in new:
        before, after = old.get(name, "").splitlines(), new[name].splitlines()
        if before == after:
            continue
        matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                continue
            removed = next((ln.strip() for ln in before[i1:i2] if ln.strip()), "")
            added = next((ln.strip() for ln in after[j1:j2] if ln.strip()), "")
            if removed and added:
                text = f"{name}: {removed} -> {added}"
            else:
                text = f"{name}: {'remove ' + removed if removed else 'add ' + added}"
            return " ".join(text.split())[:MAX_DESCRIPTION]
    return ""
