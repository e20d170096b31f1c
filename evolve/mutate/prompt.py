"""The prompt: what a good researcher would want to see before editing the parent.

Layout, for prompt caching: the system prompt (instructions + program.md) is the static
prefix; the user turn starts with the parent's source and lineage (shared by every child
of that parent) and ends with what changes per call (notebook, tried ideas, inspirations).
Every variable section is bounded, so prompts stay the same size as a run grows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evolve.mutate.base import BriefFacts, MutationContext, unified_diff
from evolve.mutate.untrusted import fenced
from population.candidate import Candidate
from population.store import edits_from_seed, is_copy

_BRIEF = re.compile(r"<!--\s*brief:\s*(\w+)\s*-->(.*?)<!--\s*end brief\s*-->", re.S)

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
bits per byte (val_bpb, lower is better). You see the parent script, its history, the
latest results of a population of parallel experiments (worse ones included), what is being
tried right now, a shared lab notebook, and ideas from other lines of the search.
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
    inspiration_chars: int = 3000
    inspirations: int = 3
    log_tail_chars: int = 2000
    recent_chars: int = 3000
    in_flight_items: int = 12
    # a parent larger than this (all mutable files) is shown with its middle elided: the
    # model edits what it sees, and the prompt stays inside what a call can afford
    source_chars: int = 120_000


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


def select_brief(program_md: str, profile: str) -> str:
    """program.md for this profile: the shared text plus the section marked for its kind
    (`<!-- brief: gpu -->` ... `<!-- end brief -->`), the other kinds' sections left out."""
    kind = "gpu" if profile.startswith("gpu") else "cpu"

    def keep(match: re.Match[str]) -> str:
        return match.group(2).strip("\n") if match.group(1).lower() == kind else ""

    text = _BRIEF.sub(keep, program_md)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _source_view(source: str, limit: int) -> str:
    """The file, or for a file over `limit` characters its head and tail with the middle
    elided at line boundaries (the model is told to edit only what it sees)."""
    if len(source) <= limit:
        return source
    lines = source.split("\n")
    head, tail, used = [], [], 0
    for line in lines:
        if used + len(line) + 1 > limit * 0.6:
            break
        head.append(line)
        used += len(line) + 1
    for line in reversed(lines[len(head):]):
        if used + len(line) + 1 > limit:
            break
        tail.insert(0, line)
        used += len(line) + 1
    hidden = len(lines) - len(head) - len(tail)
    marker = (f"# [... lines {len(head) + 1}-{len(head) + hidden} not shown: the file is "
              f"{len(source)} characters, over this prompt's {limit}; edit only lines shown ...]")
    return "\n".join(head + [marker] + tail)


