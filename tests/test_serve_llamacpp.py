"""`chatlane serve` in front of real engines, with the official openai client: llama.cpp's own
server (``python -m llama_cpp.server``, its raw ``/v1/completions``) and the embedded engine,
both running the tiny random-weight Llama 3 model (its words are noise; its token counts,
stops, grammar-forced calls and schemas are real)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from chatlane._jsonschema import validate
from chatlane.backends.completion import CompletionChat
from chatlane.backends.openai_chat import OpenAIChat
from chatlane.response import ChatResponse
from chatlane.wire.openai import decode_request
from serve_support import serving

pytestmark = pytest.mark.engine

# Random weights rarely end a turn; banning the end tokens makes every answer exactly
# max_tokens long (../shared/ENGINE.md).
NO_END = {"logit_bias": {"128001": -100.0, "128008": -100.0, "128009": -100.0}}
ASK: list[Any] = [{"role": "user", "content": "Tell me a story."}]
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}},
            "required": ["city"],
        },
    },
}
TIME: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time in a zone.",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "integer", "minimum": 0, "maximum": 23}},
            "required": ["zone"],
        },
    },
}


def _client(url: str) -> Any:
    return openai.OpenAI(base_url=url, api_key="k", max_retries=0, timeout=120)


@pytest.fixture
def raw_gateway(llama_server: str) -> Iterator[str]:
    """The gateway in front of llama_cpp.server's raw completions."""
    with serving(CompletionChat(llama_server, "llama3.1", dialect="openai"), "tiny") as url:
        yield url


@pytest.fixture
def engine_gateway(tiny_engine: Any) -> Iterator[str]:
    """The gateway in front of the embedded engine (the suite's one loaded model)."""
    pytest.importorskip("llguidance")
    gateway = serving(tiny_engine, "tiny")
    url = gateway.__enter__()
    try:
        yield url
    finally:
        # The engine belongs to the session; the gateway closes its backends on shutdown.
        close, tiny_engine.close = tiny_engine.close, lambda: None
        try:
            gateway.__exit__(None, None, None)
        finally:
            tiny_engine.close = close


def _params(**more: Any) -> dict[str, Any]:
    return {"max_tokens": 6, "temperature": 0.0, "seed": 1, "extra_body": NO_END, **more}


@pytest.mark.parametrize("backend", ["raw_gateway", "engine_gateway"])
def test_sync_and_async_streamed_and_whole_answers_agree(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url: str = request.getfixturevalue(backend)
    with _client(url) as client:
        whole = client.chat.completions.create(model="tiny", messages=ASK, **_params())
        chunks = list(
            client.chat.completions.create(
                model="tiny",
                messages=ASK,
                stream=True,
                stream_options={"include_usage": True},
                **_params(),
            )
        )

    async def run() -> tuple[str, str]:
        async with openai.AsyncOpenAI(base_url=url, api_key="k", max_retries=0) as client:
            a = await client.chat.completions.create(model="tiny", messages=ASK, **_params())
            stream = await client.chat.completions.create(
                model="tiny", messages=ASK, stream=True, **_params()
            )
            pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return a.choices[0].message.content or "", "".join(pieces)

    async_whole, async_streamed = asyncio.run(run())
    text = whole.choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert streamed == text == async_whole == async_streamed
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 6
    assert chunks[-1].choices == []  # the usage chunk that include_usage asks for
    if backend == "engine_gateway":
        assert chunks[-1].usage.completion_tokens == 6
        assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens > 0
    else:
        # llama_cpp.server reports no usage in a stream; none is made up.
        assert chunks[-1].usage is None
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def _without_ids(response: ChatResponse) -> ChatResponse:
    # Each request gets a fresh id and time from the server; everything else must agree.
    return dataclasses.replace(response, id=None, created=None)


def test_openaichat_through_the_gateway_equals_llama_server_directly(
    llama_server: str, raw_gateway: str
) -> None:
    request = decode_request(
        {"messages": ASK, "max_tokens": 6, "temperature": 0.0, "seed": 1, **NO_END}
    )
    with CompletionChat(llama_server, "llama3.1", dialect="openai") as direct:
        expected = direct.chat(request)
        expected_stream = direct.stream(request).response
    with OpenAIChat(raw_gateway, api_key="k", model="tiny") as gateway:
        whole = gateway.chat(request)
        streamed = gateway.stream(request).response
    assert _without_ids(whole) == _without_ids(expected)
    assert _without_ids(streamed) == _without_ids(expected_stream)
    assert whole.id is not None
    assert whole.usage == expected.usage


@pytest.mark.parametrize("choice", ["required", "get_time"])
def test_forced_tool_calls_on_the_engine_reach_the_client_valid(
    engine_gateway: str, choice: str
) -> None:
    tool_choice: Any = (
        choice if choice == "required" else {"type": "function", "function": {"name": choice}}
    )
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
    with _client(engine_gateway) as client:
        whole = client.chat.completions.create(
            model="tiny",
            messages=ASK,
            tools=[WEATHER, TIME],
            tool_choice=tool_choice,
            seed=3,
            max_tokens=60,
        )
        chunks = list(
            client.chat.completions.create(
                model="tiny",
                messages=ASK,
                tools=[WEATHER, TIME],
                tool_choice=tool_choice,
                seed=3,
                max_tokens=60,
                stream=True,
            )
        )
    [call] = whole.choices[0].message.tool_calls
    assert whole.choices[0].finish_reason == "tool_calls"
    arguments = json.loads(call.function.arguments)
    assert validate(arguments, schemas[call.function.name]) == []
    if choice != "required":
        assert call.function.name == choice
    # Streamed with the same seed: the same call, piece by piece.
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].function.name == call.function.name
    assert "".join(d.function.arguments or "" for d in deltas) == call.function.arguments


def test_a_json_schema_is_enforced_on_the_engine(engine_gateway: str) -> None:
    schema = {
        "type": "object",
        "properties": {"sunny": {"type": "boolean"}, "mood": {"enum": ["glad", "sad"]}},
        "required": ["sunny", "mood"],
        "additionalProperties": False,
    }
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "verdict", "schema": schema},
    }
    with _client(engine_gateway) as client:
        answer = client.chat.completions.create(
            model="tiny", messages=ASK, response_format=response_format, seed=2, max_tokens=60
        )
    assert answer.choices[0].finish_reason == "stop"
    assert validate(json.loads(answer.choices[0].message.content), schema) == []
    assert answer.model_extra["chatlane"] == {"response_format": {"valid": True}}
