"""The transport-fault matrix: every fault x sync/async x stream/chat x each chat and raw dialect.

Each case runs a real client against the scripted loopback server (which echoes the API key
back in every error it sends) and checks what a user sees: the error's type, the partial text
kept (a stream's cut-off answer, in ``StreamInterrupted.partial``), how many requests reached
the server (retries), and that the key appears nowhere in the error (``str``, ``repr``,
``.body``, ``.error``, ``.partial``, its cause).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from chatlane import CompletionChat, OpenAIChat, RetryPolicy, Timeouts
from chatlane.backends.base import Backend
from chatlane.errors import (
    ChatlaneError,
    GatewayTimeout,
    Overloaded,
    PaymentRequired,
    RateLimited,
    ServerError,
    StreamInterrupted,
    TimeoutException,
    TransportError,
    UnexpectedResponse,
)
from chatlane.response import ChatResponse
from support import CLOSE, RESET, Pause, Reply, ScriptedServer

KEY = "sk-matrix-0123456789abcdef"
RETRY = RetryPolicy(max_retries=1, initial_backoff=0.0, jitter=0.0)
TIMEOUTS = Timeouts(connect=2.0, read=0.2, idle=0.15, total=5.0)

CHAT_DIALECTS = ("openai", "vllm", "llama.cpp", "aleph-alpha")
RAW_DIALECTS = ("openai", "llama.cpp", "aleph-alpha")
BACKENDS = [("chat", d) for d in CHAT_DIALECTS] + [("raw", d) for d in RAW_DIALECTS]


# What each dialect's server sends: a piece of streamed text, the end of a stream, a whole
# answer.


def text_chunk(kind: str, dialect: str, text: str) -> dict[str, Any]:
    if kind == "chat":
        return {"id": "c1", "choices": [{"index": 0, "delta": {"content": text}}]}
    if dialect == "openai":
        return {"id": "c1", "choices": [{"index": 0, "text": text, "finish_reason": None}]}
    if dialect == "llama.cpp":
        return {"content": text, "stop": False}
    return {"type": "stream_chunk", "index": 0, "completion": text}


def final_chunk(kind: str, dialect: str) -> dict[str, Any]:
    if kind == "chat":
        return {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    if dialect == "openai":
        return {"id": "c1", "choices": [{"index": 0, "text": "", "finish_reason": "stop"}]}
    if dialect == "llama.cpp":
        return {"content": "", "stop": True, "stop_type": "eos"}
    return {"type": "stream_summary", "index": 0, "finish_reason": "end_of_text"}


def whole(kind: str, dialect: str, text: str) -> dict[str, Any]:
    if kind == "chat":
        return {
            "id": "c1",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
        }
    if dialect == "openai":
        return {"id": "c1", "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}
    if dialect == "llama.cpp":
        return {"content": text, "stop": True, "stop_type": "eos"}
    return {"completions": [{"completion": text, "finish_reason": "end_of_text"}]}


def sse(obj: Any) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def echoed(status: int) -> Reply:
    """An error status whose body echoes the key, as some proxies and servers do."""
    return Reply.error(status, f"bad request with Authorization: Bearer {KEY}", code=status)


IN_BAND = {"error": {"message": f"engine died; key {KEY}", "code": 500, "type": "server_error"}}


@dataclass(frozen=True)
class Fault:
    name: str
    stream: Callable[[str, str], list[Reply]] | None
    """The replies to a streamed request (None: the fault only concerns whole answers)."""
    chat: Callable[[str, str], list[Reply]] | None
    """The replies to a non-streamed request."""
    error: type[ChatlaneError] | None
    """The error a streamed call raises (None: it succeeds)."""
    chat_error: type[ChatlaneError] | None
    partial: str | None
    """The text a streamed call keeps in StreamInterrupted.partial."""
    requests: int
    cause: type[Exception] | None = None
    """The type of StreamInterrupted's cause, when it has one."""


