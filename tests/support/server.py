"""`ScriptedServer`: a real HTTP/1.1 server on 127.0.0.1 that answers from a script.

Tests import it as ``from support import Reply, ScriptedServer`` (pytest puts ``tests/`` on
the path), start it, tell it what to answer on each route, point a client at ``server.url``, and
then look at what the client sent (``server.requests``) and how it behaved (``server.connections``,
``server.disconnects``). It writes raw bytes on a real socket, so it can misbehave the way real
servers and networks do: delay, stall mid-body, reset the connection before the headers or in
the middle of the body, or stream a Server-Sent-Events transcript byte for byte.

```python
with ScriptedServer() as server:
    server.route(
        "/v1/chat/completions",
        Reply.error(503, "overloaded"),                 # first request
        Reply.sse([{"choices": [...]}, Pause(0.1), RESET]),  # second: two events, then a reset
    )
    ... client(server.url + "/v1") ...
    assert server.requests[1].json()["stream"] is True
```

A route's replies are used in order, the last one repeating (``repeat=False`` makes an
exhausted route answer 500 instead). A reply may also be a function of the `Recorded` request.
A request without a route gets a 404 with an OpenAI-style error body.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "CLOSE",
    "RESET",
    "Pause",
    "Recorded",
    "Reply",
    "ScriptedServer",
    "free_port",
]


@dataclass(frozen=True, slots=True)
class Pause:
    """A body part: wait this many seconds before the next part (a stall when long)."""

    seconds: float


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


RESET = _Marker("RESET")
"""A body part: reset the connection (TCP RST) here, mid-body."""
CLOSE = _Marker("CLOSE")
"""A body part: close the connection here without ending the body properly."""

Part = bytes | str | Pause | _Marker


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer.

    ``body`` is bytes or text (sent with a Content-Length) or a sequence of parts (sent with
    chunked encoding, one chunk per part): bytes/str pieces, `Pause`, `RESET`, `CLOSE`.
    """

    status: int = 200
    body: bytes | str | Sequence[Part] = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before the status line (time to first byte)."""
    reset: bool = False
    """Reset the connection instead of answering (after ``delay``): no headers at all."""
    close: bool = False
    """Close the connection after this reply (no keep-alive)."""

    @classmethod
    def json(
        cls, obj: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """A JSON answer."""
        return cls(
            status,
            json.dumps(obj),
            {"Content-Type": "application/json", **(headers or {})},
        )

    @classmethod
    def error(
        cls,
        status: int,
        message: str,
        *,
        type: str = "error",
        code: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """An error status with an OpenAI-style ``{"error": {...}}`` body."""
        return cls.json(
            {"error": {"message": message, "type": type, "code": code}},
            status=status,
            headers=headers,
        )

    @classmethod
    def sse(
        cls,
        events: Iterable[Any],
        *,
        done: bool = True,
        pause: float = 0.0,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """A Server-Sent-Events stream: each dict or list becomes ``data: <json>``, each str is
        sent as it is (raw SSE text, malformed on purpose or not); `Pause`, `RESET` and
        `CLOSE` act where they stand. ``done`` ends the stream with ``data: [DONE]``;
        ``pause`` waits between events."""
        parts: list[Part] = []
        for event in events:
            if isinstance(event, Pause | _Marker):
                parts.append(event)
                continue
            if pause and parts:
                parts.append(Pause(pause))
            if isinstance(event, str | bytes):
                parts.append(event)
            else:
                parts.append(f"data: {json.dumps(event)}\n\n")
        if done:
            if pause and parts:
                parts.append(Pause(pause))
            parts.append("data: [DONE]\n\n")
        return cls(
            200,
            parts,
            {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **(headers or {})},
        )

    @classmethod
    def transcript(cls, text: str, *, pause: float = 0.0) -> Reply:
        """A recorded SSE transcript, sent byte for byte, one write per event block."""
        blocks: list[str] = []
        current = ""
        for line in text.splitlines(keepends=True):
            current += line
            if line in ("\n", "\r\n", "\r"):
                blocks.append(current)
                current = ""
        if current:
            blocks.append(current)
        return cls.sse(blocks, done=False, pause=pause)

    @classmethod
    def reset_before_headers(cls, *, delay: float = 0.0) -> Reply:
        """Reset the connection without sending anything."""
        return cls(reset=True, delay=delay)


@dataclass(frozen=True, slots=True)
class Recorded:
    """A request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Header names in lower case."""
    body: bytes
    connection: int
    """Which TCP connection it came on (1 for the first the server accepted)."""
    header_lines: tuple[tuple[str, str], ...] = ()
    """Every header as sent, in order, names as sent (repeated names stay repeated)."""

    def json(self) -> Any:
        return json.loads(self.body)


Responder = Reply | Callable[[Recorded], Reply]


def free_port() -> int:
    """A local port nothing listens on (for "connection refused")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class _Route:
    def __init__(self, replies: Sequence[Responder], repeat: bool) -> None:
        self.replies = list(replies)
        self.repeat = repeat
        self.used = 0


