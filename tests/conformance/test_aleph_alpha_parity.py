"""Parity with aleph-alpha-client 11.5.1: the same request JSON, the same decoded results,
and none of its defects.

Each defect test first shows the peer failing on a real input, then chatlane handling it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from pydantic import BaseModel

aa = pytest.importorskip("aleph_alpha_client")
chat = pytest.importorskip("aleph_alpha_client.chat")
Image_ = pytest.importorskip("PIL.Image")

from aleph_alpha_client.chat import process_chat_stream  # noqa: E402
from aleph_alpha_client.structured_output import JSONSchema  # noqa: E402

from chatlane.events import ChatEvent, accumulate  # noqa: E402
from chatlane.messages import Image, Message, Role, ToolCall, user  # noqa: E402
from chatlane.request import ChatRequest, ResponseFormat  # noqa: E402
from chatlane.response import FinishReason, Usage  # noqa: E402
from chatlane.tools import Tool  # noqa: E402
from chatlane.wire.openai import (  # noqa: E402
    StreamAssembler,
    decode_response,
    encode_message,
    encode_query,
    encode_request,
)

MODEL = "llama-3.1-8b-instruct"
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "The city."}},
    "required": ["city"],
}


class Aquarium(BaseModel):
    """Describe nemo."""

    nemo: str
    fins: int


def picture() -> Any:
    return Image_.new("RGB", (3, 2), (200, 30, 10))


def aleph_body(
    request: Any, *, hosting: str | None = None, nice: bool = False
) -> tuple[dict[str, Any], dict[str, str]]:
    client = aa.Client(token="not-used", host="http://127.0.0.1:9/", hosting=hosting, nice=nice)
    body = dict(client._build_json_body(request, MODEL))
    return json.loads(json.dumps(body)), dict(client._build_query_parameters())


def both_requests(**aleph_only: Any) -> tuple[Any, ChatRequest]:
    aleph_call = chat.ToolCall(
        id="call_7",
        type="function",
        function=chat.FunctionCall(name="get_weather", arguments='{"city": "Bonn"}'),
    )
    aleph = chat.ChatRequest(
        model=MODEL,
        messages=[
            chat.Message(role=chat.Role.System, content="You are terse."),
            chat.Message(role=chat.Role.User, content=["What is in this picture?", picture()]),
            chat.TextMessage(role=chat.Role.Assistant, content="", tool_calls=[aleph_call]),
            chat.Message(role=chat.Role.Tool, content="12 degrees", tool_call_id="call_7"),
        ],
        maximum_tokens=64,
        temperature=0.3,
        top_k=10,
        top_p=0.9,
        steering_concepts=["_worldwide/slang"],
        response_format=JSONSchema.from_pydantic(Aquarium),
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather.",
                    "parameters": WEATHER_SCHEMA,
                },
            }
        ],
        tool_choice="auto",
        parallel_tool_calls=True,
        **aleph_only,
    )
    call = ToolCall.from_raw("call_7", "get_weather", '{"city": "Bonn"}')
    ours = ChatRequest(
        (
            Message(Role.SYSTEM, "You are terse."),
            user(["What is in this picture?", Image.from_pil(picture())]),
            Message(Role.ASSISTANT, "", (call,)),
            Message(Role.TOOL, "12 degrees", tool_call_id="call_7"),
        ),
        model=MODEL,
        max_tokens=64,
        temperature=0.3,
        top_k=10,
        top_p=0.9,
        steering_concepts=("_worldwide/slang",),
        response_format=ResponseFormat.from_model(Aquarium),
        tools=(Tool.from_schema("get_weather", WEATHER_SCHEMA, "Current weather."),),
        tool_choice="auto",
        parallel_tool_calls=True,
        extra={"hosting": "aleph-alpha", "nice": True},
    )
    return aleph, ours


def test_the_aleph_alpha_dialect_sends_the_same_json_and_query() -> None:
    aleph, ours = both_requests()
    body, query = aleph_body(aleph, hosting="aleph-alpha", nice=True)
    assert encode_request(ours, "aleph-alpha") == body
    assert encode_query(ours, "aleph-alpha") == query == {"nice": "true"}


def test_the_streamed_request_matches_too() -> None:
    aleph, ours = both_requests(stream_options=chat.StreamOptions(include_usage=True))
    body, _ = aleph_body(aleph, hosting="aleph-alpha", nice=True)
    body["stream"] = True  # what the client's streaming call adds
    assert encode_request(ours, "aleph-alpha", stream=True) == body


def test_a_named_tool_choice_matches() -> None:
    aleph = chat.ChatRequest(
        model=MODEL,
        messages=[chat.Message(role=chat.Role.User, content="hi")],
        tool_choice=chat.ToolFunction(type="function", function={"name": "get_weather"}),
        tools=[
            {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}
        ],
    )
    ours = ChatRequest(
        (Message(Role.USER, "hi"),),
        model=MODEL,
        tools=(Tool.from_schema("get_weather", WEATHER_SCHEMA),),
        tool_choice="get_weather",
    )
    assert encode_request(ours, "aleph-alpha") == aleph_body(aleph)[0]


RESPONSE = {
    "id": "x",
    "object": "chat.completion",
    "created": 1,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Ulm"}'},
                    }
                ],
            },
        }
    ],
    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
}


def test_decoded_responses_agree() -> None:
    theirs = chat.ChatResponse.from_json(json.loads(json.dumps(RESPONSE)))
    ours = decode_response(RESPONSE)
    assert ours.finish_reason == theirs.finish_reason.value
    assert ours.text == theirs.message.content
    assert [(c.id, c.name, c.raw_arguments) for c in ours.tool_calls] == [
        (c.id, c.function.name, c.function.arguments) for c in theirs.message.tool_calls or []
    ]
    their_usage = chat.Usage.from_json(RESPONSE["usage"])
    assert ours.usage == Usage(
        their_usage.prompt_tokens, their_usage.completion_tokens, their_usage.total_tokens
    )


def aleph_stream(chunks: list[dict[str, Any]]) -> list[Any]:
    async def source() -> AsyncGenerator[dict[str, Any], None]:
        for chunk in json.loads(json.dumps(chunks)):
            yield chunk

    async def collect() -> list[Any]:
        return [item async for item in process_chat_stream(source())]

    return asyncio.run(collect())


def ours_stream(chunks: list[dict[str, Any]]) -> list[ChatEvent]:
    assembler = StreamAssembler()
    events: list[ChatEvent] = []
    for chunk in chunks:
        events += assembler.feed(chunk)
    return events + assembler.finish()


def c(delta: dict[str, Any], finish: str | None = None, **top: Any) -> dict[str, Any]:
    return {
        "id": "s",
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **top,
    }


WELL_FORMED = [
    c({"role": "assistant", "content": ""}),
    c({"content": "Let me "}),
    c({"content": "check."}),
    c(
        {
            "content": "",
            "tool_calls": [
                {
                    "index": 0,
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"ci'},
                }
            ],
        }
    ),
    c({"content": "", "tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Ulm"}'}}]}),
    c({"content": ""}, "tool_calls"),
    {
        "id": "s",
        "model": MODEL,
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
    },
]


def test_a_well_formed_stream_assembles_to_what_the_peer_yields() -> None:
    theirs = aleph_stream(WELL_FORMED)
    text = "".join(i.content for i in theirs if isinstance(i, chat.ChatStreamChunk))
    calls = [
        (i.id, i.function.name, i.function.arguments)
        for i in theirs
        if isinstance(i, chat.ToolCall)
    ]
    finish = [i for i in theirs if isinstance(i, chat.FinishReason)]
    usage = [i for i in theirs if isinstance(i, chat.Usage)]
    response = accumulate(ours_stream(WELL_FORMED))
    assert response.text == text == "Let me check."
    assert [(t.id, t.name, t.raw_arguments) for t in response.tool_calls] == calls
    assert response.finish_reason == finish[0].value
    assert response.usage == Usage(
        usage[0].prompt_tokens, usage[0].completion_tokens, usage[0].total_tokens
    )


# --- the peer's defects, which chatlane does not share ---------------------------------------


def test_a_plain_string_role() -> None:
    with pytest.raises(AttributeError):
        chat.Message(role="user", content="hi").to_json()
    assert encode_message(Message("user", "hi"), "aleph-alpha") == {"role": "user", "content": "hi"}  # type: ignore[arg-type]


def test_content_null_can_be_sent_back() -> None:
    message = RESPONSE["choices"][0]["message"] | {"content": None}  # type: ignore[index]
    with pytest.raises(TypeError):
        chat.TextMessage.from_json(dict(message)).to_json()
    body = dict(RESPONSE, choices=[{"index": 0, "finish_reason": "tool_calls", "message": message}])
    ours = decode_response(body).message
    assert encode_message(ours, "aleph-alpha")["content"] == ""
    assert encode_message(ours, "openai")["content"] is None


def test_usage_and_content_in_mixed_chunks_are_kept() -> None:
    chunks = [
        c(
            {"content": "Hello"},
            usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        ),
        c({"content": " world"}, "stop"),
    ]
    theirs = aleph_stream(chunks)
    assert not any(isinstance(i, chat.ChatStreamChunk) for i in theirs)  # both texts are gone
    response = accumulate(ours_stream(chunks))
    assert response.text == "Hello world"
    assert response.usage == Usage(1, 1, 2)
    assert response.finish_reason == "stop"


@pytest.mark.parametrize(
    "chunks",
    [
        [c({"role": "assistant"})],  # no content key
        [
            c(
                {
                    "tool_calls": [
                        {"index": 0, "id": "a", "function": {"name": "f", "arguments": "{}"}}
                    ]
                }
            )
        ],  # no type
        [
            c(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "a",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{"},
                        }
                    ]
                }
            ),
            c({"tool_calls": [{"index": 0, "function": {"name": "f"}}]}),  # no arguments
            c({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}),
        ],
    ],
)
def test_partial_deltas_are_no_key_error(chunks: list[dict[str, Any]]) -> None:
    with pytest.raises(KeyError):
        aleph_stream([*chunks, c({"content": ""}, "stop")])
    response = accumulate(ours_stream([*chunks, c({"content": ""}, "stop")]))
    assert response.finish_reason == "stop"


def test_tool_calls_survive_a_stream_without_a_finish_chunk() -> None:
    chunks = WELL_FORMED[:5]
    theirs = aleph_stream(chunks)
    assert not any(isinstance(i, chat.ToolCall) for i in theirs)
    response = accumulate(ours_stream(chunks))
    assert response.tool_calls == (ToolCall.from_raw("c1", "get_weather", '{"city": "Ulm"}'),)
    assert response.finish_reason == FinishReason.INCOMPLETE


def test_an_undocumented_pydantic_class_gets_no_null_description() -> None:
    class Bare(BaseModel):
        x: int

    assert JSONSchema.from_pydantic(Bare).to_json()["json_schema"]["description"] is None
    ours = encode_request(
        ChatRequest((Message(Role.USER, "x"),), response_format=ResponseFormat.from_model(Bare)),
        "aleph-alpha",
    )
    assert "description" not in ours["response_format"]["json_schema"]
    assert None not in ours["response_format"]["json_schema"].values()


def test_a_json_schema_with_its_own_name_and_description_matches() -> None:
    schema = {
        "type": "object",
        "title": "Aquarium",
        "properties": {"nemo": {"type": "string"}},
        "required": ["nemo"],
    }
    aleph = chat.ChatRequest(
        model=MODEL,
        messages=[chat.Message(role=chat.Role.User, content="Describe nemo")],
        response_format=JSONSchema(
            schema=schema, name="aquarium", description="Describe nemo", strict=True
        ),
    )
    ours = ChatRequest(
        (Message(Role.USER, "Describe nemo"),),
        model=MODEL,
        response_format=ResponseFormat.from_schema(
            schema, name="aquarium", description="Describe nemo"
        ),
    )
    assert encode_request(ours, "aleph-alpha") == aleph_body(aleph)[0]
