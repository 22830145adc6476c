"""The HTTP transport against a real scripted server on 127.0.0.1: retries, timeouts, errors.

Most tests run twice, through the sync and the async operations (``mode``), and assert the same
outcome: that is the parity of the twins.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chatlane._version import __version__
from chatlane.backends.transport import (
    USER_AGENT,
    RetryPolicy,
    Timeouts,
    Transport,
    retry_after,
    status_error,
)
from chatlane.errors import (
    APIStatusError,
    AuthenticationError,
    BadRequest,
    ChatlaneError,
    ConnectError,
    InputError,
    NotFound,
    ParseError,
    RateLimited,
    ServerError,
    TimeoutException,
    TransportError,
)
from support import CLOSE, RESET, Pause, Reply, ScriptedServer, free_port

KEY = "sk-test-0123456789abcdef"
FAST = RetryPolicy(max_retries=2, initial_backoff=0.01, max_backoff=0.02)


class Lines:
    """A minimal decoder for these tests: one item per complete line of the body."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[str]:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        return [line.decode() for line in lines if line]

    def finish(self) -> list[str]:
        rest, self.buffer = self.buffer, b""
        return [rest.decode()] if rest else []


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make(url: str, **kwargs: Any) -> Callable[[], Transport]:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("api_key", KEY)
    return lambda: Transport(url, **kwargs)


def post(mode: str, factory: Callable[[], Transport], path: str = "/x", **kw: Any) -> Any:
    """post_json or apost_json on a fresh transport; returns the result or the error."""
    body = kw.pop("body", {"q": 1})
    if mode == "sync":
        with factory() as t:
            try:
                return t.post_json(path, body, **kw)
            except ChatlaneError as e:
                return e

    async def go() -> Any:
        async with factory() as t:
            try:
                return await t.apost_json(path, body, **kw)
            except ChatlaneError as e:
                return e

    return asyncio.run(go())


def stream(
    mode: str, factory: Callable[[], Transport], path: str = "/s", **kw: Any
) -> tuple[list[str], ChatlaneError | None]:
    """stream or astream with the line decoder: the items received, and the error if any."""
    items: list[str] = []
    body = kw.pop("body", {"stream": True})
    if mode == "sync":
        with factory() as t:
            try:
                for item in t.stream(path, body, Lines(), **kw):
                    items.append(item)
            except ChatlaneError as e:
                return items, e
        return items, None

    async def go() -> ChatlaneError | None:
        async with factory() as t:
            try:
                async for item in t.astream(path, body, Lines(), **kw):
                    items.append(item)
            except ChatlaneError as e:
                return e
        return None

    return items, asyncio.run(go())


# Requests


def test_post_json_sends_headers_body_and_params(server: ScriptedServer, mode: str) -> None:
    server.route("/v1/x", Reply.json({"ok": True}))
    factory = make(
        server.url + "/v1/",
        headers={"X-Client": "c", "X-Both": "client"},
        params={"a": "1", "b": "client"},
    )
    result = post(
        mode,
        factory,
        "x",
        body={"text": "héllo", "n": [1, 2]},
        headers={"X-Both": "call"},
        params={"b": "call"},
    )
    assert result == {"ok": True}
    (req,) = server.requests
    assert req.method == "POST"
    assert req.path == "/v1/x"
    assert req.query == {"a": "1", "b": "call"}
    assert req.headers["user-agent"] == f"chatlane/{__version__}" == USER_AGENT
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["accept"] == "application/json"
    assert req.headers["x-client"] == "c"
    assert req.headers["x-both"] == "call"
    assert req.json() == {"text": "héllo", "n": [1, 2]}


def test_stream_asks_for_an_event_stream(server: ScriptedServer, mode: str) -> None:
    server.route("/s", Reply(body=["one\n", "two\nthr", "ee\n"]))
    items, error = stream(mode, make(server.url))
    assert error is None
    assert items == ["one", "two", "three"]
    assert server.requests[0].headers["accept"] == "text/event-stream"


def test_header_names_are_case_insensitive(server: ScriptedServer) -> None:
    server.route("/x", Reply.json({}))
    with Transport(server.url, headers={"user-agent": "mine/1"}) as t:
        t.post_json("/x", {}, headers={"ACCEPT": "application/x-ndjson"})
    names = [name.lower() for name, _ in server.requests[0].header_lines]
    assert names.count("user-agent") == names.count("accept") == 1
    headers = server.requests[0].headers
    assert headers["user-agent"] == "mine/1"
    assert headers["accept"] == "application/x-ndjson"


