"""A local stand-in for the Anthropic Messages API that keeps the real API's rules.

Two ways to use it, one set of rules:
- `StandinServer`: an HTTP server in a thread (`base_url` for `evolve run`), streaming SSE,
  answering after a configurable `delay_s` (the utilisation benchmark uses that);
- `validate`, `sse_body`, `message_json`, `error_body`: the same payloads for an
  `httpx2.MockTransport` handler in unit tests.

Rules enforced (as the API answers them, HTTP status and error type): an API key and an
`anthropic-version` header (401 / 400); `model`, `max_tokens` and `messages` required (400);
an unknown model (404 not_found_error); for the Claude 5 family, non-default temperature /
top_p / top_k and `thinking.type: enabled` or any `budget_tokens` (400); `output_config.effort`
outside the model's levels (400); roles that do not alternate from `user` (400).
Usage is realistic: about four characters a token, and `cache_control` prefixes are written
to the cache on first sight and read from it afterwards.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from evolve.mutate.models import effort_levels, is_claude_5

KNOWN_MODELS = ("claude-sonnet-5-5", "claude-opus-5-5", "claude-sonnet-5", "claude-opus-5",
                "claude-haiku-5-5", "claude-fable-5-1", "claude-haiku-4-5", "claude-sonnet-4-6",
                "claude-opus-4-6", "claude-sonnet-4-5")
SAMPLING_DEFAULTS = {"temperature": 1.0}


@dataclass(frozen=True)
class Refusal:
    """An error answer: HTTP status, error type, message."""

    status: int
    type: str
    message: str


def tokens(text: str) -> int:
    return max(1, len(text) // 4)


def validate(body: Mapping[str, Any], headers: Mapping[str, str],
             models: tuple[str, ...] = KNOWN_MODELS) -> Refusal | None:
    """Why the real API would refuse this request (None: it would accept it)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if not lowered.get("x-api-key") and not lowered.get("authorization"):
        return Refusal(401, "authentication_error", "x-api-key header is required")
    if not lowered.get("anthropic-version"):
        return Refusal(400, "invalid_request_error", "anthropic-version: header is required")
    for key in ("model", "max_tokens", "messages"):
        if key not in body:
            return Refusal(400, "invalid_request_error", f"{key}: Field required")
    model = body["model"]
    if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
        return Refusal(400, "invalid_request_error", "max_tokens: must be a positive integer")
    if model not in models:
        return Refusal(404, "not_found_error", f"model: {model}")
    if is_claude_5(model) and body["max_tokens"] > 128_000:
        return Refusal(400, "invalid_request_error",
                       f"max_tokens: {body['max_tokens']} > 128000, the maximum for {model}")
    problem = _message_problem(body["messages"])
    if problem:
        return Refusal(400, "invalid_request_error", problem)
    return _option_problem(body, model)


def _option_problem(body: Mapping[str, Any], model: str) -> Refusal | None:
    thinking = body.get("thinking")
    if thinking is not None:
        if "budget_tokens" in thinking or thinking.get("type") == "enabled":
            if is_claude_5(model):
                return Refusal(400, "invalid_request_error",
                               f"thinking.type.enabled is not supported for this model "
                               f"({model}). Use thinking.type.adaptive and output_config.effort")
        elif thinking.get("type") not in ("adaptive", "disabled"):
            return Refusal(400, "invalid_request_error",
                           f"thinking.type: unknown value {thinking.get('type')!r}")
    if is_claude_5(model):
        for key in ("temperature", "top_p", "top_k"):
            if key in body and body[key] != SAMPLING_DEFAULTS.get(key, object()):
                return Refusal(400, "invalid_request_error",
                               f"{key}: setting a non-default value is not supported for {model}")
    effort = (body.get("output_config") or {}).get("effort")
    if effort is not None and effort not in effort_levels(model):
        return Refusal(400, "invalid_request_error",
                       f"output_config.effort: {effort!r} is not supported by {model}")
    return None


