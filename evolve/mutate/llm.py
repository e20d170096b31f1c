"""The LLM mutator: one conversation with a Messages API model per proposed child.

`propose` never raises: every failure (outage, timeout, unusable answer, budget spent)
comes back as `Proposal.error`, which the controller stores as a rejected candidate.
The endpoint's health is time-based (`evolve.mutate.health`), so the controller can stop or
fall back once it has been unreachable for a while, not after a burst of failures.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anthropic

from evolve.mutate.base import INFRASTRUCTURE, MutationContext, Proposal
from evolve.mutate.cost import SpendLedger, add_usage
from evolve.mutate.edit_format import apply_answer, describe_change, parse_answer, syntax_problems
from evolve.mutate.health import Health
from evolve.mutate.kinds import LLMOperator
from evolve.mutate.models import adaptive_thinking
from evolve.mutate.prompt import Prompt, PromptLimits, build_prompt
from evolve.mutate.ratelimit import RateLimiter
from evolve.mutate.registry import OperatorFacts
from evolve.mutate.streaming import StreamBroke, stream_message

# Errors worth another try: rate limits, overload/5xx, timeouts, dropped connections, and a
# stream that broke after its 200.
_TRANSIENT = (anthropic.RateLimitError, anthropic.InternalServerError,
              anthropic.APIConnectionError, anthropic.RequestTimeoutError,
              anthropic.ConflictError, asyncio.TimeoutError, StreamBroke)
# Errors that no retry will fix: a bad key, no access, no such model, no credit.
_FATAL = (anthropic.AuthenticationError, anthropic.PermissionDeniedError,
          anthropic.NotFoundError, anthropic.PaymentRequiredError)
PROMPT_TOKENS_GUESS = 30000  # worst-case size of the first prompt, before one was measured


class CallFailed(Exception):
    """No answer could be had from the API (after all retries)."""

    def __init__(self, message: str, infrastructure: bool = True) -> None:
        super().__init__(message)
        self.infrastructure = infrastructure


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


@dataclass(frozen=True)
class CallPolicy:
    """How hard one call is tried: the SDK's own retries, our attempts around them, and the
    backoff between failures (not config keys: tests and benchmarks shorten them)."""

    sdk_max_retries: int = 2
    call_attempts: int = 3
    backoff_s: float = 2.0
    max_backoff_s: float = 60.0


def _client(op: LLMOperator, policy: CallPolicy, http_client: Any) -> anthropic.AsyncAnthropic:
    """The Messages API client from the operator's endpoint and key variable."""
    key = os.environ.get(op.api_key_env, "")
    if not key and op.base_url is None:
        raise ValueError(
            f"the llm operator needs an API key in the environment variable "
            f"{op.api_key_env} (or a base_url for a local server); set it, or use the "
            "heuristic operator")
    # No explicit timeout: responses are streamed, and the SDK's own defaults guard a stalled
    # connection without cutting a long answer short.
    return anthropic.AsyncAnthropic(api_key=key or "not-needed", base_url=op.base_url,
                                    max_retries=policy.sdk_max_retries, http_client=http_client)