def test_custom_auth_header_and_no_key(server: ScriptedServer) -> None:
    server.route("/x", Reply.json({}))
    with Transport(server.url, api_key=KEY, auth_header="api-key", auth_scheme="") as t:
        t.post_json("/x", {})
    with Transport(server.url) as t:
        t.post_json("/x", {})
    assert server.requests[0].headers["api-key"] == KEY
    assert "authorization" not in server.requests[0].headers
    assert "authorization" not in server.requests[1].headers
    assert "api-key" not in server.requests[1].headers


def test_with_options_overrides_per_call_and_shares_connections(server: ScriptedServer) -> None:
    server.route("/x", Reply.json({}))
    with Transport(server.url, headers={"X-A": "1"}, params={"p": "1"}) as t:
        t.post_json("/x", {})
        other = t.with_options(headers={"X-B": "2"}, params={"q": "2"})
        other.post_json("/x", {})
        other.close()  # does not close the shared pool
        t.post_json("/x", {})
    first, second, third = server.requests
    assert "x-b" not in first.headers
    assert second.headers["x-a"] == "1"
    assert second.headers["x-b"] == "2"
    assert second.query == {"p": "1", "q": "2"}
    assert third.query == {"p": "1"}
    assert server.connections == 1


def test_body_that_is_not_json_serialisable_is_an_input_error(server: ScriptedServer) -> None:
    with Transport(server.url) as t, pytest.raises(InputError, match="cannot be sent as JSON"):
        t.post_json("/x", {"when": object()})
    assert server.requests == []


def test_options_of_the_wrong_kind_are_input_errors(server: ScriptedServer) -> None:
    with pytest.raises(InputError, match="headers must map strings to strings"):
        Transport(server.url, headers={"X-N": 1})  # type: ignore[dict-item]
    with pytest.raises(InputError, match="timeouts must be a chatlane Timeouts"):
        Transport(server.url, timeouts=5)  # type: ignore[arg-type]
    with Transport(server.url) as t:
        with pytest.raises(InputError, match="retry must be a chatlane RetryPolicy"):
            t.post_json("/x", {}, retry=3)  # type: ignore[arg-type]
        with pytest.raises(InputError, match="params must be a dict"):
            t.post_json("/x", {}, params=[("a", "b")])  # type: ignore[arg-type]
    assert server.requests == []


