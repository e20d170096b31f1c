"""What the Messages API accepts per model: sampling parameters, thinking, effort levels.

Checked when the config is loaded, so a request the API would answer with HTTP 400 is a
config error naming the key and the model, not a run of failed proposals.

Sources (platform.claude.com, checked 2026-12): the Claude 5 family (`claude-<name>-5...`:
Sonnet 5 / 5.5, Opus 5 / 5.5, Haiku 5.5, Fable, Mythos) answers 400 to a non-default
`temperature` / `top_p` / `top_k` and to manual thinking (`thinking.type: enabled` with a
`budget_tokens`); thinking is adaptive and steered by `output_config.effort`
(docs/build-with-claude/effort: low, medium, high, xhigh, max). Opus 4.7/4.8 take the same
five levels, Opus/Sonnet 4.6 all but xhigh, Opus 4.5 low/medium/high; older models none.
"""

from __future__ import annotations

import re

ALL_EFFORTS = ("low", "medium", "high", "xhigh", "max")
_CLAUDE_5 = re.compile(r"^claude-[a-z]+-5(?:$|[-@.\[])")
# (pattern, effort levels, adaptive thinking) for the Claude models older than the 5 family
_OLDER = (
    (re.compile(r"^claude-opus-4-[78](?:$|[-@])"), ALL_EFFORTS, True),
    (re.compile(r"^claude-(?:opus|sonnet)-4-6(?:$|[-@])"), ("low", "medium", "high", "max"), True),
    (re.compile(r"^claude-opus-4-5(?:$|[-@])"), ("low", "medium", "high"), False),
)
SAMPLING_KEYS = ("temperature", "top_p", "top_k")
CLAUDE_5_MAX_OUTPUT = 128_000  # "Max output: 128K tokens" on every Claude 5 model page


def is_claude(model: str) -> bool:
    return model.startswith("claude-")


def is_claude_5(model: str) -> bool:
    """The Claude 5 family: adaptive thinking only, sampling parameters at their defaults."""
    return bool(_CLAUDE_5.match(model))


def effort_levels(model: str) -> tuple[str, ...]:
    """The `output_config.effort` values `model` accepts (() = it takes no effort).

    A model that is not a Claude model (a local server's) is assumed to take the five levels:
    the API only forwards them."""
    if is_claude_5(model) or not is_claude(model):
        return ALL_EFFORTS
    for pattern, levels, _ in _OLDER:
        if pattern.match(model):
            return levels
    return ()


def adaptive_thinking(model: str) -> bool:
    """Whether to ask for `thinking: {type: adaptive}` (never a budget)."""
    if is_claude_5(model):
        return True
    return any(pattern.match(model) and adaptive for pattern, _, adaptive in _OLDER)


def request_problems(model: str, sampling: dict[str, float | int | None],
                     effort: str | None, max_tokens: int | None = None) -> list[str]:
    """Why a request with these options would be refused by the API ([] = it is fine).

    `sampling` maps temperature/top_p/top_k to the configured value (None = not set)."""
    problems = []
    if max_tokens is not None and is_claude_5(model) and max_tokens > CLAUDE_5_MAX_OUTPUT:
        problems.append(f"max_tokens: {max_tokens} — model {model} writes at most "
                        f"{CLAUDE_5_MAX_OUTPUT} output tokens")
    if is_claude_5(model):
        for key in SAMPLING_KEYS:
            value = sampling.get(key)
            if value is not None and not (key == "temperature" and value == 1.0):
                problems.append(
                    f"{key}: {value} — model {model} (Claude 5 family) answers HTTP 400 to a "
                    f"non-default {key}; remove the key (diversity comes from the prompt and "
                    "the novelty filter)")
    if effort is not None:
        levels = effort_levels(model)
        if not levels:
            problems.append(f"effort: {effort!r} — model {model} takes no effort parameter; "
                            "remove the key")
        elif effort not in levels:
            problems.append(f"effort: {effort!r} — model {model} accepts "
                            f"{', '.join(levels)}")
    return problems