def _source_section(files: Mapping[str, str], limit: int) -> str:
    each = max(1000, limit // max(1, len(files)))
    parts = []
    for name, source in files.items():
        view = _source_view(source, each)
        note = ("\n(Too large to show whole: SEARCH may only quote lines shown here; the "
                "elided lines stay as they are.)" if view is not source else "")
        parts.append(f"{name}\n```python\n{view}\n```{note}")
    return "\n\n".join(parts)


def format_facts(facts: BriefFacts) -> str:
    """One line of this run's measurement facts (budget, device, memory, noise)."""
    parts = []
    if facts.budget:
        parts.append(f"budget: {facts.budget}")
    if facts.device:
        parts.append(f"device: {facts.device}")
    if facts.peak_memory_gb is not None:
        parts.append(f"the parent peaked at {facts.peak_memory_gb:.1f} GB of device memory "
                     "(a soft limit: running out crashes the run)")
    if facts.noise_sigma is not None:
        parts.append(f"seed-to-seed noise of val_bpb: σ = {facts.noise_sigma:.4f} (a change "
                     "smaller than about 2σ is not distinguishable from luck)")
    return "; ".join(parts)


def build_prompt(context: MutationContext, limits: PromptLimits = PromptLimits(),
                 focus: bool = True) -> Prompt:
    """The request for one LLM mutation of `context.parent`."""
    system = [{"type": "text", "text": system_text(context), "cache_control": _CACHE}]
    body = "\n\n".join([part for part in variable_sections(context, limits) if part]
                        + [_ask(context, focus)])
    content = [{"type": "text", "text": parent_head(context, limits), "cache_control": _CACHE},
               {"type": "text", "text": body}]
    return Prompt(system, [{"role": "user", "content": content}])


def system_text(context: MutationContext) -> str:
    brief = select_brief(context.program_md, context.facts.profile)
    return "\n".join([SYSTEM_INTRO, "# The research brief (program.md)\n", brief, "",
                      ANSWER_FORMAT])


def parent_head(context: MutationContext, limits: PromptLimits) -> str:
    """What every child of this parent shares (cached as a second prefix)."""
    parent = context.parent
    facts = format_facts(context.facts)
    return "\n\n".join(part for part in [
        f"# This run\n{facts}" if facts else "",
        f"# The parent: {parent.id} (island {parent.island}, "
        f"generation {edits_from_seed(context.lineage)})",  # lineage ends at the parent
        f"Metrics: {format_metrics(parent.metrics)}",
        "## Its lineage (root first; Δ is the change in val_bpb from the step before)\n"
        + format_lineage(context.lineage, limits.lineage_steps),
        "## Its current source (SEARCH text must match this exactly)\n"
        + _source_section({n: parent.files.get(n, "") for n in context.mutable_files},
                          limits.source_chars),
    ] if part)


def variable_sections(context: MutationContext, limits: PromptLimits,
                      inspirations: bool = True) -> list[str]:
    """What changes from call to call, each section bounded."""
    parts = [_recent_section(context.recent, limits),
             _in_flight_section(context.in_flight, limits),
             _tried_section(context.tried_on_parent, limits),
             _log_section(context.parent_log, limits),
             _notebook_section(context.notebook, limits)]
    if inspirations:
        parts.append(_inspiration_section(context.inspirations, limits))
    return parts


def _ask(context: MutationContext, focus: bool) -> str:
    ask = "# Your task\nPropose one new experiment: a child of this parent likely to lower val_bpb."
    if focus:
        ask += (" If nothing better comes to mind, consider "
                f"{FOCUS_HINTS[context.seed % len(FOCUS_HINTS)]}.")
    return ask + (" Do not repeat what was already tried on this parent or what is being "
                  "tried now: near-identical edits are refused before they run.")


def _recent_section(recent: str, limits: PromptLimits) -> str:
    if not recent.strip():
        return ""
    return ("# Recent results across the population (newest first; Δ is the change from "
            "each child's own parent, worse ones included)\n"
            + _clip(recent.strip(), limits.recent_chars))


def _in_flight_section(items: Sequence[str], limits: PromptLimits) -> str:
    if not items:
        return ""
    shown = list(items)[-limits.in_flight_items:]
    return ("# Being tried right now (do not duplicate these)\n"
            + "\n".join(f"- {item[:200]}" for item in shown))


def _log_section(log: str, limits: PromptLimits) -> str:
    if not log.strip():
        return ""
    return ("# The end of the parent's training log (its loss curve)\n"
            + fenced(log, limits.log_tail_chars))


def _notebook_section(notebook: str, limits: PromptLimits) -> str:
    if not notebook.strip():
        return ""
    return "# Lab notebook (shared by the whole population)\n" + _clip(
        notebook.strip(), limits.notebook_chars)


def _tried_section(tried: Sequence[str], limits: PromptLimits) -> str:
    if not tried:
        return ""
    items = list(tried)[-limits.tried_items:]
    more = len(tried) - len(items)
    lines = [f"- {item[:240]}" for item in items]
    if more:
        lines.insert(0, f"({more} older ones not shown)")
    return ("# Already tried on this parent, with what happened (do not repeat)\n"
            + "\n".join(lines))


def _inspiration_section(inspirations: Sequence[Candidate], limits: PromptLimits) -> str:
    parts = []
    for other in list(inspirations)[: limits.inspirations]:
        edit = other.diff.strip()
        parts.append(
            f"## {other.id} (island {other.island}): {other.description or '(no description)'}\n"
            f"Metrics: {format_metrics(other.metrics)}\n"
            f"Its own edit (the diff from its parent {other.parent_id}):\n```diff\n"
            + _clip(edit + "\n" if edit else "(no diff recorded)\n", limits.inspiration_chars)
            + "```")
    if not parts:
        return ""
    return ("# Ideas from other lines of the search (each shown as the edit that made it; "
            "borrow an idea, but your edit applies to the parent's source above)\n"
            + "\n\n".join(parts))


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
    tail = variable_sections(context, limits, inspirations=False)
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