def test_bad_base_url_and_options_are_input_errors() -> None:
    with pytest.raises(InputError, match="base_url"):
        Transport("localhost:8080")
    with pytest.raises(InputError, match="idle"):
        Timeouts(idle=0)
    with pytest.raises(InputError, match="max_retries"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(InputError, match="jitter"):
        RetryPolicy(jitter=2)


# Retries


def test_connection_refused_is_retried_then_a_connect_error(mode: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = post(mode, make(url))
    assert isinstance(result, ConnectError)
    assert "cannot connect" in str(result)
    assert url in str(result)


def test_reset_before_headers_is_retried(server: ScriptedServer, mode: str) -> None:
    server.route("/x", Reply.reset_before_headers(), Reply.json({"n": 2}))
    assert post(mode, make(server.url)) == {"n": 2}
    assert len(server.requests) == 2


def test_reset_before_headers_every_time_is_a_transport_error(
    server: ScriptedServer, mode: str
) -> None:
    server.route("/x", Reply.reset_before_headers())
    result = post(mode, make(server.url))
    assert type(result) is TransportError
    assert "before the response" in str(result)
    assert len(server.requests) == 3  # the first attempt and two retries


def test_503_then_200_is_retried(server: ScriptedServer, mode: str) -> None:
    server.route("/x", Reply.error(503, "overloaded"), Reply.json({"ok": 1}))
    assert post(mode, make(server.url)) == {"ok": 1}
    assert len(server.requests) == 2


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_retryable_statuses(server: ScriptedServer, status: int) -> None:
    server.route("/x", Reply.error(status, "try again"), Reply.json({"ok": 1}))
    assert post("sync", make(server.url)) == {"ok": 1}
    assert len(server.requests) == 2


def test_retries_are_limited(server: ScriptedServer, mode: str) -> None:
    server.route("/x", Reply.error(503, "down", headers={"x-request-id": "req-9"}))
    result = post(mode, make(server.url))
    assert isinstance(result, ServerError)
    assert result.status_code == 503
    assert result.request_id == "req-9"
    assert len(server.requests) == 3


def test_no_retries_when_turned_off(server: ScriptedServer) -> None:
    server.route("/x", Reply.error(503, "down"))
    result = post("sync", make(server.url, retry=RetryPolicy(max_retries=0)))
    assert isinstance(result, ServerError)
    assert len(server.requests) == 1


def test_429_waits_as_retry_after_says(server: ScriptedServer, mode: str) -> None:
    # The computed backoff would be 30 s: finishing in about 1 s shows Retry-After won.
    slow = RetryPolicy(max_retries=1, initial_backoff=30, max_backoff=30)
    server.route(
        "/x", Reply.error(429, "slow down", headers={"Retry-After": "1"}), Reply.json({"ok": 1})
    )
    start = time.monotonic()
    assert post(mode, make(server.url, retry=slow)) == {"ok": 1}
    elapsed = time.monotonic() - start
    assert 0.95 <= elapsed < 5
    assert len(server.requests) == 2


def test_retry_after_ms_wins(server: ScriptedServer) -> None:
    slow = RetryPolicy(max_retries=1, initial_backoff=30, max_backoff=30)
    server.route(
        "/x",
        Reply.error(429, "slow", headers={"retry-after-ms": "150", "Retry-After": "30"}),
        Reply.json({"ok": 1}),
    )
    start = time.monotonic()
    assert post("sync", make(server.url, retry=slow)) == {"ok": 1}
    assert 0.14 <= time.monotonic() - start < 5


def test_retry_after_beyond_the_cap_is_not_waited_for(server: ScriptedServer, mode: str) -> None:
    server.route("/x", Reply.error(429, "come back tomorrow", headers={"Retry-After": "86400"}))
    start = time.monotonic()
    result = post(mode, make(server.url))
    assert isinstance(result, RateLimited)
    assert "come back tomorrow" in str(result)
    assert time.monotonic() - start < 2
    assert len(server.requests) == 1


def test_x_should_retry_is_obeyed(server: ScriptedServer) -> None:
    server.route("/x", Reply.error(503, "no", headers={"x-should-retry": "false"}))
    assert isinstance(post("sync", make(server.url)), ServerError)
    assert len(server.requests) == 1
    server.route("/y", Reply.error(400, "odd", headers={"x-should-retry": "true"}), Reply.json(1))
    assert post("sync", make(server.url), "/y") == 1


def test_retry_after_parsing() -> None:
    now = 1_700_000_000.0
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after": "1.5"}) == 1.5
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    date = email.utils.formatdate(now + 20, usegmt=True)
    assert retry_after({"retry-after": date}, now=now) == pytest.approx(20, abs=1)
    past = email.utils.formatdate(now - 20, usegmt=True)
    assert retry_after({"retry-after": past}, now=now) == 0.0
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({"retry-after-ms": "x", "retry-after": "2"}) == 2.0
    assert retry_after({}) is None


def test_backoff_grows_is_capped_and_jittered() -> None:
    policy = RetryPolicy(initial_backoff=0.5, max_backoff=4, jitter=0.25)
    for retry, full in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0)]:
        waits = {policy.backoff(retry) for _ in range(50)}
        assert all(0.75 * full <= w <= full for w in waits)
        assert len(waits) > 1
    assert RetryPolicy(jitter=0).backoff(1) == 1.0


# Errors


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequest),
        (422, BadRequest),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, NotFound),
        (429, RateLimited),
        (500, ServerError),
        (502, ServerError),
        (418, APIStatusError),
    ],
)
def test_status_errors_map_into_the_tree(
    server: ScriptedServer, status: int, cls: type[APIStatusError]
) -> None:
    server.route(
        "/x",
        Reply.error(
            status, "it went wrong", type="bad", code="c1", headers={"x-request-id": "req-1"}
        ),
    )
    result = post("sync", make(server.url, retry=RetryPolicy(max_retries=0)))
    assert type(result) is cls
    assert result.status_code == status
    assert result.error == {"message": "it went wrong", "type": "bad", "code": "c1"}
    assert result.request_id == "req-1"
    assert '"it went wrong"' in result.body
    assert str(result) == f"HTTP {status} {_reason(status)}: it went wrong (request id req-1)"