class ScriptedServer:
    """The server (see the module docstring). Start it with ``with`` or `start`/`stop`."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], _Route] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: set[socket.socket] = set()
        self.requests: list[Recorded] = []
        self.connections = 0
        """TCP connections accepted so far."""
        self.disconnects = 0
        """Replies cut short because the client closed the connection."""
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    # Script

    def route(
        self, path: str, *replies: Responder, method: str = "POST", repeat: bool = True
    ) -> None:
        """Script the answers for ``method path`` (the query string is ignored when matching)."""
        if not replies:
            raise ValueError("a route needs at least one reply")
        with self._lock:
            self._routes[(method.upper(), path)] = _Route(replies, repeat)

    def reset(self) -> None:
        """Forget the script and what was recorded, so one running server can serve many
        tests (the transport-fault matrix starts one for all its cases)."""
        with self._lock:
            self._routes.clear()
            self.requests.clear()
            self.connections = 0
            self.disconnects = 0

    def _reply_for(self, request: Recorded) -> Reply:
        with self._lock:
            route = self._routes.get((request.method, request.path))
            if route is None:
                return Reply.error(404, f"no route for {request.method} {request.path}")
            if route.used < len(route.replies):
                responder = route.replies[route.used]
            elif route.repeat:
                responder = route.replies[-1]
            else:
                return Reply.error(500, f"the script for {request.path} is used up")
            route.used += 1
        return responder(request) if callable(responder) else responder

    # Life cycle

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        if self._server is None:
            raise RuntimeError("the server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                server._serve(self.request)

        class TCPServer(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            block_on_close = False

        self._server = TCPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def wait_for_disconnects(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until ``count`` replies were cut short by the client; whether they were."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.disconnects >= count:
                return True
            time.sleep(0.01)
        return self.disconnects >= count

    # Serving

    def _serve(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            connection = self.connections
            self._sockets.add(sock)
        buffer = b""
        try:
            while not self._stop.is_set():
                parsed = self._read_request(sock, buffer, connection)
                if parsed is None:
                    return
                request, buffer = parsed
                with self._lock:
                    self.requests.append(request)
                reply = self._reply_for(request)
                if not self._send(sock, reply) or reply.close:
                    return
        finally:
            with self._lock:
                self._sockets.discard(sock)

    def _read_request(
        self, sock: socket.socket, buffer: bytes, connection: int
    ) -> tuple[Recorded, bytes] | None:
        while b"\r\n\r\n" not in buffer:
            try:
                data = sock.recv(65536)
            except OSError:
                return None
            if not data:
                return None
            buffer += data
        head, _, rest = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        header_lines: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
            header_lines.append((name.strip(), value.strip()))
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            try:
                data = sock.recv(65536)
            except OSError:
                return None
            if not data:
                return None
            rest += data
        body, rest = rest[:length], rest[length:]
        url = urlsplit(target)
        recorded = Recorded(
            method.upper(),
            url.path,
            dict(parse_qsl(url.query)),
            headers,
            body,
            connection,
            tuple(header_lines),
        )
        return recorded, rest

    def _pause(self, sock: socket.socket, seconds: float) -> bool:
        """Wait, watching for the client closing the connection; False when it did."""
        end = time.monotonic() + seconds
        while not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return True
            readable, _, _ = select.select([sock], [], [], min(left, 0.05))
            if readable:
                try:
                    data = sock.recv(1, socket.MSG_PEEK)
                except OSError:
                    data = b""
                if not data:
                    self._disconnected()
                    return False
        return False

    def _disconnected(self) -> None:
        with self._lock:
            self.disconnects += 1

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def _send(self, sock: socket.socket, reply: Reply) -> bool:
        """Send one reply; False when the connection must not be used again."""
        if reply.delay and not self._pause(sock, reply.delay):
            return False
        if reply.reset:
            self._reset(sock)
            return False
        headers = {k.lower(): v for k, v in reply.headers.items()}
        body = reply.body
        chunked = not isinstance(body, bytes | str)
        lines = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}"]
        for name, value in reply.headers.items():
            lines.append(f"{name}: {value}")
        if "content-type" not in headers:
            lines.append("Content-Type: text/plain")
        data = b""
        if isinstance(body, str):
            data = body.encode()
        elif isinstance(body, bytes):
            data = body
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        else:
            lines.append(f"Content-Length: {len(data)}")
        if reply.close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        try:
            if not chunked:
                sock.sendall(head + data)
                return True
            sock.sendall(head)
            assert not isinstance(body, bytes | str)
            for part in body:
                if isinstance(part, Pause):
                    if not self._pause(sock, part.seconds):
                        return False
                elif part is RESET:
                    self._reset(sock)
                    return False
                elif part is CLOSE:
                    sock.shutdown(socket.SHUT_RDWR)
                    return False
                else:
                    raw = part.encode() if isinstance(part, str) else part
                    assert isinstance(raw, bytes)
                    if raw:
                        sock.sendall(b"%x\r\n%s\r\n" % (len(raw), raw))
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            self._disconnected()
            return False
        return True


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