def _message_problem(messages: Any) -> str:
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    expected = "user"
    for index, message in enumerate(messages):
        if message.get("role") != expected:
            return f"messages.{index}.role: roles must alternate between user and assistant"
        if not message.get("content"):
            return f"messages.{index}.content: must not be empty"
        expected = "assistant" if expected == "user" else "user"
    if messages[-1]["role"] != "user":
        return "messages: the last message must be from the user"
    return ""


def _texts(content: Any) -> list[tuple[str, bool]]:
    """(text, marked for caching) of a system or message content."""
    if isinstance(content, str):
        return [(content, False)]
    return [(block.get("text", ""), "cache_control" in block) for block in content]


class PromptCache:
    """Prompt caching as the API does it: each `cache_control` breakpoint ends a cacheable
    prefix; the longest prefix seen before is read, the rest up to the last breakpoint is
    written, what follows it is plain input."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def usage(self, body: Mapping[str, Any]) -> dict[str, int]:
        parts: list[tuple[str, bool]] = _texts(body.get("system") or [])
        for message in body["messages"]:
            parts.extend(_texts(message["content"]))
        marks = [i for i, (_, mark) in enumerate(parts) if mark]
        prefixes = ["".join(text for text, _ in parts[:i + 1]) for i in marks]
        keys = [hashlib.sha256(f"{body['model']}\0{p}".encode()).hexdigest() for p in prefixes]
        with self._lock:
            hits = [p for p, k in zip(prefixes, keys, strict=True) if k in self._seen]
            self._seen.update(keys)
        read = tokens(hits[-1]) if hits else 0
        cached = tokens(prefixes[-1]) if prefixes else 0
        rest = "".join(text for text, _ in parts[marks[-1] + 1:] if marks) if marks else \
            "".join(text for text, _ in parts)
        return {"input_tokens": tokens(rest) if rest else 0,
                "cache_creation_input_tokens": cached - read,
                "cache_read_input_tokens": read}


def message_json(model: str, text: str, usage: Mapping[str, int], *, thinking: str = "",
                 stop_reason: str = "end_turn") -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if thinking:
        content.append({"type": "thinking", "thinking": thinking,
                        "signature": "EqQBCkYIARgCKkDsignature"})
    content.append({"type": "text", "text": text, "citations": None})
    return {"id": "msg_01" + hashlib.sha1(text.encode()).hexdigest()[:22], "type": "message",
            "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {**usage, "service_tier": "standard",
                      "cache_creation": {"ephemeral_5m_input_tokens":
                                         usage.get("cache_creation_input_tokens", 0),
                                         "ephemeral_1h_input_tokens": 0}}}


def _event(name: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _block_events(index: int, block: Mapping[str, Any], chunk: int) -> list[bytes]:
    kind = block["type"]
    empty = {"type": "thinking", "thinking": "", "signature": ""} if kind == "thinking" \
        else {"type": "text", "text": ""}
    events = [_event("content_block_start", {"type": "content_block_start", "index": index,
                                             "content_block": empty})]
    body = block["thinking"] if kind == "thinking" else block["text"]
    delta_kind = "thinking_delta" if kind == "thinking" else "text_delta"
    for k in range(0, len(body), chunk):
        events.append(_event("content_block_delta", {
            "type": "content_block_delta", "index": index,
            "delta": {"type": delta_kind, kind: body[k:k + chunk]}}))
    if kind == "thinking":
        events.append(_event("content_block_delta", {
            "type": "content_block_delta", "index": index,
            "delta": {"type": "signature_delta", "signature": block["signature"]}}))
    events.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def sse_events(message: Mapping[str, Any], *, chunk: int = 40, error_after: int | None = None,
               error_type: str = "overloaded_error") -> Iterator[bytes]:
    """The SSE events the API streams for `message`; with `error_after`, an `error` event
    replaces the rest of the stream after that many events (as an overload mid-answer does)."""
    usage = dict(message["usage"])
    events = [_event("message_start", {"type": "message_start", "message": {
        **message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}}),
        _event("ping", {"type": "ping"})]
    for index, block in enumerate(message["content"]):
        events.extend(_block_events(index, block, chunk))
    events.append(_event("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": usage["output_tokens"]}}))
    events.append(_event("message_stop", {"type": "message_stop"}))
    for number, event in enumerate(events):
        if error_after is not None and number >= error_after:
            text = "Overloaded" if error_type == "overloaded_error" else "Internal server error"
            yield _event("error", {"type": "error", "error": {"type": error_type, "message": text}})
            return
        yield event


def sse_body(message: Mapping[str, Any], **options: Any) -> bytes:
    return b"".join(sse_events(message, **options))


def error_body(refusal: Refusal) -> dict[str, Any]:
    return {"type": "error", "error": {"type": refusal.type, "message": refusal.message},
            "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}


def rate_limit_headers(*, requests_left: int = 999, tokens_left: int = 1_000_000,
                       reset_in_s: float = 10.0) -> dict[str, str]:
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + reset_in_s))
    return {"anthropic-ratelimit-requests-limit": "1000",
            "anthropic-ratelimit-requests-remaining": str(requests_left),
            "anthropic-ratelimit-requests-reset": reset,
            "anthropic-ratelimit-input-tokens-limit": "2000000",
            "anthropic-ratelimit-input-tokens-remaining": str(tokens_left),
            "anthropic-ratelimit-input-tokens-reset": reset,
            "anthropic-ratelimit-output-tokens-limit": "400000",
            "anthropic-ratelimit-output-tokens-remaining": "400000",
            "anthropic-ratelimit-output-tokens-reset": reset}


# ---------------------------------------------------------------- the HTTP server

Answer = Callable[[Mapping[str, Any]], str]


@dataclass
class StandinServer:
    """`with StandinServer(answer) as api: ... api.base_url ...`.

    `answer(body)` gives the text of each reply; `delay_s` is how long each reply takes (the
    utilisation benchmark's LLM latency); `failures` is a list of Refusals served first, one
    per request (e.g. a 529 to retry); every request is kept in `requests`, every refusal
    by the rules in `refused`."""

    answer: Answer
    delay_s: float = 0.0
    failures: list[Refusal] = field(default_factory=list)
    thinking: str = "Looking at the parent's schedule and the notebook first."
    requests: list[dict[str, Any]] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cache = PromptCache()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> StandinServer:
        self._server = _QuietServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def respond(self, body: dict[str, Any], headers: Mapping[str, str]) -> tuple[int, dict, bytes]:
        """(status, headers, payload) for one request."""
        with self._lock:
            self.requests.append(body)
            failure = self.failures.pop(0) if self.failures else None
        refusal = failure or validate(body, headers)
        if refusal is not None:
            if failure is None:
                self.refused.append(refusal)
            extra = {"retry-after": "0"} if refusal.status in (429, 529) else {}
            if refusal.status == 429:
                extra.update(rate_limit_headers(requests_left=0, reset_in_s=0))
            return refusal.status, {"content-type": "application/json", **extra}, json.dumps(
                error_body(refusal)).encode()
        if self.delay_s:
            time.sleep(self.delay_s)
        text = self.answer(body)
        usage = {**self.cache.usage(body), "output_tokens": tokens(self.thinking + text)}
        message = message_json(body["model"], text, usage, thinking=self.thinking)
        out = {"request-id": "req_011CSHoEeqs5C35K2UUqR7Fy", **rate_limit_headers()}
        if body.get("stream"):
            return 200, {"content-type": "text/event-stream", **out}, sse_body(message)
        return 200, {"content-type": "application/json", **out}, json.dumps(message).encode()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client closing its keep-alive connection is not news


def _handler(api: StandinServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if self.path.split("?")[0].rstrip("/") != "/v1/messages":
                refusal = Refusal(404, "not_found_error", self.path)
            elif not isinstance(body, dict):
                refusal = Refusal(400, "invalid_request_error", "body: not valid JSON")
            else:
                refusal = None
            if refusal is not None:
                status, headers = refusal.status, {"content-type": "application/json"}
                payload = json.dumps(error_body(refusal)).encode()
            else:
                status, headers, payload = api.respond(body, dict(self.headers))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

    return Handler