def _reason(status: int) -> str:
    from support.server import _REASONS

    return _REASONS.get(status, "Status")


def test_error_bodies_of_other_shapes() -> None:
    e = status_error(400, '{"detail": "field required"}')
    assert isinstance(e, BadRequest)
    assert e.error == {"detail": "field required"}
    assert "field required" in str(e)
    e = status_error(500, '{"error": "boom", "code": "INTERNAL"}')
    assert e.error == "boom"
    assert "boom" in str(e)
    e = status_error(502, "<html>Bad gateway</html>")
    assert e.error is None
    assert e.body == "<html>Bad gateway</html>"
    assert "Bad gateway" in str(e)
    e = status_error(500, "")
    assert str(e) == "HTTP 500"


def test_an_answer_that_is_not_json_is_a_parse_error(server: ScriptedServer, mode: str) -> None:
    server.route("/x", Reply(body="<html>hello</html>", headers={"Content-Type": "text/html"}))
    result = post(mode, make(server.url))
    assert isinstance(result, ParseError)
    assert result.text == "<html>hello</html>"
    assert "not JSON" in str(result)


def test_reset_mid_body_of_a_json_answer_is_not_retried(server: ScriptedServer, mode: str) -> None:
    server.route("/x", Reply(body=['{"a": ', RESET]), Reply.json({"ok": 1}))
    result = post(mode, make(server.url))
    assert type(result) is TransportError
    assert "while reading the response" in str(result)
    assert len(server.requests) == 1


def test_slow_answer_is_a_read_timeout_not_retried(server: ScriptedServer, mode: str) -> None:
    server.route("/x", Reply(body="{}", delay=2))
    start = time.monotonic()
    result = post(mode, make(server.url, timeouts=Timeouts(read=0.3)))
    assert isinstance(result, TimeoutException)
    assert result.kind == "read"
    assert time.monotonic() - start < 1.5
    assert len(server.requests) == 1


# Streams


def test_reset_mid_stream_keeps_what_arrived_and_is_not_retried(
    server: ScriptedServer, mode: str
) -> None:
    server.route("/s", Reply(body=["a\n", "b\n", Pause(0.05), RESET]), Reply(body=["z\n"]))
    items, error = stream(mode, make(server.url))
    assert items == ["a", "b"]
    assert type(error) is TransportError
    assert "while reading the response" in str(error)
    assert len(server.requests) == 1


def test_body_cut_short_mid_stream(server: ScriptedServer, mode: str) -> None:
    server.route("/s", Reply(body=["a\n", Pause(0.05), CLOSE]))
    items, error = stream(mode, make(server.url))
    assert items == ["a"]
    assert isinstance(error, TransportError)


def test_stall_longer_than_the_idle_timeout_fails_fast(server: ScriptedServer, mode: str) -> None:
    server.route("/s", Reply(body=["a\n", Pause(5), "b\n"]))
    start = time.monotonic()
    items, error = stream(mode, make(server.url, timeouts=Timeouts(idle=0.3)))
    elapsed = time.monotonic() - start
    assert items == ["a"]
    assert isinstance(error, TimeoutException)
    assert error.kind == "idle"
    assert "idle for more than 0.3 s" in str(error)
    assert elapsed < 2
    assert len(server.requests) == 1


def test_slow_chunks_within_the_idle_timeout_are_fine(server: ScriptedServer, mode: str) -> None:
    server.route("/s", Reply(body=["a\n", Pause(0.2), "b\n", Pause(0.2), "c\n"]))
    items, error = stream(mode, make(server.url, timeouts=Timeouts(idle=0.5)))
    assert error is None
    assert items == ["a", "b", "c"]


