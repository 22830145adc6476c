"""`chatlane serve` against the official openai client, sync and async, streamed and whole,
with a raw completion server scripted with Llama 3 output behind it (real servers on
127.0.0.1 both): the exact tool calls a client receives, the errors, the guards, the log."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from chatlane.backends.completion import CompletionChat
from chatlane.backends.fake import Fake
from chatlane.backends.openai_chat import OpenAIChat
from chatlane.backends.transport import RetryPolicy, Timeouts
from chatlane.events import Finished, ReasoningDelta, TextDelta, UsageReported
from chatlane.messages import Role
from chatlane.response import FinishReason, Usage
from chatlane.serve import Gateway, ServedModel, ServeOptions
from chatlane.store import Store
from serve_support import completion_reply, running, serving, stalled_reply
from support import Reply, ScriptedServer, free_port

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
ASK: list[Any] = [{"role": "user", "content": "Weather in Paris and Rome?"}]
ONE_CALL = ['{"name": "get_weather", ', '"parameters": {"city": "Pa', 'ris"}}']
TWO_CALLS = [
    '[{"name": "get_weather", "parameters": {"city": "Paris"}}, ',
    '{"name": "get_weather", "parameters": {"city": "Rome"}}]',
]


@pytest.fixture
def raw() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        yield server


def _backend(raw: ScriptedServer, **options: Any) -> CompletionChat:
    return CompletionChat(raw.url + "/v1", "llama3.1", retry=RetryPolicy(max_retries=0), **options)


def _client(url: str, **options: Any) -> Any:
    # Typed loosely: the tests send plain dicts, as users of the gateway do.
    return openai.OpenAI(
        base_url=url, api_key=options.pop("api_key", "k"), max_retries=0, **options
    )


def _calls(message: Any) -> list[tuple[str, str, str]]:
    return [(c.type, c.function.name, c.function.arguments) for c in message.tool_calls or []]


def _streamed(chunks: list[Any]) -> tuple[str, dict[int, dict[str, Any]], str | None]:
    """Text, tool calls by index (id, name, arguments) and finish reason, as a client adds them up."""
    text = ""
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for chunk in chunks:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                if delta.id:
                    call["id"] = delta.id
                if delta.function and delta.function.name:
                    call["name"] += delta.function.name
                if delta.function and delta.function.arguments:
                    call["arguments"] += delta.function.arguments
            finish = choice.finish_reason or finish
    return text, calls, finish


# ---------------------------------------------------------------- tool calls


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (ONE_CALL, [("function", "get_weather", '{"city": "Paris"}')]),
        (
            TWO_CALLS,
            [
                ("function", "get_weather", '{"city": "Paris"}'),
                ("function", "get_weather", '{"city": "Rome"}'),
            ],
        ),
    ],
    ids=["single", "parallel"],
)
def test_whole_answers_carry_the_exact_tool_calls(
    raw: ScriptedServer, pieces: list[str], expected: list[tuple[str, str, str]]
) -> None:
    raw.route("/v1/completions", completion_reply(pieces))
    with serving(_backend(raw)) as url, _client(url) as client:
        answer = client.chat.completions.create(model="llama", messages=ASK, tools=TOOLS)
    choice = answer.choices[0]
    assert _calls(choice.message) == expected
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.role == "assistant"
    ids = [c.id for c in choice.message.tool_calls or []]
    assert all(i.startswith("call_") for i in ids)
    assert len(set(ids)) == len(ids)
    assert answer.object == "chat.completion"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (11, len(pieces))
    # The raw server was asked to continue Llama 3's own prompt, tools and all.
    sent = raw.requests[0].json()
    assert "get_weather" in sent["prompt"]
    assert sent["prompt"].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (ONE_CALL, {0: ("get_weather", '{"city": "Paris"}')}),
        (
            TWO_CALLS,
            {0: ("get_weather", '{"city": "Paris"}'), 1: ("get_weather", '{"city": "Rome"}')},
        ),
    ],
    ids=["single", "parallel"],
)
def test_streamed_answers_carry_the_exact_tool_call_deltas(
    raw: ScriptedServer, pieces: list[str], expected: dict[int, tuple[str, str]]
) -> None:
    raw.route("/v1/completions", completion_reply(pieces))
    with serving(_backend(raw)) as url, _client(url) as client:
        stream = client.chat.completions.create(
            model="llama",
            messages=ASK,
            tools=TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    text, calls, finish = _streamed(chunks)
    assert text == ""
    assert {i: (c["name"], c["arguments"]) for i, c in calls.items()} == expected
    assert all(c["id"].startswith("call_") for c in calls.values())
    assert finish == "tool_calls"
    # The first delta of each call names it, with its id and type; the others only add text.
    firsts = [
        d
        for chunk in chunks
        for choice in chunk.choices
        for d in choice.delta.tool_calls or []
        if d.id is not None
    ]
    assert [(d.index, d.type, d.function.name) for d in firsts] == [
        (i, "function", "get_weather") for i in expected
    ]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 11 + len(pieces)
    assert all(c.usage is None for c in chunks[:-1])


def test_async_clients_get_the_same_calls(raw: ScriptedServer) -> None:
    raw.route("/v1/completions", completion_reply(TWO_CALLS))

    async def run(url: str) -> tuple[Any, dict[int, dict[str, Any]]]:
        async with openai.AsyncOpenAI(base_url=url, api_key="k", max_retries=0) as client:
            whole = await client.chat.completions.create(model="llama", messages=ASK, tools=TOOLS)
            stream = await client.chat.completions.create(
                model="llama", messages=ASK, tools=TOOLS, stream=True
            )
            chunks = [chunk async for chunk in stream]
        return whole, _streamed(chunks)[1]

    with serving(_backend(raw)) as url:
        whole, streamed = asyncio.run(run(url))
    expected = [("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Rome"}')]
    assert [(n, a) for _, n, a in _calls(whole.choices[0].message)] == expected
    assert [(c["name"], c["arguments"]) for _, c in sorted(streamed.items())] == expected


def test_text_streams_as_it_comes(raw: ScriptedServer) -> None:
    raw.route("/v1/completions", completion_reply(["Hello", " there", ", friend."]))
    with serving(_backend(raw)) as url, _client(url) as client:
        chunks = list(client.chat.completions.create(model="llama", messages=ASK, stream=True))
        whole = client.chat.completions.create(model="llama", messages=ASK)
    assert [c.choices[0].delta.content for c in chunks] == [
        "",
        "Hello",
        " there",
        ", friend.",
        None,
    ]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert whole.choices[0].message.content == "Hello there, friend."
    assert whole.choices[0].finish_reason == "stop"
    assert all(c.id == chunks[0].id for c in chunks)


def test_without_parallel_calls_the_client_gets_the_first(
    raw: ScriptedServer, tmp_path: Path
) -> None:
    raw.route("/v1/completions", completion_reply(TWO_CALLS))
    store = Store(tmp_path / "log.db")
    with serving(_backend(raw), options=ServeOptions(store=store)) as url, _client(url) as client:
        whole = client.chat.completions.create(
            model="llama", messages=ASK, tools=TOOLS, parallel_tool_calls=False
        )
        chunks = list(
            client.chat.completions.create(
                model="llama", messages=ASK, tools=TOOLS, parallel_tool_calls=False, stream=True
            )
        )
    assert [(n, a) for _, n, a in _calls(whole.choices[0].message)] == [
        ("get_weather", '{"city": "Paris"}')
    ]
    assert sorted(_streamed(chunks)[1]) == [0]
    # The log keeps what the model really answered.
    logged = [store.conversation(s.id).calls[0] for s in store.conversations()]
    store.close()
    assert all(len(c.response.tool_calls) == 2 for c in logged if c.response is not None)


def test_tool_choice_and_sampling_reach_the_upstream(raw: ScriptedServer) -> None:
    raw.route("/v1/completions", completion_reply(["ok"]))
    with serving(_backend(raw)) as url, _client(url) as client:
        client.chat.completions.create(
            model="llama",
            messages=ASK,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_completion_tokens=17,
            stop=["END"],
            seed=7,
            temperature=0.3,
            top_p=0.9,
        )
        client.chat.completions.create(model="llama", messages=ASK, max_tokens=5)
    first, second = (r.json() for r in raw.requests)
    assert first["max_tokens"] == 17
    assert first["seed"] == 7
    assert first["temperature"] == 0.3
    assert first["top_p"] == 0.9
    assert "END" in first["stop"]
    assert second["max_tokens"] == 5


def test_reasoning_is_streamed_apart_from_the_text() -> None:
    fake = Fake(
        [
            [
                ReasoningDelta("Rome is "),
                ReasoningDelta("in Italy."),
                TextDelta("Italy."),
                Finished(FinishReason.STOP),
                UsageReported(Usage(2, 3, 5)),
            ]
        ]
        * 2
    )
    with serving(fake) as url, _client(url) as client:
        chunks = list(client.chat.completions.create(model="llama", messages=ASK, stream=True))
        whole = client.chat.completions.create(model="llama", messages=ASK)
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
        for c in chunks
        if c.choices
    )
    assert reasoning == "Rome is in Italy."
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Italy."
    assert (whole.choices[0].message.model_extra or {})["reasoning_content"] == "Rome is in Italy."
    assert whole.choices[0].message.content == "Italy."


def test_a_response_format_is_validated_and_reported() -> None:
    fake = Fake(['{"city": "Paris"}', '{"town": 3}'])
    schema = {
        "type": "json_schema",
        "json_schema": {
            "name": "city",
            "schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    with serving(fake) as url:
        good = httpx.post(
            url + "/chat/completions",
            json={"model": "llama", "messages": ASK, "response_format": schema},
            headers={"Authorization": "Bearer k"},
        )
        bad = httpx.post(
            url + "/chat/completions",
            json={"model": "llama", "messages": ASK, "response_format": schema},
        )
    assert good.json()["chatlane"] == {"response_format": {"valid": True}}
    report = bad.json()["chatlane"]["response_format"]
    assert report["valid"] is False
    assert "city" in report["error"]
    # The answer itself is delivered as it was.
    assert bad.json()["choices"][0]["message"]["content"] == '{"town": 3}'
    assert fake.requests[0].response_format is not None
    assert fake.requests[0].response_format.schema is not None


def test_a_streamed_answer_reports_its_response_format_before_the_usage() -> None:
    schema: Any = {
        "type": "json_schema",
        "json_schema": {"name": "n", "schema": {"type": "object", "required": ["city"]}},
    }
    with serving(Fake(['{"town": 3}'])) as url, _client(url) as client:
        chunks = list(
            client.chat.completions.create(
                model="llama",
                messages=ASK,
                response_format=schema,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == '{"town": 3}'
    report, usage = chunks[-2], chunks[-1]
    assert report.choices == []
    assert (report.model_extra or {})["chatlane"]["response_format"]["valid"] is False
    assert usage.usage is not None


# ---------------------------------------------------------------- an agent and parity


def test_an_agent_round_trip_through_the_gateway(raw: ScriptedServer) -> None:
    raw.route(
        "/v1/completions",
        completion_reply(ONE_CALL),
        completion_reply(["It is sunny in Paris."]),
    )
    with serving(_backend(raw)) as url, _client(url) as client:
        first = client.chat.completions.create(model="llama", messages=ASK, tools=TOOLS)
        call = (first.choices[0].message.tool_calls or [])[0]
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        messages: list[Any] = [
            *ASK,
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny"}'},
        ]
        answer = client.chat.completions.create(model="llama", messages=messages, tools=TOOLS)
    assert answer.choices[0].message.content == "It is sunny in Paris."
    assert answer.choices[0].finish_reason == "stop"
    # The second prompt holds the call and its result as Llama 3 renders them.
    prompt = raw.requests[1].json()["prompt"]
    assert '"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>' in prompt
    assert '<|start_header_id|>ipython<|end_header_id|>\n\n{"sky": "sunny"}<|eot_id|>' in prompt


def test_chatlanes_agent_loop_runs_its_tools_through_the_gateway(raw: ScriptedServer) -> None:
    from chatlane.agent import run
    from chatlane.messages import user
    from chatlane.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """The current weather.

        Args:
            city: The city.
        """
        return f"sunny in {city}"

    raw.route("/v1/completions", completion_reply(ONE_CALL), completion_reply(["Sunny, it says."]))
    with serving(_backend(raw)) as url, OpenAIChat(url, api_key="k", model="llama") as llm:
        result = run(llm, [user("Weather in Paris?")], tools=[get_weather], max_steps=3)
    assert [(r.call.name, r.content) for r in result.tool_runs] == [
        ("get_weather", "sunny in Paris")
    ]
    assert result.messages[-1].text == "Sunny, it says."
    assert result.messages[-1].role is Role.ASSISTANT
    # The tool's result reached the model's prompt through the gateway.
    assert "sunny in Paris<|eot_id|>" in raw.requests[1].json()["prompt"]


def _same_ids(response: Any) -> Any:
    """The response with its tool-call ids replaced by their positions (the Llama format
    makes up a random id for each call; these tests check ids separately)."""
    import dataclasses

    from chatlane.messages import ToolCall

    calls = tuple(
        ToolCall.from_raw(f"call_{i}", c.name, c.raw_arguments)
        for i, c in enumerate(response.tool_calls)
    )
    message = dataclasses.replace(response.message, tool_calls=calls)
    choices = tuple(dataclasses.replace(c, message=message) for c in response.choices)
    return dataclasses.replace(response, message=message, choices=choices)


@pytest.mark.parametrize(
    "pieces", [ONE_CALL, TWO_CALLS, ["Plain ", "text."]], ids=["one", "two", "text"]
)
def test_openaichat_through_the_gateway_equals_the_backend_directly(
    raw: ScriptedServer, pieces: list[str]
) -> None:
    raw.route("/v1/completions", completion_reply(pieces))
    from chatlane.wire.openai import decode_request

    request = decode_request({"messages": ASK, "tools": TOOLS, "max_tokens": 20})
    with _backend(raw) as direct:
        expected_whole = direct.chat(request)
        expected_stream = direct.stream(request).response
    with serving(_backend(raw)) as url, OpenAIChat(url, api_key="k", model="llama") as gateway:
        whole = gateway.chat(request)
        streamed = gateway.stream(request).response
        ids = [c.id for c in streamed.tool_calls]
    assert _same_ids(whole) == _same_ids(expected_whole)
    assert _same_ids(streamed) == _same_ids(expected_stream)
    assert _same_ids(whole) == _same_ids(streamed)
    assert all(i.startswith("call_") for i in ids)
    assert whole.stop_sequence == expected_whole.stop_sequence


# ---------------------------------------------------------------- errors


def _post(url: str, body: Any, **options: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **options.pop("headers", {})}
    return httpx.post(
        url + "/chat/completions", content=content, headers=headers, timeout=10, **options
    )


def test_bad_requests_get_the_right_status_and_body(raw: ScriptedServer) -> None:
    raw.route("/v1/completions", completion_reply(["ok"]))
    cases: list[tuple[Any, int, str | None]] = [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        ({"model": "gpt-9", "messages": ASK}, 404, "model_not_found"),
        ({"model": "llama", "messages": "hi"}, 400, None),
        ({"model": "llama", "messages": [{"role": "wizard", "content": "x"}]}, 400, None),
        (
            {"model": "llama", "messages": ASK, "tools": [{"type": "function"}]},
            400,
            "invalid_schema",
        ),
        (
            {
                "model": "llama",
                "messages": ASK,
                "response_format": {"type": "json_schema", "json_schema": {}},
            },
            400,
            "invalid_schema",
        ),
        (
            {
                "model": "llama",
                "messages": ASK,
                "tool_choice": {"type": "function", "function": {"name": "nope"}},
                "tools": TOOLS,
            },
            400,
            None,
        ),
        ({"model": "llama", "messages": ASK, "max_tokens": 0}, 400, None),
        ({"model": 5, "messages": ASK}, 400, None),
    ]
    with serving(_backend(raw)) as url:
        for body, status, code in cases:
            answer = _post(url, body)
            assert answer.status_code == status, (body, answer.text)
            error = answer.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert error["message"]
            assert error["code"] == code, (body, error)
        missing = httpx.get(url + "/nothing")
        wrong_method = httpx.get(url + "/chat/completions")
    assert raw.requests == []  # none of them reached the upstream
    assert missing.status_code == 404
    assert "error" in missing.json()
    assert wrong_method.status_code == 405
    assert "error" in wrong_method.json()


def test_the_openai_client_raises_its_own_errors(raw: ScriptedServer) -> None:
    raw.route("/v1/completions", completion_reply(["ok"]))
    with serving(_backend(raw)) as url, _client(url) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="nope", messages=ASK)
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(
                model="llama", messages=[{"role": "wizard", "content": "x"}]
            )
    assert missing.value.code == "model_not_found"
    assert "wizard" in bad.value.message


@pytest.mark.parametrize(
    ("reply", "status", "code"),
    [
        (Reply.error(500, "boom"), 502, "upstream_error"),
        (Reply.error(401, "bad upstream key"), 502, "upstream_error"),
        (Reply.error(429, "slow down"), 429, None),
        (Reply.error(400, "context too long"), 400, "upstream_rejected"),
        (Reply.reset_before_headers(), 502, "upstream_error"),
    ],
    ids=["500", "401", "429", "400", "reset"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_upstream_failures_get_a_gateway_status(
    raw: ScriptedServer, reply: Reply, status: int, code: str | None, stream: bool
) -> None:
    raw.route("/v1/completions", reply)
    with serving(_backend(raw)) as url:
        answer = _post(url, {"model": "llama", "messages": ASK, "stream": stream})
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
    if status == 429:
        assert answer.headers["retry-after"] == "1"


def test_an_unreachable_upstream_is_a_502_and_a_stalled_one_a_504() -> None:
    refused = CompletionChat(
        f"http://127.0.0.1:{free_port()}/v1", "llama3.1", retry=RetryPolicy(max_retries=0)
    )
    with ScriptedServer() as slow:
        slow.route("/v1/completions", Reply(delay=5.0))
        stalled = CompletionChat(
            slow.url + "/v1",
            "llama3.1",
            retry=RetryPolicy(max_retries=0),
            timeouts=Timeouts(read=0.3, idle=0.3),
        )
        gateway = Gateway(
            [ServedModel("refused", refused, "r"), ServedModel("stalled", stalled, "s")]
        )
        with running(gateway) as url:
            gone = _post(url, {"model": "refused", "messages": ASK})
            late = _post(url, {"model": "stalled", "messages": ASK, "stream": True})
    assert gone.status_code == 502
    assert late.status_code == 504
    assert late.json()["error"]["code"] == "upstream_timeout"


def test_a_stream_that_breaks_midway_ends_with_an_error_not_done(raw: ScriptedServer) -> None:
    from support import RESET

    raw.route(
        "/v1/completions",
        Reply.sse(
            [
                {
                    "id": "c",
                    "choices": [{"index": 0, "text": "Hello there. ", "finish_reason": None}],
                },
                RESET,
            ],
            done=False,
        ),
    )
    with serving(_backend(raw)) as url, _client(url) as client:
        stream = client.chat.completions.create(model="llama", messages=ASK, stream=True)
        got: list[str] = []

        def read() -> None:
            for chunk in stream:
                got.append(chunk.choices[0].delta.content)

        with pytest.raises(openai.APIError) as broken:
            read()
        body = _post(url, {"model": "llama", "messages": ASK, "stream": True}).text
    assert "".join(g or "" for g in got).strip() == "Hello there."
    assert got[0] == ""
    assert "upstream" in broken.value.message
    assert "[DONE]" not in body
    assert body.rstrip().splitlines()[-1].startswith('data: {"error":')


# ---------------------------------------------------------------- disconnects


def test_a_client_that_leaves_mid_stream_cancels_the_upstream(raw: ScriptedServer) -> None:
    raw.route("/v1/completions", stalled_reply("Once upon a time. "))
    with serving(_backend(raw)) as url, _client(url) as client:
        stream = client.chat.completions.create(model="llama", messages=ASK, stream=True)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        stream.close()
        assert raw.wait_for_disconnects(1, timeout=5)


def test_a_client_that_leaves_before_a_whole_answer_cancels_the_upstream(
    raw: ScriptedServer,
) -> None:
    raw.route("/v1/completions", Reply(delay=30.0))
    with serving(_backend(raw)) as url:
        host, port = url.removeprefix("http://").removesuffix("/v1").split(":")
        body = json.dumps({"model": "llama", "messages": ASK}).encode()
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            deadline = time.monotonic() + 5
            while not raw.requests and time.monotonic() < deadline:
                time.sleep(0.01)
            assert raw.requests
        assert raw.wait_for_disconnects(1, timeout=5)


# ---------------------------------------------------------------- guards


def test_keys_are_checked_and_never_logged(raw: ScriptedServer, tmp_path: Path) -> None:
    raw.route("/v1/completions", completion_reply(["ok"]))
    store = Store(tmp_path / "log.db")
    options = ServeOptions(api_keys=("sk-secret-one", "sk-secret-two"), store=store)
    gateway = Gateway([ServedModel("llama", _backend(raw), "raw")], options)
    assert "sk-secret" not in repr(gateway) + repr(options)
    with running(gateway) as url:
        with _client(url, api_key="sk-wrong") as client, pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="llama", messages=ASK)
        no_key = httpx.get(url + "/models")
        health = httpx.get(url.removesuffix("/v1") + "/health")
        with _client(url, api_key="sk-secret-two") as client:
            answer = client.chat.completions.create(model="llama", messages=ASK)
            models = client.models.list()
    assert no_key.status_code == 401
    assert no_key.json()["error"]["code"] == "invalid_api_key"
    assert health.status_code == 200
    assert answer.choices[0].message.content == "ok"
    assert [m.id for m in models.data] == ["llama"]
    store.close()
    raw_db = (tmp_path / "log.db").read_bytes()
    for wal in tmp_path.glob("log.db-*"):
        raw_db += wal.read_bytes()
    assert b"sk-secret" not in raw_db
    assert b"sk-wrong" not in raw_db
    assert all("authorization" not in r.headers for r in raw.requests)


def test_every_request_is_logged(raw: ScriptedServer, tmp_path: Path) -> None:
    raw.route(
        "/v1/completions",
        completion_reply(ONE_CALL),
        completion_reply(["Hi!"]),
        Reply.error(500, "down"),
    )
    store = Store(tmp_path / "log.db")
    with (
        serving(
            _backend(raw), options=ServeOptions(store=store), label="CompletionChat raw"
        ) as url,
        _client(url) as client,
    ):
        client.chat.completions.create(model="llama", messages=ASK, tools=TOOLS)
        list(
            client.chat.completions.create(
                model="llama", messages=[{"role": "user", "content": "Hello"}], stream=True
            )
        )
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(
                model="llama", messages=[{"role": "user", "content": "Third"}]
            )
    calls = sorted(
        (store.conversation(s.id).calls[0] for s in store.conversations()),
        key=lambda c: c.started_at,
    )
    store.close()
    assert len(calls) == 3
    first, second, third = calls
    assert first.response is not None
    assert [c.name for c in first.response.tool_calls] == ["get_weather"]
    assert second.response is not None
    assert second.response.text == "Hi!"
    assert second.messages[0].role is Role.USER
    assert third.response is None
    assert third.error is not None
    assert "down" in third.error
    assert {c.duration_ms is not None for c in calls} == {True}


def test_a_large_body_is_refused(raw: ScriptedServer) -> None:
    raw.route("/v1/completions", completion_reply(["ok"]))
    with serving(_backend(raw), options=ServeOptions(max_body_bytes=1000)) as url:
        big = _post(url, {"model": "llama", "messages": [{"role": "user", "content": "x" * 2000}]})
        small = _post(url, {"model": "llama", "messages": ASK})
    assert big.status_code == 413
    assert big.json()["error"]["code"] == "too_large"
    assert small.status_code == 200


def test_requests_over_the_concurrency_limit_get_429_with_retry_after(raw: ScriptedServer) -> None:
    raw.route("/v1/completions", stalled_reply("Wait. ", seconds=30), completion_reply(["ok"]))
    with (
        serving(_backend(raw), options=ServeOptions(max_concurrency=1)) as url,
        _client(url) as client,
    ):
        held = client.chat.completions.create(model="llama", messages=ASK, stream=True)
        for chunk in held:  # the one allowed request is now in flight
            if chunk.choices and chunk.choices[0].delta.content:
                break
        refused = _post(url, {"model": "llama", "messages": ASK})
        held.close()
        assert raw.wait_for_disconnects(1, timeout=5)
        deadline = time.monotonic() + 5
        while True:
            after = _post(url, {"model": "llama", "messages": ASK})
            if after.status_code != 429 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert after.status_code == 200


def test_the_affinity_header_is_passed_on(raw: ScriptedServer) -> None:
    raw.route("/v1/completions", completion_reply(["ok"]))
    options = ServeOptions(affinity_header="X-Session-Id")
    with serving(_backend(raw), options=options) as url, _client(url) as client:
        client.chat.completions.create(
            model="llama", messages=ASK, extra_headers={"X-Session-Id": "s-42"}
        )
        client.chat.completions.create(model="llama", messages=ASK)
    assert raw.requests[0].headers["x-session-id"] == "s-42"
    assert "x-session-id" not in raw.requests[1].headers


def test_several_models_are_served_by_name(raw: ScriptedServer) -> None:
    raw.route("/v1/completions", completion_reply(["from raw"]))
    gateway = Gateway(
        [ServedModel("raw", _backend(raw), "raw"), ServedModel("fake", Fake(["from fake"]), "fake")]
    )
    with running(gateway) as url, _client(url) as client:
        models = [m.id for m in client.models.list().data]
        answers = [
            client.chat.completions.create(model=m, messages=ASK).choices[0].message.content
            for m in ("fake", "raw")
        ]
        one = client.models.retrieve("fake")
    assert models == ["raw", "fake"]
    assert answers == ["from fake", "from raw"]
    assert one.id == "fake"


def test_the_gateway_names_no_format_and_no_special_token() -> None:
    import chatlane.serve
    from chatlane import formats

    source = Path(chatlane.serve.__file__).read_text(encoding="utf-8")
    for name in formats.names():
        fmt = formats.get(name)
        assert f'"{name}"' not in source
        assert f"'{name}'" not in source
        controls = {*fmt.stop_sequences, fmt.begin_text}
        if fmt.tokenizer is not None:
            controls |= set(fmt.tokenizer.special_tokens)
        assert not [c for c in controls if c and c in source]
