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

import ast
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from population.candidate import source_hash

HARNESS_MODULES: tuple[str, ...] = ("prepare",)
RESEEDING_CALLS = frozenset(
    {
        "torch.manual_seed",
        "torch.seed",
        "torch.random.manual_seed",
        "torch.random.seed",
        "torch.cuda.manual_seed",
        "torch.cuda.manual_seed_all",
        "torch.cuda.seed",
        "torch.cuda.seed_all",
        "random.seed",
        "numpy.random.seed",
    }
)
# Attributes that walk from a function to its caller's frames and globals (the harness).
FRAME_ATTRIBUTES = frozenset(
    {"f_back", "f_globals", "f_locals", "_getframe", "__globals__", "gi_frame", "tb_frame"}
)
INTROSPECTION_CALLS = frozenset(
    {
        "sys._getframe",
        "inspect.currentframe",
        "inspect.stack",
        "inspect.getouterframes",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
    }
)
DATA_CACHE_MARKERS = ("EVOLVE_CACHE_DIR", ".cache/evolve", "token_bytes.npy")
DATA_FILE = re.compile(r"(^|[/\\])(train|val|test)\.(bin|idx)$")
SUMMARY_LINE = re.compile(r"^\s*(val_bpb|test_bpb)\s*:", re.MULTILINE)
# What a training script may legitimately set on a module: torch's switches and compiler
# configs. Anything else (torch.nn.functional.cross_entropy, math.log...) the harness uses too.
PATCHABLE = re.compile(r"^(torch|triton)\.(.*\.)?(backends|config)\.|^torch\._(inductor|dynamo)\.")

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
    """All checks on a child, each file parsed once. A mutator may call it before it hands
    a child back (so a rejection can go back to the model as feedback); the shell calls it
    on every proposal. `has_hash` None skips the duplicate check (the store answers that)."""
    verdicts: list[Verdict] = []
    problem = check_only_mutable(child_files, mutable_files)
    if problem:
        verdicts.append(_verdict(Check.ONLY_MUTABLE, problem))
    trees: dict[str, ast.Module] = {}
    for name in sorted(child_files):
        try:
            trees[name] = ast.parse(child_files[name], filename=name)
        except (SyntaxError, ValueError):
            verdicts.append(_verdict(Check.PARSES, check_parses({name: child_files[name]}) or ""))
    modules = set(harness_modules) | set(HARNESS_MODULES)
    for name, tree in trees.items():
        problem = _harness_problem(name, tree, modules)
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


def check_parses(files: Mapping[str, str]) -> str | None:
    for name in sorted(files):
        try:
            ast.parse(files[name], filename=name)
        except SyntaxError as exc:
            return f"{name}:{exc.lineno}: syntax error: {exc.msg}"
        except ValueError as exc:  # e.g. null bytes
            return f"{name}: does not parse: {exc}"
    return None


def check_differs(parent_files: Mapping[str, str], child_files: Mapping[str, str]) -> str | None:
    """Comment- and blank-only edits are not a new experiment."""
    if source_hash(parent_files) == source_hash(child_files):
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
    files: Mapping[str, str], *, harness_modules: Collection[str] = HARNESS_MODULES
) -> str | None:
    """The static harness check on every mutable file; train.py must also define train(ctx)."""
    modules = set(harness_modules) | set(HARNESS_MODULES)
    for name in sorted(files):
        try:
            tree = ast.parse(files[name], filename=name)
        except (SyntaxError, ValueError):
            return check_parses({name: files[name]})
        problem = _harness_problem(name, tree, modules)
        if problem:
            return problem
    return None


def _harness_problem(name: str, tree: ast.Module, modules: set[str]) -> str | None:
    """The first harness problem of one parsed file, as `name:line: what`."""
    if name == "train.py":
        problem = _defines_train(tree)
        if problem:
            return f"{name}:{problem}"
    for lineno, problem in _harness_violations(tree, modules):
        return f"{name}:{lineno}: {problem}"
    return None


def _defines_train(tree: ast.Module) -> str | None:
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name == "train":
            if not (stmt.args.posonlyargs or stmt.args.args or stmt.args.vararg):
                return f"{stmt.lineno}: train() takes no argument; it must be train(ctx)"
            return None
        if isinstance(stmt, ast.AsyncFunctionDef) and stmt.name == "train":
            return f"{stmt.lineno}: train is async; the harness calls a plain train(ctx)"
    return "1: defines no top-level function train(ctx), which the harness calls"


