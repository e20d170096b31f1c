"""Cheap checks on a child before a worker is booked for it.

Pure functions: each returns None when the child may run, or a one-line reason naming the
file, the line and what was found. `check_child` runs them all on one parse of the child and
returns typed verdicts (`PreflightReport`): the shell stores the first, and a mutator can
hand them back to the model before it gives up a conversation. They catch what would otherwise waste a GPU slot
(a syntax error, an unchanged or duplicate child) and the easy ways an edit could spoil
its own score by reaching into the harness (DESIGN.md "The template contract"). They do
not make adversarial code safe; the harness owning the score does most of that work.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from evolve.guard.harness_rules import check_file
from evolve.guard.parsed import Parsed, parse
from population.candidate import source_hash

HARNESS_MODULES: tuple[str, ...] = ("prepare",)

HashSeen = Callable[[str], bool] | Collection[str]


class Check(str, Enum):
    """Which pre-flight check a verdict comes from, cheapest first."""

    ONLY_MUTABLE = "only_mutable"  # the child holds exactly the mutable files
    PARSES = "parses"              # every file is valid Python
    HARNESS = "harness"            # defines train(ctx); does not reach into the harness
    DIFFERS = "differs"            # not the parent again (comments and blanks aside)
    DUPLICATE = "duplicate"        # not a candidate already stored or in flight

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Verdict:
    """One reason a child may not run: the check, where (file and line, when known), and
    the one-line message a user or a model reads (`file:line: what was found`)."""

    check: Check
    message: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class PreflightReport:
    """Every verdict on a child, in check order; empty means it may run."""

    verdicts: tuple[Verdict, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.verdicts

    @property
    def reason(self) -> str:
        """The first verdict's message ("" when the child may run): what is stored."""
        return self.verdicts[0].message if self.verdicts else ""


def check_child(
    parent_files: Mapping[str, str],
    child_files: Mapping[str, str],
    *,
    mutable_files: Sequence[str],
    has_hash: HashSeen | None = None,
    harness_modules: Collection[str] = HARNESS_MODULES,
) -> PreflightReport:
    """All checks on a child, each file parsed once (only the statements that differ from the
    parent's, `evolve.guard.parsed`). A mutator may call it before it hands
    a child back (so a rejection can go back to the model as feedback); the shell calls it
    on every proposal. `has_hash` None skips the duplicate check (the store answers that)."""
    verdicts: list[Verdict] = []
    problem = check_only_mutable(child_files, mutable_files)
    if problem:
        verdicts.append(_verdict(Check.ONLY_MUTABLE, problem))
    parsed: dict[str, Parsed] = {}
    for name in sorted(child_files):  # what changed from the parent is parsed, once
        try:
            parsed[name] = parse(child_files[name], name, parent=parent_files.get(name))
        except (SyntaxError, ValueError):
            verdicts.append(_verdict(Check.PARSES, check_parses({name: child_files[name]}) or ""))
    modules = frozenset(harness_modules) | frozenset(HARNESS_MODULES)
    for name, found in parsed.items():
        problem = check_file(name, child_files[name], found, modules)
        if problem:
            verdicts.append(_verdict(Check.HARNESS, problem))
    problem = check_differs(parent_files, child_files)
    if problem:
        verdicts.append(_verdict(Check.DIFFERS, problem))
    if has_hash is not None:
        problem = check_not_duplicate(child_files, has_hash)
        if problem:
            verdicts.append(_verdict(Check.DUPLICATE, problem))
    return PreflightReport(tuple(verdicts))


def _verdict(check: Check, message: str) -> Verdict:
    """A verdict with the file and line its message starts with (`name:line: ...`)."""
    head, _, rest = message.partition(": ")
    name, _, line = head.partition(":")
    return Verdict(check, message, file=name or None,
                   line=int(line) if line.isdigit() and rest else None)


def preflight(
    parent_files: Mapping[str, str],
    child_files: Mapping[str, str],
    *,
    mutable_files: Sequence[str],
    has_hash: HashSeen = (),
    harness_modules: Collection[str] = HARNESS_MODULES,
) -> str | None:
    """All checks in order, cheapest first; the first failure's reason, or None."""
    report = check_child(parent_files, child_files, mutable_files=mutable_files,
                         has_hash=has_hash, harness_modules=harness_modules)
    return report.reason or None


def harness_modules(template_dir: str | Path, mutable_files: Sequence[str]) -> frozenset[str]:
    """The importable names of the template's fixed files (everything not mutable)."""
    mutable = {Path(name).stem for name in mutable_files}
    stems = {p.stem for p in Path(template_dir).glob("*.py")} | {
        p.name for p in Path(template_dir).iterdir() if (p / "__init__.py").is_file()
    }
    return frozenset((stems - mutable) | set(HARNESS_MODULES))


def check_only_mutable(child_files: Mapping[str, str], mutable_files: Sequence[str]) -> str | None:
    """The child holds exactly the mutable files: nothing else changes between candidates."""
    extra = sorted(set(child_files) - set(mutable_files))
    if extra:
        return (
            f"{extra[0]}: touches a file that is not mutable "
            f"(mutable files: {', '.join(mutable_files)})"
        )
    missing = [name for name in mutable_files if name not in child_files]
    if missing:
        return f"{missing[0]}: missing from the child (every mutable file must be present)"
    return None


def check_parses(files: Mapping[str, str], *,
                 parents: Mapping[str, str] | None = None) -> str | None:
    """Every file parses. With the parent's files, only what changed is parsed again."""
    for name in sorted(files):
        try:
            parse(files[name], name, parent=(parents or {}).get(name))
        except SyntaxError as exc:
            return f"{name}:{exc.lineno}: syntax error: {exc.msg}"
        except ValueError as exc:  # e.g. null bytes
            return f"{name}: does not parse: {exc}"
    return None


def check_differs(parent_files: Mapping[str, str], child_files: Mapping[str, str]) -> str | None:
    """Comment- and blank-only edits are not a new experiment."""
    if source_hash(parent_files) == source_hash(child_files, like=parent_files):
        changed = (
            "is identical to the parent"
            if dict(parent_files) == dict(child_files)
            else "differs from the parent only in comments or blank lines"
        )
        return f"{', '.join(sorted(child_files))}: {changed}"
    return None


def check_not_duplicate(child_files: Mapping[str, str], has_hash: HashSeen) -> str | None:
    digest = source_hash(child_files)
    seen = has_hash(digest) if callable(has_hash) else digest in has_hash
    if seen:
        return (
            f"{', '.join(sorted(child_files))}: duplicate of a candidate already stored or "
            f"in flight (source hash {digest[:12]})"
        )
    return None


def check_harness(
    files: Mapping[str, str], *, harness_modules: Collection[str] = HARNESS_MODULES,
    parents: Mapping[str, str] | None = None,
) -> str | None:
    """The static harness check on every mutable file; train.py must also define train(ctx).
    A statement that is, word for word, one already found clean under the same imports,
    `train` parameter and harness names is not walked again (a child differs from its parent
    in a few)."""
    modules = frozenset(harness_modules) | frozenset(HARNESS_MODULES)
    for name in sorted(files):
        try:
            parsed = parse(files[name], name, parent=(parents or {}).get(name))
        except (SyntaxError, ValueError):
            return check_parses({name: files[name]})
        problem = check_file(name, files[name], parsed, modules)
        if problem:
            return problem
    return None