class LLMMutator:
    """Mutations written by a model over the Anthropic Messages API (or a compatible server)."""

    name = "llm"

    def __init__(self, op: LLMOperator | None = None, facts: OperatorFacts | None = None, *,
                 ledger: SpendLedger | None = None, client: anthropic.AsyncAnthropic | None = None,
                 http_client: Any = None, limiter: RateLimiter | None = None,
                 limits: PromptLimits | None = None, policy: CallPolicy | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`op` is its config section (checked against the API's rules when it was built),
        `facts` the run's (deadline, calls in flight, outage window, seed); the keywords are
        shared parts (the run's spend ledger) and seams for tests and benchmarks."""
        op = op if op is not None else LLMOperator(kind="llm")
        facts = facts if facts is not None else OperatorFacts()
        policy = policy if policy is not None else CallPolicy()
        self.model = op.model
        self.sampling = {k: v for k, v in op.sampling().items() if v is not None}
        self.effort = op.effort
        self.prices = op.price_table()
        self.max_tokens = op.max_tokens
        self.max_apply_retries = op.max_apply_retries
        self.call_attempts = max(1, policy.call_attempts)
        self.proposal_timeout_s = facts.proposal_timeout_s
        self.ledger = ledger
        self.limiter = limiter or RateLimiter(facts.max_in_flight, op.tokens_per_minute)
        self.limits = limits or PromptLimits()
        self.health = Health(facts.down_after_s, backoff_s=policy.backoff_s,
                             max_backoff_s=policy.max_backoff_s, clock=clock, seed=facts.seed)
        self.client = client or _client(op, policy, http_client)
        self.base_url = str(getattr(self.client, "base_url", op.base_url or ""))
        self.calls = 0
        self._output_estimate = self.max_tokens / 4
        self._prompt_tokens = PROMPT_TOKENS_GUESS

    # ------------------------------------------------------------------ health

    @property
    def is_down(self) -> bool:
        return self.health.is_down

    @property
    def down_reason(self) -> str:
        return self.health.down_reason

    @property
    def fatal_reason(self) -> str:
        return self.health.fatal_reason

    def worst_call_usd(self) -> float:
        """The most the next call can cost (the ledger reserves this while it is in flight)."""
        return self.prices.worst_case(self.model, self._prompt_tokens, self.max_tokens)

    @property
    def spend_summary(self) -> str:
        return self.ledger.summary() if self.ledger is not None else ""

    @property
    def budget_exhausted(self) -> bool:
        """True when even one more call cannot fit under the dollar cap."""
        return self.ledger is not None and not self.ledger.affordable(
            self.worst_call_usd(), counting_reserved=False)

    # ------------------------------------------------------------------ proposing

    async def propose(self, context: MutationContext) -> Proposal:
        return await self.run_prompt(build_prompt(context, self.limits), context, self.name)

    async def run_prompt(self, prompt: Prompt, context: MutationContext,
                         mutator: str) -> Proposal:
        """Hold the conversation for `prompt`; any failure becomes `Proposal.error`."""
        conversation = _Conversation()
        infrastructure = True
        try:
            work = self._converse(prompt, context, mutator, conversation)
            if self.proposal_timeout_s is None:
                return await work
            return await asyncio.wait_for(work, self.proposal_timeout_s)
        except asyncio.TimeoutError:
            error = f"the proposal took longer than {self.proposal_timeout_s:g}s"
        except CallFailed as failure:
            error, infrastructure = str(failure), failure.infrastructure
        except Exception as failure:  # noqa: BLE001 - a mutator must never crash the run
            error = f"llm mutator failed: {type(failure).__name__}: {failure}"
        proposal = self._proposal(conversation, mutator, {}, "", "", "", self._redact(error))
        if infrastructure:
            proposal = Proposal(**{**proposal.__dict__, "infrastructure": True})
        return proposal

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
            feedback_head = None
            if not problems:
                problems = self._judge(original, files, applied, description)
            if not problems and context.vet is not None:
                verdict = context.vet(files, description or describe_change(original, files))
                if verdict:  # refused before compute: start again from the parent's source
                    problems, files, applied = [verdict], dict(original), []
                    feedback_head = REFUSED
            if not problems:
                description = description or describe_change(original, files)
                return self._proposal(conversation, mutator, files, description, rationale,
                                      "\n\n".join(applied), "")
            messages = messages + [
                {"role": "assistant", "content": text.strip() or "(empty answer)"},
                {"role": "user", "content": _feedback(result.applied, problems, feedback_head)},
            ]
        return self._proposal(conversation, mutator, {}, description, rationale,
                              "\n\n".join(applied),
                              f"the edit did not apply after {len(conversation.answers)} "
                              f"answer(s): {' | '.join(problems)}"[:2000])

    @staticmethod
    def _judge(original: Mapping[str, str], files: Mapping[str, str], applied: list[str],
               description: str) -> list[str]:
        """What is still wrong with an edit that applied: empty, unchanged or broken (each
        goes back to the model)."""
        if not applied:
            return ["the answer has no edit: give SEARCH/REPLACE blocks in the format described"]
        if files == original:
            return ["the edits leave the file exactly as it was: change something"]
        broken = [_with_context(p, files) for p in syntax_problems(
            {n: s for n, s in files.items() if s != original[n]}, original)]
        return broken

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
        last, tries = "", 0
        for attempt in range(self.call_attempts):
            if self.health.fatal_reason:
                raise CallFailed(f"LLM call refused: {self.health.fatal_reason}")
            if attempt and self.health.is_down:
                break  # down: one try per proposal is enough to notice it is back
            if (wait := self.health.wait_s()) > 0:
                await asyncio.sleep(wait)  # an incident: every caller backs off together
            tries += 1
            try:
                message = await self._request(prompt, messages, conversation)
            except _FATAL as error:
                self.health.fatal(self._redact(_fatal_text(error, self.model, self.base_url)))
                raise CallFailed(f"LLM call refused: {self.health.fatal_reason}") from None
            except _TRANSIENT as error:
                last = self._redact(f"{type(error).__name__}: {_brief(error)}")
                self._observe_error(error)
                self.health.failed(last, _retry_after(error))
                continue
            except anthropic.APIStatusError as error:  # 400 etc.: this request is wrong
                last = self._redact(f"{type(error).__name__}: {_brief(error)}")
                self.health.failed(last)
                raise CallFailed(f"LLM call failed: {last}") from None
            self.health.succeeded()
            self.calls += 1
            return message
        raise CallFailed(f"LLM call failed {tries} time(s): {last}")

    def params(self, prompt: Prompt, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The request body (less `stream`), exactly as the API accepts it for this model."""
        params: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens,
                                  "system": prompt.system, "messages": messages}
        if adaptive_thinking(self.model):
            params["thinking"] = {"type": "adaptive"}  # never a budget (HTTP 400 on Claude 5)
        if self.effort:
            params["output_config"] = {"effort": self.effort}
        if self.sampling:
            # The SDK has no sampling arguments any more; older models and local servers still
            # honour them in the body (the config refuses them for the Claude 5 family).
            params["extra_body"] = dict(self.sampling)
        return params

    async def _request(self, prompt: Prompt, messages: list[dict[str, Any]],
                       conversation: _Conversation) -> Any:
        params = self.params(prompt, messages)
        chars = sum(len(str(m["content"])) for m in messages) + sum(
            len(b["text"]) for b in prompt.system)
        worst = self.prices.worst_case(self.model, max(self._prompt_tokens, chars // 3),
                                       self.max_tokens)
        await self._reserve(worst)
        try:
            estimate = int(chars / 4 + self._output_estimate)
            async with self.limiter.slot(estimate) as slot:
                message = await self._stream(params, conversation, slot)
                return message
        finally:
            if self.ledger is not None:
                self.ledger.release(worst)

    async def _reserve(self, worst: float) -> None:
        """Hold the call's worst case under the dollar cap, waiting for calls in flight to
        settle when only their reservations stand in the way."""
        if self.ledger is None:
            return
        while not self.ledger.reserve(worst):
            if not self.ledger.affordable(worst, counting_reserved=False):
                raise CallFailed(f"the LLM budget is spent ({self.ledger.summary()}; the next "
                                 f"call could cost up to ${worst:.2f})")
            await asyncio.sleep(0.05)

    async def _stream(self, params: dict[str, Any], conversation: _Conversation,
                      slot: Any) -> Any:
        """Stream one answer; whatever it used is charged, also when it broke midway."""
        usage: dict[str, int] = {}
        try:
            message, usage, headers = await stream_message(self.client, params)
            self.limiter.observe(headers, self._output_estimate + self._prompt_tokens / 4)
            self._prompt_tokens = (usage["input_tokens"] + usage["cache_read_input_tokens"]
                                   + usage["cache_creation_input_tokens"])
            self._output_estimate = 0.8 * self._output_estimate + 0.2 * usage["output_tokens"]
            return message
        except StreamBroke as broke:
            usage = broke.usage
            raise
        finally:
            if usage:
                self._charge(usage, conversation)
                slot.actual = (usage["input_tokens"] + usage["cache_creation_input_tokens"]
                               + usage["output_tokens"])

    def _charge(self, usage: Mapping[str, int], conversation: _Conversation) -> None:
        cost = self.prices.cost(self.model, usage)
        conversation.usage = add_usage(conversation.usage, usage)
        conversation.cost_usd += cost
        if self.ledger is not None:
            self.ledger.record(self.model, usage, cost)

    def _observe_error(self, error: BaseException) -> None:
        response = getattr(error, "response", None)
        if response is not None and response.status_code >= 400:
            self.limiter.observe(response.headers, self._prompt_tokens)

    def _redact(self, text: str) -> str:
        """Error text without the API key (servers sometimes echo what they were sent)."""
        secret = getattr(self.client, "api_key", None)
        return text.replace(secret, "***") if isinstance(secret, str) and len(secret) > 8 else text


def _fatal_text(error: BaseException, model: str, base_url: str) -> str:
    if isinstance(error, anthropic.NotFoundError):
        return (f"model {model} was not found at {base_url or 'the API'} (HTTP 404: "
                f"{_brief(error)}); check the operator's `model`")
    return f"{type(error).__name__}: {_brief(error)}"


def _retry_after(error: BaseException) -> float | None:
    response = getattr(error, "response", None)
    if response is None:
        return None
    try:
        return float(response.headers.get("retry-after", ""))
    except (TypeError, ValueError):
        return None


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


REFUSED = ("Your edit applied but was refused before any compute was spent on it, and "
           "nothing of it was kept: the file is the parent's source again. ")


def _feedback(applied: tuple[str, ...], problems: list[str], head: str | None = None) -> str:
    # The answer goes back as text only: thinking blocks belong to the turn that made them.
    if head is None:
        head = (f"{len(applied)} edit block(s) applied and are now part of the file; do not "
                "send them again. " if applied else "Nothing was applied. ")
    items = "\n\n".join(f"- {p}" for p in problems)
    if head is REFUSED:
        return (f"{head}Why:\n\n{items}\n\nReply in the same format with a DESCRIPTION, a "
                "RATIONALE and edit blocks against the parent's source as shown above.")
    return (f"{head}Your answer could not be used:\n\n{items}\n\nReply in the same format with "
            "corrected edit blocks only (DESCRIPTION and RATIONALE may stay as they were).")


__all__ = ["INFRASTRUCTURE", "CallFailed", "LLMMutator", "answer_text"]