def _harness_violations(tree: ast.Module, harness: set[str]) -> Iterator[tuple[int, str]]:
    aliases = _import_aliases(tree)
    ctx_names = {"ctx"} | _train_param(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in harness:
                    yield (
                        node.lineno,
                        f"imports the harness module {alias.name!r}; the harness is off limits",
                    )
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = {a.name for a in node.names}
            if module.split(".")[0] in harness or (node.level and names & harness):
                yield (
                    node.lineno,
                    f"imports from the harness module {module or names}; the harness is off limits",
                )
            if module == "sys" and "modules" in names:
                yield node.lineno, "imports sys.modules, which reaches into the harness"
        elif isinstance(node, ast.Attribute):
            dotted = _dotted(node, aliases)
            if dotted == "sys.modules" or dotted == "sys._getframe":
                yield node.lineno, f"uses {dotted}, which reaches into the harness"
            elif node.attr in FRAME_ATTRIBUTES:
                yield node.lineno, f"uses .{node.attr}, which walks into the caller (the harness)"
            elif (
                isinstance(node.value, ast.Name)
                and node.value.id in ctx_names
                and node.attr.startswith("_")
            ):
                yield (
                    node.lineno,
                    f"reads {node.value.id}.{node.attr}, a private part of the harness context",
                )
        elif isinstance(node, ast.Call):
            yield from _call_violations(node, aliases, harness, ctx_names)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for target in targets:
                problem = _assignment_violation(target, aliases, ctx_names)
                if problem:
                    yield node.lineno, problem
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield from _string_violations(node.lineno, node.value)


def _call_violations(
    node: ast.Call, aliases: Mapping[str, str], harness: set[str], ctx_names: set[str]
) -> Iterator[tuple[int, str]]:
    func = _dotted(node.func, aliases)
    if func in RESEEDING_CALLS:
        yield (
            node.lineno,
            (
                f"calls {func}(), which reseeds a global RNG the harness seeded; use a local "
                "torch.Generator seeded from ctx.seed"
            ),
        )
    if func in ("__import__", "importlib.import_module", "importlib.reload") and node.args:
        first = node.args[0]
        if isinstance(first, ast.Constant) and str(first.value).split(".")[0] in harness:
            yield node.lineno, f"imports the harness module {first.value!r} dynamically"
    if func in ("setattr", "delattr") and node.args:
        target = _dotted(node.args[0], aliases)
        root = target.split(".")[0] if target else ""
        if root in harness or root in ctx_names or (target and _patches_module(target, aliases)):
            yield node.lineno, f"calls {func}() on {target}, which changes the harness's objects"
    if func in INTROSPECTION_CALLS:
        yield node.lineno, f"calls {func}(), which can reach the harness's frames and objects"


def _assignment_violation(
    target: ast.expr, aliases: Mapping[str, str], ctx_names: set[str]
) -> str | None:
    if isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            problem = _assignment_violation(element, aliases, ctx_names)
            if problem:
                return problem
        return None
    if not isinstance(target, ast.Attribute):
        return None
    base = target.value
    while isinstance(base, (ast.Attribute, ast.Subscript)):
        base = base.value
    if not isinstance(base, ast.Name):
        return None
    written = ast.unparse(target)
    if base.id in ctx_names:
        return f"assigns {written}, changing the harness context (ctx is read-only)"
    if _patches_module(_dotted(target, aliases) or "", aliases, base.id):
        return f"assigns {written}, patching a module the harness also uses"
    return None


def _string_violations(lineno: int, text: str) -> Iterator[tuple[int, str]]:
    markers = [m for m in DATA_CACHE_MARKERS if m in text]
    if DATA_FILE.search(text):
        markers.append(text)
    for marker in markers:
        why = f"refers to the data cache ({marker!r}); train.py gets data only from ctx.batches()"
        yield lineno, why
    match = SUMMARY_LINE.search(text)
    if match:
        why = f"has a line shaped like the summary block ({match.group(1)}:); only the harness reports the score"
        yield lineno, why


def _import_aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> the full module or object path it was imported as."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    aliases[root] = root
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _dotted(node: ast.expr, aliases: Mapping[str, str]) -> str | None:
    """`np.random.seed` -> "numpy.random.seed" through the import aliases; None if not a path."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    head = aliases.get(node.id, node.id)
    return ".".join([head, *reversed(parts)])


def _patches_module(path: str, aliases: Mapping[str, str], name: str | None = None) -> bool:
    """Whether `path` (resolved through the imports) is an attribute of an imported module
    other than torch's own switches."""
    name = name or path.split(".")[0]
    imported = name in aliases or any(v.split(".")[0] == name for v in aliases.values())
    return imported and not PATCHABLE.match(path + ".")


def _train_param(tree: ast.Module) -> set[str]:
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name == "train":
            args = stmt.args.posonlyargs + stmt.args.args
            return {args[0].arg} if args else set()
    return set()
