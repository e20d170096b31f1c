"""One streamed Messages API call: the final message, its usage, and its rate-limit headers.

Streaming keeps a long answer (adaptive thinking at high effort can think for minutes) from
meeting a request timeout. A stream can still break after its HTTP 200 — an `error` event
(overloaded_error mid-answer) or a dropped connection; the tokens it used until then are
billed, so `StreamBroke` carries them for the caller to charge before it retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anthropic

from evolve.mutate.cost import USAGE_KEYS, usage_from_response


class StreamBroke(Exception):
    """The stream failed after its 200; `usage` is what it had used (input and output)."""

    def __init__(self, message: str, usage: dict[str, int]) -> None:
        super().__init__(message)
        self.usage = usage


def _partial_usage(snapshot: Any) -> dict[str, int]:
    """Usage of a broken stream: message_start's input counts, and the output tokens the
    last message_delta reported or, if more, what the streamed content amounts to (about four
    characters a token): the API bills the tokens it generated, not the ones we read."""
    if snapshot is None:
        return {}
    usage = usage_from_response(getattr(snapshot, "usage", None))
    chars = 0
    for block in getattr(snapshot, "content", None) or []:
        chars += len(getattr(block, "text", "") or "") + len(getattr(block, "thinking", "") or "")
    usage["output_tokens"] = max(usage["output_tokens"], chars // 4)
    return usage


async def stream_message(client: anthropic.AsyncAnthropic,
                         params: Mapping[str, Any]) -> tuple[Any, dict[str, int], Mapping[str, str]]:
    """(final message, its usage, the response headers). Errors before the 200 propagate as
    the SDK raises them (after its own retries); errors after it become `StreamBroke`."""
    async with client.messages.stream(**params) as stream:
        headers = stream.response.headers
        try:
            message = await stream.get_final_message()
        except (anthropic.APIStatusError, anthropic.APIConnectionError) as error:
            try:
                snapshot = stream.current_message_snapshot
            except AssertionError:  # broke before message_start
                snapshot = None
            kind = _error_type(error)
            raise StreamBroke(f"the stream broke after its 200 ({kind}): "
                              f"{' '.join(str(error).split())[:200]}",
                              _partial_usage(snapshot)) from error
        usage = usage_from_response(getattr(message, "usage", None))
        return message, {k: usage[k] for k in USAGE_KEYS}, headers


def _error_type(error: BaseException) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and inner.get("type"):
            return str(inner["type"])
    return type(error).__name__