def _stream(*parts: Any) -> Callable[[str, str], list[Reply]]:
    def build(kind: str, dialect: str) -> list[Reply]:
        body: list[Any] = []
        done = kind == "chat" or dialect == "openai"
        for part in parts:
            if isinstance(part, str) and part.startswith("text:"):
                body.append(sse(text_chunk(kind, dialect, part[5:])))
            elif part == "final":
                body.append(sse(final_chunk(kind, dialect)))
                if done:
                    body.append("data: [DONE]\n\n")
            else:
                body.append(part)
        return [Reply(200, body, {"Content-Type": "text/event-stream"})]

    return build


def _replies(*replies: Reply) -> Callable[[str, str], list[Reply]]:
    return lambda kind, dialect: list(replies)


HTML = Reply(200, "<!doctype html><html><body>Sign in</body></html>", {"Content-Type": "text/html"})


FAULTS = [
    Fault(
        "clean",
        _stream("text:Hello", "text: world", "final"),
        lambda kind, dialect: [Reply.json(whole(kind, dialect, "Hello world"))],
        None,
        None,
        None,
        1,
    ),
    Fault(
        "reset-before-headers",
        _replies(Reply.reset_before_headers()),
        _replies(Reply.reset_before_headers()),
        TransportError,
        TransportError,
        None,
        2,
    ),
    Fault(
        "reset-mid-stream",
        _stream("text:Hello", "text: wor", RESET),
        _replies(Reply(200, [b'{"id": "c1", "choi', RESET], {"Content-Type": "application/json"})),
        StreamInterrupted,
        TransportError,
        "Hello wor",
        1,
        TransportError,
    ),
    Fault(
        "chunked-body-ends",
        _stream("text:Hello", "text: wor"),
        _replies(Reply(200, [b'{"id": "c1", "choi'], {"Content-Type": "application/json"})),
        StreamInterrupted,
        UnexpectedResponse,
        "Hello wor",
        1,
    ),
    Fault(
        "closed-mid-stream",
        _stream("text:Hello", CLOSE),
        _replies(Reply(200, [b'{"id": "c1"', CLOSE], {"Content-Type": "application/json"})),
        StreamInterrupted,
        TransportError,
        "Hello",
        1,
        TransportError,
    ),
    Fault(
        "closed-after-headers",
        _stream(CLOSE),
        _replies(Reply(200, [CLOSE], {"Content-Type": "application/json"})),
        UnexpectedResponse,
        TransportError,
        None,
        1,
    ),
    Fault(
        "empty-200",
        _stream(),
        _replies(Reply(200, b"", {"Content-Type": "application/json"})),
        UnexpectedResponse,
        UnexpectedResponse,
        None,
        1,
    ),
    Fault(
        "html-200", _replies(HTML), _replies(HTML), UnexpectedResponse, UnexpectedResponse, None, 1
    ),
    Fault(
        "402",
        _replies(echoed(402)),
        _replies(echoed(402)),
        PaymentRequired,
        PaymentRequired,
        None,
        1,
    ),
    Fault("429", _replies(echoed(429)), _replies(echoed(429)), RateLimited, RateLimited, None, 2),
    Fault("500", _replies(echoed(500)), _replies(echoed(500)), ServerError, ServerError, None, 2),
    Fault("503", _replies(echoed(503)), _replies(echoed(503)), Overloaded, Overloaded, None, 2),
    Fault(
        "504", _replies(echoed(504)), _replies(echoed(504)), GatewayTimeout, GatewayTimeout, None, 2
    ),
    Fault(
        "in-band-error-first",
        _stream(sse(IN_BAND)),
        _replies(Reply.json(IN_BAND)),
        ServerError,
        ServerError,
        None,
        1,
    ),
    Fault(
        "in-band-error-mid-stream",
        _stream("text:Hello", sse(IN_BAND)),
        None,
        StreamInterrupted,
        None,
        "Hello",
        1,
        ServerError,
    ),
    Fault(
        "keep-alive-only",
        _stream("text:Hello", *[": keep-alive\n\n", Pause(0.03)] * 20, "final"),
        None,
        StreamInterrupted,
        None,
        "Hello",
        1,
        TimeoutException,
    ),
    Fault(
        "stalled",
        _stream("text:Hello", Pause(2.0), "final"),
        _replies(Reply(200, b"{}", {"Content-Type": "application/json"}, delay=2.0)),
        StreamInterrupted,
        TimeoutException,
        "Hello",
        1,
        TimeoutException,
    ),
]


