"""`OpenAIChat` against a scripted server on 127.0.0.1: requests, transcripts, faults, parity.

Every fault of the chat-endpoint issue is here with the behaviour a user sees: retried and
answered, or the right error carrying what had arrived.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatlane._version import __version__
from chatlane.backends.base import ChatStream
from chatlane.backends.openai_chat import OpenAIChat
from chatlane.backends.transport import RetryPolicy, Timeouts
from chatlane.errors import (
    AuthenticationError,
    ChatlaneError,
    ConnectError,
    InputError,
    ParseError,
    RateLimited,
    ServerError,
    StreamInterrupted,
    TimeoutException,
    TransportError,
)
from chatlane.events import TextDelta
from chatlane.messages import ToolCall
from chatlane.response import ChatResponse, Usage
from support import RESET, Pause, Reply, ScriptedServer, free_port

KEY = "sk-live-abcdef0123456789"
FAST = RetryPolicy(max_retries=2, initial_backoff=0.01, max_backoff=0.02)
TRANSCRIPTS = Path(__file__).parent / "transcripts"
PATH = "/v1/chat/completions"


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def backend(server_url: str, **kw: Any) -> OpenAIChat:
    kw.setdefault("api_key", KEY)
    kw.setdefault("retry", FAST)
    kw.setdefault("model", "m1")
    return OpenAIChat(server_url + "/v1", **kw)


def chunk(content: str | None = None, *, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    d = dict(delta)
    if content is not None:
        d["content"] = content
    return {
        "id": "c1",
        "model": "m1",
        "choices": [{"index": 0, "delta": d, "finish_reason": finish}],
    }


def completion(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion",
        "model": "m1",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        **extra,
    }


def run_chat(mode: str, llm: OpenAIChat, *args: Any, **kw: Any) -> ChatResponse | ChatlaneError:
    """chat or achat; the response or the error (the backend is closed afterwards)."""
    if mode == "sync":
        with llm:
            try:
                return llm.chat(*args, **kw)
            except ChatlaneError as e:
                return e

    async def go() -> ChatResponse | ChatlaneError:
        async with llm:
            try:
                return await llm.achat(*args, **kw)
            except ChatlaneError as e:
                return e

    return asyncio.run(go())


def run_stream(
    mode: str, llm: OpenAIChat, *args: Any, **kw: Any
) -> tuple[list[Any], ChatResponse | ChatlaneError]:
    """stream or astream to the end: the events, and the response or the error."""
    events: list[Any] = []
    if mode == "sync":
        with llm:
            try:
                with llm.stream(*args, **kw) as s:
                    for event in s:
                        events.append(event)
                    return events, s.response
            except ChatlaneError as e:
                return events, e

    async def go() -> ChatResponse | ChatlaneError:
        async with llm:
            try:
                async with llm.astream(*args, **kw) as s:
                    async for event in s:
                        events.append(event)
                    return await s.get_response()
            except ChatlaneError as e:
                return e

    return events, asyncio.run(go())


# Requests


def test_streamed_request_on_the_wire(server: ScriptedServer) -> None:
    server.route(PATH, Reply.transcript((TRANSCRIPTS / "openai_text.sse").read_text()))
    llm = backend(server.url, headers={"X-Team": "a"}, params={"api-version": "1"})
    with llm:
        response = llm.stream("Hi there", temperature=0.5).response
    assert response.message.text == "Hello, wörld 🌍"
    (req,) = server.requests
    assert req.method == "POST"
    assert req.path == PATH
    assert req.query == {"api-version": "1"}
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers["user-agent"] == f"chatlane/{__version__}"
    assert req.headers["accept"] == "text/event-stream"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["x-team"] == "a"
    body = req.json()
    assert body["model"] == "m1"
    assert body["messages"] == [{"role": "user", "content": "Hi there"}]
    assert body["temperature"] == 0.5
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_non_streamed_request_on_the_wire(server: ScriptedServer, mode: str) -> None:
    server.route(PATH, Reply.json(completion("hello")))
    result = run_chat(mode, backend(server.url), "Hi", model="other", max_tokens=5)
    assert isinstance(result, ChatResponse)
    assert result.message.text == "hello"
    assert result.usage == Usage(3, 1, 4)
    assert result.model == "m1"
    assert result.raw == completion("hello")
    (req,) = server.requests
    assert req.headers["accept"] == "application/json"
    body = req.json()
    assert "stream" not in body
    assert body["model"] == "other"
    assert body["max_completion_tokens"] == 5


def test_usage_can_be_left_out_of_streams(server: ScriptedServer) -> None:
    server.route(PATH, Reply.sse([chunk("a", finish="stop")]))
    with backend(server.url, include_usage=False) as llm:
        llm.stream("x").response  # noqa: B018
    assert server.requests[0].json()["stream_options"] == {"include_usage": False}


def test_per_call_options_share_the_pool(server: ScriptedServer) -> None:
    server.route(PATH, Reply.json(completion()))
    with backend(server.url, headers={"X-A": "1"}) as llm:
        llm.chat("a")
        llm.with_options(headers={"X-B": "2"}, params={"trace": "on"}, model="m2").chat("b")
        llm.chat("c")
    first, second, third = server.requests
    assert "x-b" not in first.headers
    assert second.headers["x-a"] == "1"
    assert second.headers["x-b"] == "2"
    assert second.query == {"trace": "on"}
    assert second.json()["model"] == "m2"
    assert third.query == {}
    assert third.json()["model"] == "m1"
    assert server.connections == 1


def test_environment_defaults(monkeypatch: pytest.MonkeyPatch, server: ScriptedServer) -> None:
    server.route(PATH, Reply.json(completion()))
    for name in ("CHATLANE_BASE_URL", "CHATLANE_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(InputError, match="CHATLANE_BASE_URL"):
        OpenAIChat()
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "openai-key")
    with OpenAIChat() as llm:
        assert llm.base_url == server.url + "/v1"
        llm.chat("a")
    monkeypatch.setenv("CHATLANE_BASE_URL", server.url + "/v1/")
    monkeypatch.setenv("CHATLANE_API_KEY", "chatlane-key")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/never")
    with OpenAIChat() as llm:
        llm.chat("b")
    with OpenAIChat(api_key="explicit") as llm:
        llm.chat("c")
    assert [r.headers["authorization"] for r in server.requests] == [
        "Bearer openai-key",
        "Bearer chatlane-key",
        "Bearer explicit",
    ]


def test_unknown_dialect_is_an_input_error() -> None:
    with pytest.raises(InputError, match="dialect 'bedrock'"):
        OpenAIChat("http://127.0.0.1:1/v1", dialect="bedrock")


# Dialects


def test_aleph_alpha_dialect(server: ScriptedServer) -> None:
    server.route(PATH, Reply.transcript((TRANSCRIPTS / "aleph_alpha.sse").read_text()))
    with backend(server.url, dialect="aleph-alpha") as llm:
        response = llm.stream(
            "Hallo",
            max_tokens=10,
            steering_concepts=["_worker/slang"],
            extra={"nice": True, "hosting": "aleph-alpha"},
        ).response
    assert response.message.text == "Guten Tag"
    assert response.usage == Usage(20, 2, 22)
    req = server.requests[0]
    assert req.query == {"nice": "true"}
    body = req.json()
    assert body["maximum_tokens"] == 10
    assert body["steering_concepts"] == ["_worker/slang"]
    assert body["hosting"] == "aleph-alpha"
    assert "nice" not in body


def test_llama_cpp_dialect_sends_the_schema_llama_cpp_accepts(server: ScriptedServer) -> None:
    server.route(PATH, Reply.json(completion('{"n": 3}')))
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    with backend(server.url, dialect="llama.cpp") as llm:
        response = llm.chat("count", response_format=schema)
    assert response.parsed == {"n": 3}
    assert server.requests[0].json()["response_format"] == {"type": "json_object", "schema": schema}


def test_vllm_dialect_passes_extra_sampling_parameters(server: ScriptedServer) -> None:
    server.route(PATH, Reply.json(completion()))
    with backend(server.url, dialect="vllm") as llm:
        llm.chat("x", top_k=20, extra={"min_p": 0.05, "repetition_penalty": 1.1})
    body = server.requests[0].json()
    assert body["top_k"] == 20
    assert body["min_p"] == 0.05
    assert body["repetition_penalty"] == 1.1


# Transcripts


EXPECTED: dict[str, dict[str, Any]] = {
    "openai_text.sse": {
        "text": "Hello, wörld 🌍",
        "finish": "stop",
        "usage": Usage(9, 5, 14, cached_tokens=0, reasoning_tokens=0),
        "model": "gpt-4o-mini",
        "id": "chatcmpl-1",
    },
    "openai_tools.sse": {
        "text": "",
        "finish": "tool_calls",
        "usage": Usage(40, 22, 62),
        "calls": [
            ToolCall("call_a", "get_weather", {"city": "Paris"}),
            ToolCall("call_b", "get_time", {"tz": "CET"}),
        ],
    },
    "vllm_reasoning_usage_every_chunk.sse": {
        "text": "The answer is 42.",
        "reasoning": "Think first.",
        "finish": "length",
        "usage": Usage(12, 4, 16),
    },
    "llamacpp_server.sse": {"text": "llama", "finish": "stop", "usage": None},
    "quirks_crlf_comments_no_done.sse": {
        "text": "no space, multi-line",
        "finish": "stop",
        "usage": None,
    },
    "aleph_alpha.sse": {"text": "Guten Tag", "finish": "stop", "usage": Usage(20, 2, 22)},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_transcripts_sync_and_async_agree(server: ScriptedServer, name: str) -> None:
    server.route(PATH, Reply.transcript((TRANSCRIPTS / name).read_text(), pause=0.001))
    results = [run_stream(m, backend(server.url), "x") for m in ("sync", "async")]
    (sync_events, sync_response), (async_events, async_response) = results
    assert sync_events == async_events
    assert isinstance(sync_response, ChatResponse)
    assert sync_response == async_response
    expected = EXPECTED[name]
    assert sync_response.message.text == expected["text"]
    assert sync_response.finish_reason == expected["finish"]
    assert sync_response.usage == expected["usage"]
    assert sync_response.message.reasoning == expected.get("reasoning")
    calls = [(c.id, c.name, c.arguments) for c in sync_response.message.tool_calls]
    assert calls == [(c.id, c.name, c.arguments) for c in expected.get("calls", [])]
    for key in ("model", "id"):
        if key in expected:
            assert getattr(sync_response, key) == expected[key]
    # Text arrives piece by piece, not all at the end.
    assert sum(isinstance(e, TextDelta) for e in sync_events) >= (2 if expected["text"] else 0)


def test_connection_is_reused_after_done(server: ScriptedServer, mode: str) -> None:
    server.route(PATH, Reply.transcript((TRANSCRIPTS / "llamacpp_server.sse").read_text()))

    async def go() -> None:
        async with backend(server.url) as llm:
            for _ in range(3):
                assert (await llm.astream("x").get_response()).message.text == "llama"

    if mode == "sync":
        with backend(server.url) as llm:
            for _ in range(3):
                assert llm.stream("x").response.message.text == "llama"
    else:
        asyncio.run(go())
    assert server.connections == 1


# Faults


def test_connection_refused(mode: str) -> None:
    llm = OpenAIChat(f"http://127.0.0.1:{free_port()}/v1", api_key=KEY, retry=FAST)
    result = run_chat(mode, llm, "x")
    assert isinstance(result, ConnectError)
    _, streamed = run_stream(mode, OpenAIChat(llm.base_url, retry=FAST), "x")
    assert isinstance(streamed, ConnectError)


def test_reset_before_headers_is_retried(server: ScriptedServer, mode: str) -> None:
    server.route(PATH, Reply.reset_before_headers(), Reply.sse([chunk("ok", finish="stop")]))
    _, response = run_stream(mode, backend(server.url), "x")
    assert isinstance(response, ChatResponse)
    assert response.message.text == "ok"
    assert len(server.requests) == 2


def test_503_then_200(server: ScriptedServer, mode: str) -> None:
    server.route(PATH, Reply.error(503, "overloaded"), Reply.json(completion("fine")))
    result = run_chat(mode, backend(server.url), "x")
    assert isinstance(result, ChatResponse)
    assert result.message.text == "fine"
    assert len(server.requests) == 2


def test_429_with_retry_after_then_a_stream(server: ScriptedServer, mode: str) -> None:
    server.route(
        PATH,
        Reply.error(429, "rate limited", headers={"retry-after-ms": "100"}),
        Reply.sse([chunk("after wait", finish="stop")]),
    )
    slow = RetryPolicy(max_retries=1, initial_backoff=30)
    _, response = run_stream(mode, backend(server.url, retry=slow), "x")
    assert isinstance(response, ChatResponse)
    assert response.message.text == "after wait"


def test_429_past_the_retries_is_rate_limited(server: ScriptedServer, mode: str) -> None:
    server.route(
        PATH, Reply.error(429, "quota", code="rate_limit_exceeded", headers={"x-request-id": "r7"})
    )
    result = run_chat(mode, backend(server.url), "x")
    assert isinstance(result, RateLimited)
    assert result.status_code == 429
    assert result.request_id == "r7"
    assert result.error["code"] == "rate_limit_exceeded"
    assert len(server.requests) == 3


def tool_stream_breaking(tail: list[Any]) -> Reply:
    """Text, one finished tool call, usage, a second call begun, then ``tail``."""
    call = {"index": 0, "id": "call_1", "type": "function"}
    return Reply.sse(
        [
            chunk("Let me check. ", role="assistant"),
            {**chunk(tool_calls=[{**call, "function": {"name": "f", "arguments": '{"a": 1}'}}])},
            {
                **chunk(
                    tool_calls=[
                        {"index": 1, "id": "call_2", "function": {"name": "g", "arguments": '{"b'}}
                    ]
                ),
                "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
            },
            Pause(0.05),
            *tail,
        ],
        done=False,
    )


def assert_partial(error: Any, cause: type[Exception]) -> ChatResponse:
    assert isinstance(error, StreamInterrupted)
    assert isinstance(error.__cause__, cause)
    partial = error.partial
    assert partial.message.text == "Let me check. "
    assert partial.finish_reason == "incomplete"
    first, second = partial.message.tool_calls
    assert (first.id, first.name, first.arguments) == ("call_1", "f", {"a": 1})
    assert (second.id, second.name, second.raw_arguments) == ("call_2", "g", '{"b')
    assert partial.usage == Usage(5, 7, 12)
    return partial


def test_reset_mid_stream_raises_stream_interrupted_with_everything(
    server: ScriptedServer, mode: str
) -> None:
    server.route(PATH, tool_stream_breaking([RESET]), Reply.sse([chunk("never")]))
    events, error = run_stream(mode, backend(server.url), "x")
    assert_partial(error, TransportError)
    assert events  # they were delivered as they came
    assert len(server.requests) == 1  # nothing sent twice


def test_stall_longer_than_idle_timeout(server: ScriptedServer, mode: str) -> None:
    server.route(PATH, tool_stream_breaking([Pause(5), chunk("late")]))
    llm = backend(server.url, timeouts=Timeouts(idle=0.3))
    _, error = run_stream(mode, llm, "x")
    assert_partial(error, TimeoutException)
    assert error.__cause__.kind == "idle"  # type: ignore[union-attr]


def test_stall_before_the_first_event_is_a_timeout(server: ScriptedServer, mode: str) -> None:
    server.route(PATH, Reply.sse([Pause(5), chunk("late")]))
    events, error = run_stream(mode, backend(server.url, timeouts=Timeouts(idle=0.3)), "x")
    assert events == []
    assert isinstance(error, TimeoutException)
    assert error.kind == "idle"


def test_invalid_json_in_a_chunk(server: ScriptedServer, mode: str) -> None:
    server.route(PATH, tool_stream_breaking(['data: {"choices": [{"delta": \n\n']))
    _, error = run_stream(mode, backend(server.url), "x")
    assert_partial(error, ParseError)
    assert error.__cause__.text == '{"choices": [{"delta": '  # type: ignore[union-attr]


def test_invalid_json_before_any_event(server: ScriptedServer, mode: str) -> None:
    server.route(PATH, Reply.sse(["data: not json\n\n"]))
    events, error = run_stream(mode, backend(server.url), "x")
    assert events == []
    assert isinstance(error, ParseError)
    assert error.text == "not json"


def test_malformed_sse_lines_are_skipped(server: ScriptedServer, mode: str) -> None:
    server.route(
        PATH,
        Reply.sse(
            [
                "this line has no field\n\n",
                chunk("one "),
                ":comment\nunknown: field\ndata\n\n",  # "data" alone: an empty data line
                "event: ping\n\n",
                chunk("two", finish="stop"),
            ]
        ),
    )
    _, response = run_stream(mode, backend(server.url), "x")
    assert isinstance(response, ChatResponse)
    assert response.message.text == "one two"
    assert response.finish_reason == "stop"


def test_error_reported_mid_stream(server: ScriptedServer, mode: str) -> None:
    error_chunk = {"error": {"message": "engine died", "type": "server_error", "code": 500}}
    server.route(PATH, tool_stream_breaking([error_chunk]))
    _, error = run_stream(mode, backend(server.url), "x")
    assert_partial(error, ServerError)
    assert isinstance(error, StreamInterrupted)
    assert "engine died" in str(error.__cause__)


def test_error_event_before_any_chunk(server: ScriptedServer, mode: str) -> None:
    server.route(PATH, Reply.sse(['event: error\ndata: {"message": "overloaded"}\n\n']))
    events, error = run_stream(mode, backend(server.url), "x")
    assert events == []
    assert isinstance(error, ServerError)
    assert "overloaded" in str(error)
    assert error.error == {"message": "overloaded"}


def test_body_that_is_not_a_chat_completion(server: ScriptedServer, mode: str) -> None:
    server.route(PATH, Reply.json({"object": "list", "data": []}))
    result = run_chat(mode, backend(server.url), "x")
    assert isinstance(result, ParseError)
    assert json.loads(result.text or "") == {"object": "list", "data": []}


def test_error_object_with_status_200(server: ScriptedServer, mode: str) -> None:
    server.route(PATH, Reply.json({"error": {"message": "bad key", "code": 401}}))
    result = run_chat(mode, backend(server.url), "x")
    assert isinstance(result, AuthenticationError)
    assert "bad key" in str(result)


def test_stream_ended_without_finish_raises_with_the_partial(
    server: ScriptedServer, mode: str
) -> None:
    server.route(PATH, Reply.sse([chunk("cut"), chunk(" off")], done=False))
    _, error = run_stream(mode, backend(server.url), "x")
    assert isinstance(error, StreamInterrupted)
    assert error.partial.message.text == "cut off"
    assert error.partial.finish_reason == "incomplete"
    assert "no finish reason" in str(error)


def test_accept_incomplete_returns_the_cut_off_answer(server: ScriptedServer, mode: str) -> None:
    server.route(PATH, Reply.sse([chunk("cut"), chunk(" off")], done=False))
    _, response = run_stream(mode, backend(server.url, accept_incomplete=True), "x")
    assert isinstance(response, ChatResponse)
    assert response.message.text == "cut off"
    assert response.finish_reason == "incomplete"


def test_deadline_covers_retries_and_stream(server: ScriptedServer, mode: str) -> None:
    parts: list[Any] = [chunk(f"{i} ") for i in range(200)]
    server.route(PATH, Reply.sse(parts, pause=0.02))
    _, error = run_stream(mode, backend(server.url, timeouts=Timeouts(total=0.5)), "x")
    assert isinstance(error, StreamInterrupted)
    cause = error.__cause__
    assert isinstance(cause, TimeoutException)
    assert cause.kind == "deadline"
    assert error.partial.message.text.startswith("0 1 2 ")


# Connections


def test_closing_a_stream_early_closes_the_connection(server: ScriptedServer) -> None:
    server.route(PATH, Reply.sse([chunk("a"), Pause(10), chunk("b")]))
    with backend(server.url) as llm:
        with llm.stream("x") as s:
            assert isinstance(s, ChatStream)
            assert next(iter(s)) is not None
        assert server.wait_for_disconnects(1)


def test_cancelling_an_async_stream_closes_the_connection(server: ScriptedServer) -> None:
    server.route(PATH, Reply.sse([chunk("a"), Pause(10), chunk("b")]))
    seen: list[Any] = []

    async def consume(llm: OpenAIChat) -> None:
        async with llm.astream("x") as s:
            async for event in s:
                seen.append(event)

    async def go() -> None:
        async with backend(server.url) as llm:
            task = asyncio.create_task(consume(llm))
            while not any(isinstance(e, TextDelta) for e in seen):
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await asyncio.to_thread(server.wait_for_disconnects, 1)

    asyncio.run(go())


# Secrets


def test_api_key_never_shown(server: ScriptedServer) -> None:
    server.route(PATH, Reply.error(401, f"Incorrect API key provided: {KEY}."))
    llm = backend(server.url)
    assert KEY not in repr(llm)
    assert "api_key='***'" in repr(llm)
    result = run_chat("sync", llm, "x")
    assert isinstance(result, AuthenticationError)
    assert KEY not in str(result)
    assert KEY not in result.body
    assert KEY not in json.dumps(result.error)
    _, streamed = run_stream("sync", backend(server.url), "x")
    assert isinstance(streamed, AuthenticationError)
    assert KEY not in str(streamed)


def test_creating_a_backend_loads_no_http_library() -> None:
    # httpx loads on the first request, so building a backend (e.g. in a CLI) stays fast.
    import subprocess
    import sys

    code = (
        "import sys, chatlane; chatlane.OpenAIChat('http://127.0.0.1:1/v1'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'httpcore', 'anyio')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
