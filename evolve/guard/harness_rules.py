"""The harness rules pre-flight applies to each top-level statement of a child.

The easy ways an edit could reach into the harness (imports of it, frames, global reseeding,
patching modules it uses, the data cache, a fake summary line), found statement by statement,
each statement's verdict remembered by its exact source (`evolve.guard.parsed`): a child
differs from its parent in a few statements, so the rest is not walked again.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Collection, Iterator, Mapping

from evolve.guard.parsed import Parsed, StatementMemo, parse

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


# Per statement, by its exact source: the imports it binds and what it says about train().
_FACTS = StatementMemo()
# (module context, statement) -> True: no violation in it under that context.
_CLEAN = StatementMemo()

TrainFact = tuple[str, int, bool, str | None] | None  # (def|async, line in it, has args, param)


def check_file(name: str, source: str, parsed: Parsed, harness: frozenset[str]) -> str | None:
    """The first harness problem of one parsed file (`name:line: what`), or None. A statement
    that is, word for word, one already found clean under the same imports, `train`
    parameter and harness names is not walked again."""
    facts = _facts(parsed)
    if facts is None:  # a statement kept from the parent was never looked at: parse it all
        parsed = parse(source, name)
        facts = _facts(parsed)
        assert facts is not None
    aliases: dict[str, str] = {}
    for bound, _ in facts:
        aliases.update(bound)
    trains = [(parsed.outline.spans[i][0], train) for i, (_, train) in enumerate(facts) if train]
    if name == "train.py":
        problem = _defines_train(trains)
        if problem:
            return f"{name}:{problem}"
    ctx_names = {"ctx"} | next(({t[3]} if t[3] else set() for _, t in trains if t[0] == "def"),
                               set())
    context = (frozenset(aliases.items()), frozenset(ctx_names), harness)
    clean = _CLEAN.get_many(context, parsed.outline.keys)
    for i, key in enumerate(parsed.outline.keys):
        if clean[i]:
            continue
        node = parsed.nodes[i]
        if node is None:  # a parent's statement, not yet seen under this context
            parsed = parse(source, name)
            node = parsed.nodes[i]
        for lineno, problem in _statement_violations(node, aliases, harness, ctx_names):
            return f"{name}:{lineno}: {problem}"
        _CLEAN.put(context, key, True)
    return None


def _facts(parsed: Parsed) -> list[tuple[tuple[tuple[str, str], ...], TrainFact]] | None:
    found = []
    known = _FACTS.get_many(None, parsed.outline.keys)
    for key, node, fact in zip(parsed.outline.keys, parsed.nodes, known, strict=True):
        if fact is None:
            if node is None:
                return None
            fact = (tuple(_import_aliases(node).items()), _train_fact(node, key))
            _FACTS.put(None, key, fact)
        found.append(fact)  # type: ignore[arg-type]
    return found


def _train_fact(node: ast.stmt, key: tuple[str, int, int | None]) -> TrainFact:
    decorators = getattr(node, "decorator_list", None) or []
    offset = node.lineno - min([node.lineno, *(d.lineno for d in decorators)])
    if isinstance(node, ast.FunctionDef) and node.name == "train":
        args = node.args.posonlyargs + node.args.args
        has_args = bool(node.args.posonlyargs or node.args.args or node.args.vararg)
        return ("def", offset, has_args, args[0].arg if args else None)
    if isinstance(node, ast.AsyncFunctionDef) and node.name == "train":
        return ("async", offset, False, None)
    return None


def _defines_train(trains: list[tuple[int, TrainFact]]) -> str | None:
    """The first top-level train: a plain function with a parameter (given (first line, fact)
    of each top-level train definition, in order)."""
    for first, fact in trains:
        assert fact is not None
        kind, offset, has_args, _ = fact
        if kind == "def":
            if not has_args:
                return f"{first + offset}: train() takes no argument; it must be train(ctx)"
            return None
        return f"{first + offset}: train is async; the harness calls a plain train(ctx)"
    return "1: defines no top-level function train(ctx), which the harness calls"


def _statement_violations(stmt: ast.stmt, aliases: Mapping[str, str], harness: Collection[str],
                          ctx_names: set[str]) -> Iterator[tuple[int, str]]:
    for node in ast.walk(stmt):
        yield from _node_violations(node, aliases, harness, ctx_names)


def _node_violations(node: ast.AST, aliases: Mapping[str, str], harness: Collection[str],
                     ctx_names: set[str]) -> Iterator[tuple[int, str]]:
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
        if module.split(".")[0] in harness or (node.level and names & set(harness)):
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
    node: ast.Call, aliases: Mapping[str, str], harness: Collection[str], ctx_names: set[str]
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


def _import_aliases(tree: ast.AST) -> dict[str, str]:
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
