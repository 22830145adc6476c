"""Test helpers for CompletionChat: a scripted completion server on 127.0.0.1 and a small
prompt format implementing the `PromptFormat` protocol (so the backend is tested against the
protocol, not one format's details)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from chatlane.events import (
    ChatEvent,
    Finished,
    TextDelta,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStarted,
)
from chatlane.formats.base import ParsedOutput, Prompt
from chatlane.messages import ToolCall
from chatlane.request import ChatRequest
from chatlane.response import FinishReason

# A scripted server.


@dataclass
class Reply:
    """One scripted answer: a status, headers, and a body sent in pieces (with a pause before
    each piece); ``reset_after`` closes the connection after that many pieces."""

    status: int = 200
    body: Sequence[bytes] = ()
    headers: dict[str, str] = field(default_factory=dict)
    pause: float = 0.0
    reset_after: int | None = None

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Reply:
        return cls(status, [json.dumps(value).encode()], {"Content-Type": "application/json"})

    @classmethod
    def sse(cls, *chunks: Any, done: bool = True, pause: float = 0.0) -> Reply:
        events = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks]
        if done:
            events.append(b"data: [DONE]\n\n")
        return cls(200, events, {"Content-Type": "text/event-stream"}, pause=pause)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class ScriptedServer:
    """Answers each request with the next `Reply` of its script; keeps what it received."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.received: list[Received] = []
        self.abandoned: list[int] = []
        """For each stream the client left early: how many pieces were sent."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw
                server.received.append(
                    Received("POST", self.path, dict(self.headers.items()), body)
                )
                reply = server.script.pop(0) if server.script else Reply.json({}, 500)
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                streaming = reply.headers.get("Content-Type") == "text/event-stream"
                if reply.reset_after is None and not streaming:
                    data = b"".join(reply.body)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                # Chunked, so that a connection closed early is a broken body, not its end.
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                sent = 0
                try:
                    for i, piece in enumerate(reply.body):
                        if reply.reset_after is not None and i >= reply.reset_after:
                            break
                        time.sleep(reply.pause)
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.flush()
                        sent += 1
                    else:
                        self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    # The client went away: like a server that stops generating.
                    server.abandoned.append(sent)
                self.close_connection = True

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


# A small prompt format: Llama-like special tokens, whole-JSON tool calls.

SPECIALS = {
    "<|begin_of_text|>": 1000,
    "<|start_header_id|>": 1001,
    "<|end_header_id|>": 1002,
    "<|eot_id|>": 1003,
    "<|eom_id|>": 1004,
    "<|python_tag|>": 1005,
}
_NAMES = {v: k for k, v in SPECIALS.items()}


class TinyTokenizer:
    """Special tokens by id; every other character is its code point."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def special(self, name: str) -> int:
        return SPECIALS[name]

    def is_special(self, token: int) -> bool:
        return token in _NAMES

    def decode(self, tokens: Sequence[int]) -> str:
        return "".join(_NAMES.get(t) or chr(t) for t in tokens)


class TinyParser:
    """Text streams through; an output starting with ``{`` is held and read as one call."""

    def __init__(self, request: ChatRequest | None) -> None:
        self._buffer = ""
        self._mode: str | None = None
        self.fed: list[str] = []

    def feed(self, text: str) -> list[ChatEvent]:
        self.fed.append(text)
        if self._mode is None and text:
            self._mode = "call" if text.lstrip().startswith("{") else "text"
        if self._mode == "call":
            self._buffer += text
            return []
        return [TextDelta(text)] if text else []

    def finish(
        self, stop_sequence: str | None = None, *, truncated: bool = False
    ) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        reason = FinishReason.LENGTH if truncated else FinishReason.STOP
        if self._mode == "call":
            try:
                value = json.loads(self._buffer)
            except ValueError:
                value = None
            if isinstance(value, dict) and not truncated:
                args = json.dumps(value.get("parameters", {}))
                call = ToolCall.from_raw("call_1", str(value["name"]), args)
                events += [
                    ToolCallStarted(0, "call_1", call.name),
                    ToolCallDelta(0, args),
                    ToolCallDone(0, call),
                ]
                reason = FinishReason.TOOL_CALLS
            else:
                events.append(TextDelta(self._buffer))
        events.append(Finished(reason, stop_sequence=stop_sequence))
        return events


