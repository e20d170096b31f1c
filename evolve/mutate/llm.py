"""The LLM mutator: one conversation with a Messages API model per proposed child.

`propose` never raises: every failure (outage, timeout, unusable answer, budget spent)
comes back as `Proposal.error`, which the controller stores as a rejected candidate.
A run of failed calls is visible as `consecutive_failures` / `is_down`, so the controller
can stop or fall back instead of spinning on a dead endpoint.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anthropic

from evolve.mutate.base import MutationContext, Proposal
from evolve.mutate.cost import PriceTable, SpendLedger, add_usage, usage_from_response
from evolve.mutate.edit_format import (
    apply_answer,
    describe_change,
    parse_answer,
    syntax_problems,
)
from evolve.mutate.prompt import Prompt, PromptLimits, build_prompt
from evolve.mutate.ratelimit import RateLimiter

# Errors worth another try: rate limits, overload/5xx, timeouts, dropped connections.
_TRANSIENT = (anthropic.RateLimitError, anthropic.InternalServerError,
              anthropic.APIConnectionError, anthropic.RequestTimeoutError,
              anthropic.ConflictError, asyncio.TimeoutError)
# Errors that no retry will fix: a bad key, no access, no such model.
_FATAL = (anthropic.AuthenticationError, anthropic.PermissionDeniedError,
          anthropic.NotFoundError, anthropic.PaymentRequiredError)


class CallFailed(Exception):
    """No answer could be had from the API (after all retries)."""


@dataclass
class _Conversation:
    """What one proposal has consumed so far (kept when it times out midway)."""

    usage: dict[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    answers: list[str] = field(default_factory=list)


def answer_text(message: Any) -> str:
    """The text of a Messages API answer (thinking and tool blocks are not the answer)."""
    parts = [getattr(block, "text", "") for block in getattr(message, "content", None) or []
             if getattr(block, "type", "") == "text"]
    return "\n".join(p for p in parts if p)


class LLMMutator:
    """Mutations written by a model over the Anthropic Messages API (or a compatible server)."""

    name = "llm"

    def __init__(self, *, model: str = "claude-sonnet-5-5",
                 client: anthropic.AsyncAnthropic | None = None, base_url: str | None = None,
                 api_key_env: str = "ANTHROPIC_API_KEY", temperature: float | None = None,
                 max_tokens: int = 16000, timeout_s: float = 300.0, max_apply_retries: int = 2,
                 sdk_max_retries: int = 2, call_attempts: int = 3, backoff_s: float = 2.0,
                 max_backoff_s: float = 60.0, proposal_timeout_s: float | None = None,
                 prices: PriceTable | None = None, ledger: SpendLedger | None = None,
                 limiter: RateLimiter | None = None, down_after: int = 5,
                 thinking_tokens: int | None = None, limits: PromptLimits | None = None,
                 effort: str | None = None, http_client: Any = None, seed: int = 0) -> None:
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.max_apply_retries = max_apply_retries
        self.call_attempts = max(1, call_attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.proposal_timeout_s = proposal_timeout_s
        self.prices = prices or PriceTable()
        self.ledger = ledger
        self.limiter = limiter
        self.down_after = down_after
        self.thinking_tokens = thinking_tokens
        self.effort = effort
        self.limits = limits or PromptLimits()
        self._rng = random.Random(seed)
        if client is None:
            key = os.environ.get(api_key_env, "")
            if not key and base_url is None:
                raise ValueError(
                    f"the llm operator needs an API key in the environment variable "
                    f"{api_key_env} (or a base_url for a local server); set it, or use the "
                    "heuristic operator")
            client = anthropic.AsyncAnthropic(api_key=key or "not-needed", base_url=base_url,
                                              max_retries=sdk_max_retries, timeout=timeout_s,
                                              http_client=http_client)
        self.client = client
        self.consecutive_failures = 0
        self.fatal_reason = ""
        self.last_failure = ""
        self.calls = 0
        self._output_estimate = max_tokens / 4

    # ------------------------------------------------------------------ health

    @property
    def is_down(self) -> bool:
        """True when the endpoint looks gone for good: a fatal error or a run of failures."""
        return bool(self.fatal_reason) or self.consecutive_failures >= self.down_after

    @property
    def down_reason(self) -> str:
        if self.fatal_reason:
            return self.fatal_reason
        if self.is_down:
            return (f"{self.consecutive_failures} LLM calls in a row failed "
                    f"(last: {self.last_failure})")
        return ""

    @property
    def budget_exhausted(self) -> bool:
        return self.ledger is not None and self.ledger.exhausted

    # ------------------------------------------------------------------ proposing

    async def propose(self, context: MutationContext) -> Proposal:
        return await self.run_prompt(build_prompt(context, self.limits), context, self.name)

    async def run_prompt(self, prompt: Prompt, context: MutationContext,
                         mutator: str) -> Proposal:
        """Hold the conversation for `prompt`; any failure becomes `Proposal.error`."""
        conversation = _Conversation()
        try:
            if self.budget_exhausted:
                raise CallFailed(f"the LLM budget is spent ({self.ledger.summary()})")
            work = self._converse(prompt, context, mutator, conversation)
            if self.proposal_timeout_s is None:
                return await work
            return await asyncio.wait_for(work, self.proposal_timeout_s)
        except asyncio.TimeoutError:
            error = f"the proposal took longer than {self.proposal_timeout_s:g}s"
        except CallFailed as failure:
            error = str(failure)
        except Exception as failure:  # noqa: BLE001 - a mutator must never crash the run
            error = f"llm mutator failed: {type(failure).__name__}: {failure}"
        return self._proposal(conversation, mutator, {}, "", "", "", self._redact(error))

    async def _converse(self, prompt: Prompt, context: MutationContext, mutator: str,
                        conversation: _Conversation) -> Proposal:
        mutable = list(context.mutable_files)
        original = {name: context.parent.files.get(name, "") for name in mutable}
        files = dict(original)
        messages: list[dict[str, Any]] = list(prompt.messages)
        applied: list[str] = []
        description = rationale = ""
        problems: list[str] = []
        for _turn in range(1 + self.max_apply_retries):
            message = await self._call(prompt, messages, conversation)
            text = answer_text(message)
            conversation.answers.append(text)
            parsed = parse_answer(text, mutable)
            description = parsed.description or description
            rationale = parsed.rationale or rationale
            result = apply_answer(parsed, files, mutable)
            files = result.files  # blocks that applied stay applied; the model is told so
            applied.extend(result.applied)
            problems = list(result.failed)
            if getattr(message, "stop_reason", "") == "max_tokens" and (problems or not applied):
                problems.append(f"the answer was cut off at the {self.max_tokens}-token limit: "
                                "send shorter SEARCH/REPLACE blocks instead of whole files")
            if not problems:
                if not applied:
                    problems.append("the answer has no edit: give SEARCH/REPLACE blocks in the "
                                    "format described")
                elif files == original:
                    problems.append("the edits leave the file exactly as it was: change something")
                else:
                    problems.extend(_with_context(p, files) for p in syntax_problems(
                        {n: s for n, s in files.items() if s != original[n]}, original))
            if not problems:
                description = description or describe_change(original, files)
                return self._proposal(conversation, mutator, files, description, rationale,
                                      "\n\n".join(applied), "")
            messages = messages + [
                {"role": "assistant", "content": text.strip() or "(empty answer)"},
                {"role": "user", "content": _feedback(result.applied, problems)},
            ]
        return self._proposal(conversation, mutator, {}, description, rationale,
                              "\n\n".join(applied),
                              f"the edit did not apply after {len(conversation.answers)} "
                              f"answer(s): {' | '.join(problems)}"[:2000])

    def _proposal(self, conversation: _Conversation, mutator: str, files: Mapping[str, str],
                  description: str, rationale: str, applied: str, error: str) -> Proposal:
        answers = conversation.answers
        raw = answers[0] if len(answers) == 1 else "".join(
            f"----- answer {k + 1} -----\n{a}\n" for k, a in enumerate(answers))
        return Proposal(files=dict(files), description=description, rationale=rationale,
                        mutator=mutator, model=self.model, raw_answer=raw, applied_edit=applied,
                        usage=add_usage({}, conversation.usage),
                        cost_usd=conversation.cost_usd, error=error)

    # ------------------------------------------------------------------ one API call

    async def _call(self, prompt: Prompt, messages: list[dict[str, Any]],
                    conversation: _Conversation) -> Any:
        """One answer, with our own bounded retries on top of the SDK's."""
        last = ""
        for attempt in range(self.call_attempts):
            if self.budget_exhausted:
                raise CallFailed(f"the LLM budget is spent ({self.ledger.summary()})")
            try:
                message = await self._request(prompt, messages)
            except _FATAL as error:
                self.fatal_reason = self._redact(f"{type(error).__name__}: {_brief(error)}")
                self._failed(self.fatal_reason)
                raise CallFailed(f"LLM call refused: {self.fatal_reason}") from None
            except _TRANSIENT as error:
                last = self._redact(f"{type(error).__name__}: {_brief(error)}")
                if attempt + 1 < self.call_attempts:
                    await asyncio.sleep(self._backoff(attempt, error))
                continue
            except anthropic.APIStatusError as error:  # 400 etc.: this request is wrong
                last = self._redact(f"{type(error).__name__}: {_brief(error)}")
                self._failed(last)
                raise CallFailed(f"LLM call failed: {last}") from None
            self.consecutive_failures = 0
            self.calls += 1
            usage = usage_from_response(getattr(message, "usage", None))
            cost = self.prices.cost(self.model, usage)
            conversation.usage = add_usage(conversation.usage, usage)
            conversation.cost_usd += cost
            if self.ledger is not None:
                self.ledger.record(self.model, usage, cost)
            self._output_estimate = 0.8 * self._output_estimate + 0.2 * usage["output_tokens"]
            return message
        self._failed(last)
        raise CallFailed(f"LLM call failed {self.call_attempts} times: {last}")

    async def _request(self, prompt: Prompt, messages: list[dict[str, Any]]) -> Any:
        params: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens,
                                  "system": prompt.system, "messages": messages,
                                  "timeout": self.timeout_s}
        if self.thinking_tokens:
            params["thinking"] = {"type": "enabled", "budget_tokens": self.thinking_tokens}
        elif self.temperature is not None:
            # Current Claude models take no sampling parameters (the SDK dropped them);
            # local servers and older models still honour one passed through the body.
            params["extra_body"] = {"temperature": self.temperature}
        if self.effort:
            params["output_config"] = {"effort": self.effort}
        if self.limiter is None:
            return await self._bounded(params)
        estimate = int(sum(len(str(m["content"])) for m in messages) / 4
                       + sum(len(b["text"]) for b in prompt.system) / 4 + self._output_estimate)
        async with self.limiter.slot(estimate) as slot:
            message = await self._bounded(params)
            usage = usage_from_response(getattr(message, "usage", None))
            slot.actual = (usage["input_tokens"] + usage["cache_creation_input_tokens"]
                           + usage["output_tokens"])
            return message

    async def _bounded(self, params: dict[str, Any]) -> Any:
        # Our own clock as well: a transport that ignores timeouts must not hang a proposal.
        return await asyncio.wait_for(self.client.messages.create(**params), self.timeout_s)

    def _backoff(self, attempt: int, error: BaseException) -> float:
        retry_after = None
        response = getattr(error, "response", None)
        if response is not None:
            try:
                retry_after = float(response.headers.get("retry-after", ""))
            except (TypeError, ValueError):
                retry_after = None
        base = min(self.max_backoff_s, self.backoff_s * (2 ** attempt))
        wait = base * (0.5 + self._rng.random() / 2)
        return min(self.max_backoff_s, max(wait, retry_after or 0.0))

    def _failed(self, reason: str) -> None:
        self.consecutive_failures += 1
        self.last_failure = reason

    def _redact(self, text: str) -> str:
        """Error text without the API key (servers sometimes echo what they were sent)."""
        secret = getattr(self.client, "api_key", None)
        return text.replace(secret, "***") if isinstance(secret, str) and len(secret) > 8 else text


def _brief(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]


def _with_context(problem: str, files: Mapping[str, str]) -> str:
    """A syntax problem with the lines around it as they now read."""
    for name, source in files.items():
        marker = f"{name} no longer parses:"
        if problem.startswith(marker) and " at line " in problem:
            try:
                line = int(problem.split(" at line ", 1)[1].split(":", 1)[0])
            except ValueError:
                return problem
            lines = source.splitlines()
            lo, hi = max(0, line - 4), min(len(lines), line + 3)
            shown = "\n".join(f"{k + 1:5d}| {lines[k]}" for k in range(lo, hi))
            return f"{problem}\nThe file now reads there:\n{shown}"
    return problem


def _feedback(applied: tuple[str, ...], problems: list[str]) -> str:
    head = (f"{len(applied)} edit block(s) applied and are now part of the file; do not send "
            "them again. " if applied else "Nothing was applied. ")
    items = "\n\n".join(f"- {p}" for p in problems)
    return (f"{head}Your answer could not be used:\n\n{items}\n\nReply in the same format with "
            "corrected edit blocks only (DESCRIPTION and RATIONALE may stay as they were).")
