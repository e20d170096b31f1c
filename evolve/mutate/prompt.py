"""The prompt: what a good researcher would want to see before editing the parent.

Layout, for prompt caching: the system prompt (instructions + program.md) is the static
prefix; the user turn starts with the parent's source and lineage (shared by every child
of that parent) and ends with what changes per call (notebook, tried ideas, inspirations).
Every variable section is bounded, so prompts stay the same size as a run grows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evolve.mutate.base import MutationContext, unified_diff
from population.candidate import Candidate
from population.store import edits_from_seed, is_copy

ANSWER_FORMAT = """\
## How to answer

Answer in exactly this shape:

DESCRIPTION: <one line, under 100 characters: what this child changes>
RATIONALE: <a few sentences: why it should lower val_bpb>

Then one or more edit blocks. Each names the file on its own line, then:

train.py
<<<<<<< SEARCH
<lines copied exactly from the current file, enough to match one place>
=======
<the lines that replace them>
>>>>>>> REPLACE

Rules for edits:
- SEARCH must copy existing lines exactly, including indentation; keep blocks small.
- Blocks apply in order; each must match exactly one place in the file.
- To rewrite a whole file instead, write `FILE: train.py` on its own line followed by the
  complete file in a ```python fence. Prefer small blocks: they are cheaper and safer.
- Only the mutable files may change. The harness (prepare.py) is fixed; edits to it are rejected.
- Make one coherent change per answer, so its effect on val_bpb can be read.
"""

SYSTEM_INTRO = """\
You are an ML researcher improving a small GPT training script by careful experiments.
Each experiment trains your edited script for a fixed budget and scores it by validation
bits per byte (val_bpb, lower is better). You see the parent script, its history, a lab
notebook shared by a population of parallel experiments, and ideas from other islands.
"""

FOCUS_HINTS = (
    "the optimizer and learning rates",
    "the learning-rate schedule (warmup, warmdown, final LR)",
    "the architecture (depth, width, attention, MLP)",
    "initialization and normalization",
    "throughput: more useful tokens or steps within the budget",
    "regularization and batch size",
    "a simplification that keeps val_bpb while removing code",
)


@dataclass(frozen=True)
class PromptLimits:
    """Character budgets of the variable sections (about 4 characters per token)."""

    lineage_steps: int = 12
    notebook_chars: int = 6000
    tried_items: int = 20
    inspiration_chars: int = 4000
    inspirations: int = 2
    log_tail_chars: int = 1500


@dataclass(frozen=True)
class Prompt:
    """A Messages API request body's `system` and `messages`, plus a plain-text rendering."""

    system: list[dict[str, Any]]
    messages: list[dict[str, Any]] = field(default_factory=list)

    def text(self) -> str:
        """Everything as one markdown document (for the command mutator and for logs)."""
        parts = [block["text"] for block in self.system]
        for message in self.messages:
            content = message["content"]
            if isinstance(content, str):
                parts.append(content)
            else:
                parts.extend(block["text"] for block in content if block.get("type") == "text")
        return "\n\n".join(parts)

    def chars(self) -> int:
        return len(self.text())


_CACHE = {"type": "ephemeral"}


def _clip(text: str, limit: int, keep: str = "head") -> str:
    if len(text) <= limit:
        return text
    note = f"\n[... {len(text) - limit} characters cut ...]\n"
    return text[:limit] + note if keep == "head" else note + text[-limit:]


def format_metrics(metrics: Mapping[str, Any]) -> str:
    keys = ("val_bpb", "entropy_floor_bpb", "training_seconds", "peak_vram_mb", "mfu_percent",
            "total_tokens_M", "num_steps", "num_params_M", "depth")
    shown = []
    for key in keys:
        if key in metrics:
            value = metrics[key]
            shown.append(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")
    return ", ".join(shown) if shown else "(not yet measured)"


def _delta(child: Candidate, parent: Candidate | None) -> str:
    if child.val_bpb is None:
        return f"{child.status.value}" + (f": {child.reason}" if child.reason else "")
    if parent is None or parent.val_bpb is None:
        return f"val_bpb {child.val_bpb:.4f}"
    return f"val_bpb {child.val_bpb:.4f} (Δ {child.val_bpb - parent.val_bpb:+.4f})"


def format_lineage(lineage: Sequence[Candidate], steps: int) -> str:
    """Root to parent: what each step changed and what it did to val_bpb (latest `steps`)."""
    if not lineage:
        return "(no history: this is the seed)"
    lines = []
    shown = list(lineage)[-steps:]
    skipped = len(lineage) - len(shown)
    if skipped:
        lines.append(f"({skipped} earlier steps not shown)")
    previous = lineage[skipped - 1] if skipped else None
    gen = edits_from_seed(lineage[:skipped])  # counted once: lineages grow hundreds deep
    for index, step in enumerate(shown, start=skipped):
        what = step.description or ("seed" if step.parent_id is None else "(no description)")
        gen = edits_from_seed(lineage[:index + 1]) if index == 0 else gen + (not is_copy(step))
        lines.append(f"- gen {gen}: {what[:160]} -> {_delta(step, previous)}")
        previous = step
    return "\n".join(lines)


def _source_section(files: Mapping[str, str]) -> str:
    return "\n\n".join(f"{name}\n```python\n{source}\n```" for name, source in files.items())


def build_prompt(context: MutationContext, limits: PromptLimits = PromptLimits(),
                 focus: bool = True) -> Prompt:
    """The request for one LLM mutation of `context.parent`."""
    parent = context.parent
    system_text = "\n".join([SYSTEM_INTRO, "# The research brief (program.md)\n",
                             context.program_md.strip(), "", ANSWER_FORMAT])
    system = [{"type": "text", "text": system_text, "cache_control": _CACHE}]
    head = "\n\n".join([
        f"# The parent: {parent.id} (island {parent.island}, "
        f"generation {edits_from_seed(context.lineage)})",  # lineage ends at the parent
        f"Metrics: {format_metrics(parent.metrics)}",
        "## Its lineage (root first; Δ is the change in val_bpb from the step before)\n"
        + format_lineage(context.lineage, limits.lineage_steps),
        "## Its current source (SEARCH text must match this exactly)\n"
        + _source_section({n: parent.files.get(n, "") for n in context.mutable_files}),
    ])
    tail = [_notebook_section(context.notebook, limits),
            _tried_section(context.tried_on_parent, limits, context.notebook),
            _inspiration_section(parent, context.inspirations, context.mutable_files, limits)]
    ask = "# Your task\nPropose one new experiment: a child of this parent likely to lower val_bpb."
    if focus:
        ask += (" If nothing better comes to mind, consider "
                f"{FOCUS_HINTS[context.seed % len(FOCUS_HINTS)]}.")
    ask += " Do not repeat what was already tried on this parent."
    body = "\n\n".join([part for part in tail if part] + [ask])
    content = [{"type": "text", "text": head, "cache_control": _CACHE},
               {"type": "text", "text": body}]
    return Prompt(system, [{"role": "user", "content": content}])


def _notebook_section(notebook: str, limits: PromptLimits) -> str:
    if not notebook.strip():
        return ""
    return "# Lab notebook (shared by the whole population)\n" + _clip(
        notebook.strip(), limits.notebook_chars)


def _tried_section(tried: Sequence[str], limits: PromptLimits, notebook: str = "") -> str:
    # the notebook may already list them, with their outcomes
    tried = [t for t in tried if f"- {t[:160]} -> " not in notebook]
    if not tried:
        return ""
    items = list(tried)[-limits.tried_items:]
    more = len(tried) - len(items)
    lines = [f"- {item[:200]}" for item in items]
    if more:
        lines.insert(0, f"({more} older ones not shown)")
    return "# Already tried on this parent (do not repeat)\n" + "\n".join(lines)


def _inspiration_section(parent: Candidate, inspirations: Sequence[Candidate],
                         mutable_files: Sequence[str], limits: PromptLimits) -> str:
    parts = []
    for other in list(inspirations)[: limits.inspirations]:
        diff = unified_diff({n: parent.files.get(n, "") for n in mutable_files},
                            {n: other.files.get(n, "") for n in mutable_files})
        parts.append(
            f"## {other.id} (island {other.island}): {other.description or '(no description)'}\n"
            f"Metrics: {format_metrics(other.metrics)}\n"
            "How its source differs from the parent's:\n```diff\n"
            + _clip(diff or "(identical)\n", limits.inspiration_chars) + "```")
    if not parts:
        return ""
    return ("# Inspirations from other islands (ideas to borrow; edits still apply to the "
            "parent's source)\n" + "\n\n".join(parts))


