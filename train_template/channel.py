"""The wire between the referee and its untrusted roles: length-prefixed messages on a socket.

A message is a 4-byte big-endian header length, a JSON object header (at most MAX_HEADER
bytes, with a string "type"), then, when the header says "nbytes", that many payload bytes.
The referee reads every message as input from a stranger: it names the types it expects and
the most payload bytes it accepts, and anything else is a ProtocolError (the role broke the
protocol), never a crash of the referee. Stdlib only: the roles import it too.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Collection

MAX_HEADER = 4096
_LEN = struct.Struct(">I")


class ProtocolError(Exception):
    """The other side sent something the protocol does not allow (or hung up)."""


class ChannelClosed(ProtocolError):
    """The other side closed the channel (it exited, or was killed)."""


class Deadline(ProtocolError):
    """No whole message arrived before the deadline."""


class Channel:
    """One end of a socketpair, with deadlines for reading from an untrusted peer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def from_fd(cls, fd: int) -> Channel:
        return cls(socket.socket(fileno=fd))

    def close(self) -> None:
        self.sock.close()

    def send(self, header: dict, payload: bytes | memoryview | None = None) -> None:
        if payload is not None:
            header = {**header, "nbytes": len(payload) if isinstance(payload, bytes)
                      else payload.nbytes}
        data = json.dumps(header, separators=(",", ":")).encode()
        if len(data) > MAX_HEADER:
            raise ProtocolError(f"header of {len(data)} bytes is over {MAX_HEADER}")
        self.sock.sendall(_LEN.pack(len(data)) + data)
        if payload is not None:
            self.sock.sendall(payload)

    def receive(self, types: Collection[str], *, max_payload: int = 0,
                deadline: float | None = None) -> tuple[dict, bytearray | None]:
        """The next message, which must be one of `types` with at most `max_payload` bytes.

        deadline: time.monotonic() by which the whole message must have arrived (None: wait).
        """
        (size,) = _LEN.unpack(self._exactly(_LEN.size, deadline))
        if size > MAX_HEADER:
            raise ProtocolError(f"message header of {size} bytes (the limit is {MAX_HEADER})")
        try:
            header = json.loads(self._exactly(size, deadline))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProtocolError(f"message header is not JSON: {exc}") from exc
        if not isinstance(header, dict) or header.get("type") not in types:
            kind = header.get("type") if isinstance(header, dict) else type(header).__name__
            raise ProtocolError(f"unexpected message {str(kind)[:60]!r} (expected one of "
                                f"{', '.join(sorted(types))})")
        nbytes = header.get("nbytes")
        if nbytes is None:
            return header, None
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or not 0 <= nbytes <= max_payload:
            raise ProtocolError(f"message {header['type']!r} declares a payload of {nbytes!r} "
                                f"bytes (at most {max_payload} allowed)")
        return header, self._exactly(nbytes, deadline)

    def _exactly(self, count: int, deadline: float | None) -> bytearray:
        buffer = bytearray(count)
        view, got = memoryview(buffer), 0
        while got < count:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Deadline("no whole message before the deadline")
                self.sock.settimeout(left)
            else:
                self.sock.settimeout(None)
            try:
                n = self.sock.recv_into(view[got:], count - got)
            except TimeoutError as exc:
                raise Deadline("no whole message before the deadline") from exc
            except OSError as exc:
                raise ChannelClosed(f"the channel failed: {exc}") from exc
            if n == 0:
                raise ChannelClosed("the other side closed the channel")
            got += n
        return buffer


def socketpair() -> tuple[Channel, int]:
    """(the referee's end, the fd to pass to the role); the role's fd is inheritable."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.set_inheritable(True)
    fd = theirs.detach()
    return Channel(mine), fd