class TinyFormat:
    """Renders ``<|start_header_id|>role<|end_header_id|>\\n\\ntext<|eot_id|>`` turns."""

    name = "tiny"
    stop_sequences = ("<|eot_id|>", "<|eom_id|>")

    def __init__(self) -> None:
        self.tokenizer = TinyTokenizer()
        self.parsers: list[TinyParser] = []

    def render(self, request: ChatRequest) -> Prompt:
        parts: list[tuple[str, bool]] = [("<|begin_of_text|>", True)]
        for m in request.messages:
            parts += [
                ("<|start_header_id|>", True),
                (m.role.value, False),
                ("<|end_header_id|>", True),
                ("\n\n" + m.text, False),
                ("<|eot_id|>", True),
            ]
        parts += [("<|start_header_id|>", True), ("assistant", False), ("<|end_header_id|>", True)]
        parts.append(("\n\n", False))
        tokens: list[int] = []
        for text, special in parts:
            tokens += [SPECIALS[text]] if special else self.tokenizer.encode(text)
        return Prompt("".join(t for t, _ in parts), tuple(tokens))

    def parse(
        self, raw: str, request: ChatRequest | None = None, *, stop_sequence: str | None = None
    ) -> ParsedOutput:
        raise NotImplementedError

    def stream_parser(self, request: ChatRequest | None = None) -> TinyParser:
        parser = TinyParser(request)
        self.parsers.append(parser)
        return parser


def sse_lines(chunks: Iterator[Any]) -> list[bytes]:
    return [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks]


# Until chatlane.backends.transport is available on this branch, the tests hand CompletionChat
# this minimal transport (the same four operations) over httpx.


class LoopbackTransport:
    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/") + "/"
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=10)
        self._aclient = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=10)

    @staticmethod
    def _check(status: int, text: str) -> None:
        from chatlane.errors import APIStatusError, BadRequest, ServerError

        if status < 400:
            return
        cls = (
            BadRequest if status in (400, 422) else ServerError if status >= 500 else APIStatusError
        )
        raise cls(f"HTTP {status}", status_code=status, body=text)

    def post_json(self, path: str, body: Any) -> Any:
        r = self._client.post(path, json=body)
        self._check(r.status_code, r.text)
        return r.json()

    async def apost_json(self, path: str, body: Any) -> Any:
        r = await self._aclient.post(path, json=body)
        self._check(r.status_code, r.text)
        return r.json()

    def stream_json(self, path: str, body: Any) -> Iterator[Any]:
        import httpx

        from chatlane.errors import TransportError

        with self._client.stream("POST", path, json=body) as r:
            if r.status_code >= 400:
                r.read()
                self._check(r.status_code, r.text)
            decoder = _SSE()
            try:
                for data in r.iter_raw():
                    yield from decoder.feed(data)
            except httpx.HTTPError as e:
                raise TransportError(str(e)) from e

    async def astream_json(self, path: str, body: Any) -> Any:
        import httpx

        from chatlane.errors import TransportError

        async with self._aclient.stream("POST", path, json=body) as r:
            if r.status_code >= 400:
                await r.aread()
                self._check(r.status_code, r.text)
            decoder = _SSE()
            try:
                async for data in r.aiter_raw():
                    for event in decoder.feed(data):
                        yield event
            except httpx.HTTPError as e:
                raise TransportError(str(e)) from e

    def close(self) -> None:
        self._client.close()

    async def aclose(self) -> None:
        await self._aclient.aclose()
        self._client.close()


class _SSE:
    """Just enough SSE for the scripted server's streams: data lines, blank-line ends."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data.replace(b"\r\n", b"\n")
        out: list[Any] = []
        while b"\n\n" in self._buffer:
            event, self._buffer = self._buffer.split(b"\n\n", 1)
            lines = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
            text = b"\n".join(lines).decode()
            if text and text != "[DONE]":
                from chatlane.errors import ParseError

                try:
                    out.append(json.loads(text))
                except ValueError as e:
                    raise ParseError(f"bad JSON in a stream: {text!r}", text=text) from e
        return out
