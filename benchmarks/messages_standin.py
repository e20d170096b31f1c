"""A local Messages-API server for benchmarks: answers every call after `delay_s` with a real
SEARCH/REPLACE edit of the parent's source, non-streaming or as server-sent events.

The `llm` operator reaches it through `base_url`, exactly as it would reach a local model
server, so a benchmark measures the real client, prompt and edit path. Each answer changes
one constant of the sleep template to a value no earlier answer used, so no child is a
duplicate; the constants that set the evaluation's length are never touched.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Constants an answer may change (a line `NAME = value  # comment` of the sleep template).
EDITABLE = ("EMBED_LR", "MATRIX_LR", "UNEMBED_LR", "SCALAR_LR", "WARMDOWN_FRAC")
USAGE = {"input_tokens": 3000, "output_tokens": 120, "cache_read_input_tokens": 2500,
         "cache_creation_input_tokens": 0}


def edit_answer(parent_text: str, serial: int) -> str:
    """A DESCRIPTION/RATIONALE header and one SEARCH/REPLACE block on the parent's source."""
    name = EDITABLE[serial % len(EDITABLE)]
    match = re.search(rf"^{name} = ([^\s#]+)(.*)$", parent_text, re.MULTILINE)
    if match is None:
        return "DESCRIPTION: nothing to change\nRATIONALE: no editable constant found.\n"
    old = match.group(0)
    factor = 1.0 + 0.001 * (serial + 1)
    new = f"{name} = {float(match.group(1)) * factor:.9g}{match.group(2)}"
    # a description of its own, as a model's ideas differ (a novelty filter compares them)
    return (f"DESCRIPTION: idea {serial}: {name.lower()} x{factor:.4f}\n"
            f"RATIONALE: stand-in answer {serial}.\n\n"
            f"train.py\n<<<<<<< SEARCH\n{old}\n=======\n{new}\n>>>>>>> REPLACE\n")


def _parent_text(body: dict[str, Any]) -> str:
    content = body["messages"][0]["content"]
    if isinstance(content, str):
        return content
    return "\n".join(block.get("text", "") for block in content)


def _message(body: dict[str, Any], serial: int, text: str) -> dict[str, Any]:
    return {"id": f"msg_{serial:06d}", "type": "message", "role": "assistant",
            "model": body.get("model", "stand-in"), "stop_reason": "end_turn",
            "stop_sequence": None, "content": [{"type": "text", "text": text}],
            "usage": dict(USAGE)}


def _events(message: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The Messages API's event stream for one finished message, text in a few deltas."""
    start = {**message, "content": [], "stop_reason": None,
             "usage": {**message["usage"], "output_tokens": 1}}
    yield "message_start", {"type": "message_start", "message": start}
    yield "content_block_start", {"type": "content_block_start", "index": 0,
                                  "content_block": {"type": "text", "text": ""}}
    text = message["content"][0]["text"]
    for i in range(0, len(text), 64):
        yield "content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "text_delta", "text": text[i:i + 64]}}
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    yield "message_delta", {"type": "message_delta",
                            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"output_tokens": message["usage"]["output_tokens"]}}
    yield "message_stop", {"type": "message_stop"}


class MessagesStandIn:
    """`with MessagesStandIn(delay_s=1.5) as server:` ... `base_url=server.url`."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> MessagesStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_serial(self) -> int:
        with self._lock:
            self.calls += 1
            return self.calls - 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                serial = standin._next_serial()
                time.sleep(standin.delay_s)  # the model "thinking"
                message = _message(body, serial, edit_answer(_parent_text(body), serial))
                if body.get("stream"):
                    self._stream(message)
                else:
                    self._send(200, "application/json", json.dumps(message).encode())

            def _send(self, status: int, kind: str, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _stream(self, message: dict[str, Any]) -> None:
                payload = b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                                   for name, data in _events(message))
                self._send(200, "text/event-stream", payload)

            def log_message(self, *args: object) -> None:
                pass

        return Handler