def build_crossover_prompt(context: MutationContext, other: Candidate,
                           limits: PromptLimits = PromptLimits()) -> Prompt:
    """Two parents: the edits apply to the first; the second is shown as a diff against it."""
    base = build_prompt(context, limits, focus=False)
    parent = context.parent
    diff = unified_diff({n: parent.files.get(n, "") for n in context.mutable_files},
                        {n: other.files.get(n, "") for n in context.mutable_files})
    ask = "\n\n".join([
        f"# The second parent: {other.id} (island {other.island})",
        f"Metrics: {format_metrics(other.metrics)}",
        f"What it changed last: {other.description or '(no description)'}",
        "How its source differs from the first parent's:\n```diff\n"
        + _clip(diff or "(identical)\n", limits.inspiration_chars * 2) + "```",
        "# Your task\nWrite a child that combines the strengths of both parents: keep what "
        "makes each one good, drop what hurts. Your edits apply to the FIRST parent's source.",
    ])
    head = base.messages[0]["content"][0]
    tail = [_notebook_section(context.notebook, limits),
            _tried_section(context.tried_on_parent, limits, context.notebook)]
    body = "\n\n".join([t for t in tail if t] + [ask])
    return Prompt(base.system, [{"role": "user",
                                 "content": [head, {"type": "text", "text": body}]}])


COMMAND_FORMAT = """\
## How to answer (external command)

Edit the mutable file(s) in this directory in place. Leave prepare.py and every other file
as they are. Optionally write a file DESCRIPTION.md in this directory:

DESCRIPTION: <one line: what this child changes>
RATIONALE: <why it should lower val_bpb>
"""


def build_command_prompt(context: MutationContext, limits: PromptLimits = PromptLimits()) -> str:
    """The prompt as one markdown file for an external coding agent."""
    text = build_prompt(context, limits).text()
    return text.replace(ANSWER_FORMAT, COMMAND_FORMAT)