def test_total_deadline_ends_a_trickling_stream(server: ScriptedServer, mode: str) -> None:
    parts: list[Any] = []
    for i in range(100):
        parts += [f"{i}\n", Pause(0.05)]
    server.route("/s", Reply(body=parts))
    start = time.monotonic()
    items, error = stream(mode, make(server.url, timeouts=Timeouts(idle=1, total=0.6)))
    elapsed = time.monotonic() - start
    assert isinstance(error, TimeoutException)
    assert error.kind == "deadline"
    assert 3 <= len(items) < 100
    assert items == [str(i) for i in range(len(items))]
    assert 0.55 <= elapsed < 1.5


def test_total_deadline_bounds_waiting_for_headers(server: ScriptedServer, mode: str) -> None:
    server.route("/x", Reply(body="{}", delay=3))
    start = time.monotonic()
    result = post(mode, make(server.url, timeouts=Timeouts(total=0.4)))
    assert isinstance(result, TimeoutException)
    assert result.kind == "deadline"
    assert time.monotonic() - start < 1.5


def test_total_deadline_includes_retries(server: ScriptedServer, mode: str) -> None:
    server.route("/x", Reply.error(503, "down"))
    policy = RetryPolicy(max_retries=50, initial_backoff=0.2, max_backoff=0.2, jitter=0)
    start = time.monotonic()
    result = post(mode, make(server.url, retry=policy, timeouts=Timeouts(total=1.0)))
    elapsed = time.monotonic() - start
    # It stops retrying when the next wait would overrun the deadline, with the last error.
    assert isinstance(result, ServerError)
    assert elapsed < 1.0
    assert 3 <= len(server.requests) <= 6


def test_per_call_timeouts_override_the_transport(server: ScriptedServer) -> None:
    server.route("/s", Reply(body=["a\n", Pause(0.6), "b\n"]))
    items, error = stream(
        "sync", make(server.url, timeouts=Timeouts(idle=0.2)), timeouts=Timeouts(idle=2)
    )
    assert error is None
    assert items == ["a", "b"]


def test_stream_answered_with_json_error(server: ScriptedServer, mode: str) -> None:
    server.route("/s", Reply.json({"error": {"message": "model overloaded", "code": 503}}))
    items, error = stream(mode, make(server.url))
    assert items == []
    assert isinstance(error, ServerError)
    assert error.status_code == 503
    assert "model overloaded" in str(error)


def test_stream_answered_with_plain_json(server: ScriptedServer, mode: str) -> None:
    server.route("/s", Reply.json({"choices": []}))
    _items, error = stream(mode, make(server.url))
    assert isinstance(error, ParseError)
    assert error.text == '{"choices": []}'
    assert "expected a stream" in str(error)


def test_stream_error_status_before_the_body_is_retried(server: ScriptedServer, mode: str) -> None:
    server.route("/s", Reply.error(502, "gateway"), Reply(body=["ok\n"]))
    items, error = stream(mode, make(server.url))
    assert error is None
    assert items == ["ok"]


# Connections


def test_connections_are_reused(server: ScriptedServer, mode: str) -> None:
    server.route("/x", Reply.json({"ok": 1}))
    server.route("/s", Reply(body=["a\n"]))
    if mode == "sync":
        with Transport(server.url) as t:
            for _ in range(3):
                t.post_json("/x", {})
                assert list(t.stream("/s", {}, Lines())) == ["a"]
    else:

        async def go() -> None:
            async with Transport(server.url) as t:
                for _ in range(3):
                    await t.apost_json("/x", {})
                    assert [x async for x in t.astream("/s", {}, Lines())] == ["a"]

        asyncio.run(go())
    assert len(server.requests) == 6
    assert server.connections == 1


def test_closing_a_sync_stream_closes_its_connection(server: ScriptedServer) -> None:
    server.route("/s", Reply(body=["a\n", Pause(10), "b\n"]))
    with Transport(server.url) as t:
        it = t.stream("/s", {}, Lines())
        assert next(it) == "a"
        it.close()
        assert server.wait_for_disconnects(1)


def test_cancelling_an_async_stream_closes_its_connection(server: ScriptedServer) -> None:
    server.route("/s", Reply(body=["a\n", Pause(10), "b\n"]))
    got: list[str] = []

    async def consume(t: Transport) -> None:
        async for item in t.astream("/s", {}, Lines()):
            got.append(item)

    async def go() -> None:
        async with Transport(server.url) as t:
            task = asyncio.create_task(consume(t))
            while not got:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The connection is closed now, not when the pool is.
            assert await asyncio.to_thread(server.wait_for_disconnects, 1)

    asyncio.run(go())
    assert got == ["a"]