def make(kind: str, dialect: str, url: str) -> Backend:
    if kind == "chat":
        return OpenAIChat(
            url + "/v1", api_key=KEY, model="m", dialect=dialect, retry=RETRY, timeouts=TIMEOUTS
        )
    base = url + "/v1" if dialect == "openai" else url
    return CompletionChat(
        base, "llama3.1", dialect=dialect, api_key=KEY, model="m", retry=RETRY, timeouts=TIMEOUTS
    )


def path_of(kind: str, dialect: str) -> str:
    if kind == "chat":
        return "/v1/chat/completions"
    return {"openai": "/v1/completions", "llama.cpp": "/completion", "aleph-alpha": "/complete"}[
        dialect
    ]


def call(llm: Backend, mode: str, streamed: bool) -> ChatResponse | ChatlaneError:
    """One call as a user makes it; the response or the chatlane error."""
    if mode == "sync":
        try:
            with llm:
                if streamed:
                    with llm.stream("Hi") as s:
                        for _ in s:
                            pass
                        return s.response
                return llm.chat("Hi")
        except ChatlaneError as e:
            return e

    async def go() -> ChatResponse | ChatlaneError:
        try:
            async with llm:
                if streamed:
                    async with llm.astream("Hi") as s:
                        async for _ in s:
                            pass
                        return await s.get_response()
                return await llm.achat("Hi")
        except ChatlaneError as e:
            return e

    return asyncio.run(go())


def leaks(error: BaseException) -> list[str]:
    """Where the key appears in an error (and its causes)."""
    found = []
    seen: BaseException | None = error
    while seen is not None:
        places = {
            "str": str(seen),
            "repr": repr(seen),
            "body": getattr(seen, "body", ""),
            "error": json.dumps(getattr(seen, "error", None), default=str),
            "text": getattr(seen, "text", "") or "",
            "head": getattr(seen, "head", "") or "",
        }
        partial = getattr(seen, "partial", None)
        if partial is not None:
            places["partial"] = repr(partial)
        found += [f"{type(seen).__name__}.{k}" for k, v in places.items() if KEY in str(v)]
        seen = seen.__cause__ or seen.__context__
    return found


CASES = [
    pytest.param(
        fault,
        kind,
        dialect,
        mode,
        streamed,
        id=f"{fault.name}-{kind}-{dialect}-{mode}-{'stream' if streamed else 'chat'}",
    )
    for fault in FAULTS
    for kind, dialect in BACKENDS
    for mode in ("sync", "async")
    for streamed in (True, False)
    if (fault.stream if streamed else fault.chat) is not None
]


@pytest.fixture(scope="module")
def shared_server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        yield server


@pytest.mark.parametrize(("fault", "kind", "dialect", "mode", "streamed"), CASES)
def test_fault(
    shared_server: ScriptedServer, fault: Fault, kind: str, dialect: str, mode: str, streamed: bool
) -> None:
    build = fault.stream if streamed else fault.chat
    assert build is not None
    server = shared_server
    server.reset()
    server.route(path_of(kind, dialect), *build(kind, dialect))
    result = call(make(kind, dialect, server.url), mode, streamed)
    expected = fault.error if streamed else fault.chat_error
    if expected is None:
        assert isinstance(result, ChatResponse), result
        assert result.message.text == "Hello world"
    else:
        assert isinstance(result, expected), repr(result)
        assert not leaks(result), leaks(result)
        if streamed and fault.partial is not None:
            assert isinstance(result, StreamInterrupted)
            assert result.partial.message.text == fault.partial
            assert result.partial.finish_reason == "incomplete"
        if streamed and fault.cause is not None:
            assert isinstance(result.__cause__, fault.cause), repr(result.__cause__)
        if isinstance(result, UnexpectedResponse):
            # It names the content type and the first bytes it saw.
            assert "content type" in str(result)
            if fault.name == "html-200":
                assert result.content_type == "text/html"
                assert result.head.startswith("<!doctype html>")
                assert "<!doctype html>" in str(result)
    assert len(server.requests) == fault.requests
    for request in server.requests:
        assert KEY in request.headers.get("authorization", "")