def test_a_closed_transport_opens_new_connections(server: ScriptedServer) -> None:
    server.route("/x", Reply.json({"ok": 1}))
    t = Transport(server.url)
    t.post_json("/x", {})
    t.close()
    assert t.post_json("/x", {}) == {"ok": 1}
    t.close()
    assert server.connections == 2


def test_one_transport_in_several_event_loops(server: ScriptedServer) -> None:
    # Each asyncio.run gets its own connections; closing inside each loop releases them.
    server.route("/x", Reply.json({"ok": 1}))
    t = Transport(server.url)

    async def once() -> Any:
        async with t:
            return await t.apost_json("/x", {})

    assert asyncio.run(once()) == {"ok": 1}
    assert asyncio.run(once()) == {"ok": 1}
    assert server.connections == 2


# Secrets


def test_api_key_never_shown(server: ScriptedServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # The server echoes the key back, as some do in their 401 messages.
    server.route(
        "/x",
        Reply.error(503, "busy"),
        Reply.error(401, f"Incorrect API key provided: {KEY}"),
    )
    t = Transport(server.url, api_key=KEY, retry=FAST)
    with t:
        assert KEY not in repr(t)
        assert "***" in repr(t)
        with pytest.raises(AuthenticationError) as info:
            t.post_json("/x", {})
        refused = Transport(f"http://127.0.0.1:{free_port()}", api_key=KEY, retry=FAST)
        with pytest.raises(ConnectError) as refused_info:
            refused.post_json("/x", {})
        refused.close()
    error = info.value
    for text in (str(error), repr(error), error.body, repr(error.error), str(refused_info.value)):
        assert KEY not in text
    assert "Incorrect API key provided: ***" in str(error)
    assert KEY not in caplog.text
    assert "retrying POST" in caplog.text
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"


# Server-Sent Events


def collect_json(mode: str, url: str) -> tuple[list[Any], ChatlaneError | None]:
    values: list[Any] = []
    if mode == "sync":
        with Transport(url, retry=FAST) as t:
            try:
                values.extend(t.stream_json("/s", {}))
            except ChatlaneError as e:
                return values, e
        return values, None

    async def go() -> ChatlaneError | None:
        async with Transport(url, retry=FAST) as t:
            try:
                async for value in t.astream_json("/s", {}):
                    values.append(value)
            except ChatlaneError as e:
                return e
        return None

    return values, asyncio.run(go())


def test_stream_json_reads_event_payloads_up_to_done(server: ScriptedServer, mode: str) -> None:
    server.route(
        "/s",
        Reply.sse(
            [
                {"n": 1},
                ": a comment\n\n",
                "event: ping\n\n",  # no data: skipped
                "data: [1, 2]\n\n",
                'data: "text"\n\n',
                "data: [DONE]\n\n",
                {"after": "done"},  # ignored, but read so the connection is reused
            ],
            done=False,
        ),
    )
    values, error = collect_json(mode, server.url)
    assert error is None
    assert values == [{"n": 1}, [1, 2], "text"]


def test_stream_json_error_event(server: ScriptedServer, mode: str) -> None:
    server.route(
        "/s",
        Reply.sse([{"n": 1}, 'event: error\ndata: {"message": "quota", "code": 429}\n\n']),
    )
    values, error = collect_json(mode, server.url)
    assert values == [{"n": 1}]
    assert isinstance(error, RateLimited)
    assert error.error == {"message": "quota", "code": 429}
    assert "quota" in str(error)


def test_stream_json_data_that_is_not_json(server: ScriptedServer, mode: str) -> None:
    server.route("/s", Reply.sse([{"n": 1}, "data: {oops\n\n"]))
    values, error = collect_json(mode, server.url)
    assert values == [{"n": 1}]
    assert isinstance(error, ParseError)
    assert error.text == "{oops"


def test_stream_sse_yields_events(server: ScriptedServer) -> None:
    server.route("/s", Reply.sse(["event: delta\nid: 3\ndata: a\ndata: b\n\n"], done=False))
    with Transport(server.url) as t:
        (event,) = list(t.stream_sse("/s", {}))
    assert (event.event, event.id, event.data) == ("delta", "3", "a\nb")
