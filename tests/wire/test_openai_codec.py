"""Encoding requests for each dialect, and decoding request and response bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from chatlane.errors import InputError, MessageError, ParseError, SchemaError, StructuredOutputError
from chatlane.messages import (
    Image,
    Message,
    Role,
    Text,
    ToolCall,
    assistant,
    system,
    tool_result,
    user,
)
from chatlane.request import ChatRequest, ResponseFormat, StreamOptions
from chatlane.response import FinishReason, Usage
from chatlane.tools import Tool
from chatlane.wire.openai import (
    DIALECTS,
    decode_request,
    decode_response,
    encode_message,
    encode_query,
    encode_request,
)

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f"
    b"\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00"
    b"\x00IEND\xaeB`\x82"
)

WEATHER = Tool.from_schema(
    "get_weather",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    },
    "Current weather.",
)


class City(BaseModel):
    """A city."""

    name: str
    population: int | None = None


def conversation() -> tuple[Message, ...]:
    call = ToolCall("call_1", "get_weather", {"city": "Paris"})
    return (
        system("Be brief."),
        user(["What is this?", Image.from_bytes(PNG)]),
        assistant("", [call]),
        tool_result(call, {"temp": 21}),
    )


# --- encoding -------------------------------------------------------------------------------


def test_openai_body() -> None:
    request = ChatRequest(
        conversation(),
        model="gpt-4o",
        tools=(WEATHER,),
        tool_choice="get_weather",
        parallel_tool_calls=False,
        max_tokens=50,
        temperature=0.2,
        top_p=0.9,
        stop=("END",),
        seed=7,
        user="u1",
    )
    body = encode_request(request, "openai", stream=True)
    assert body == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": Image.from_bytes(PNG).to_data_uri()},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call_1"},
        ],
        "max_completion_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather.",
                    "parameters": dict(WEATHER.parameters),
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "stop": ["END"],
        "seed": 7,
        "user": "u1",
    }
    json.dumps(body)  # everything in it is JSON


def test_stream_options() -> None:
    request = ChatRequest((user("hi"),))
    assert "stream" not in encode_request(request)
    assert encode_request(request, stream=StreamOptions(include_usage=False))["stream_options"] == {
        "include_usage": False
    }
    assert encode_request(request, stream=True)["stream_options"] == {"include_usage": True}


def test_the_token_limit_field_of_each_dialect() -> None:
    request = ChatRequest((user("hi"),), max_tokens=9)
    fields = {d: {k for k in encode_request(request, d) if "tokens" in k} for d in DIALECTS}
    assert fields == {
        "openai": {"max_completion_tokens"},
        "vllm": {"max_tokens"},
        "llama.cpp": {"max_tokens"},
        "aleph-alpha": {"maximum_tokens"},
    }


def test_top_k_and_steering_where_the_dialect_has_them() -> None:
    request = ChatRequest((user("hi"),), top_k=40, steering_concepts=("sc_1",))
    assert encode_request(request, "aleph-alpha")["steering_concepts"] == ["sc_1"]
    assert encode_request(request, "aleph-alpha")["top_k"] == 40
    assert encode_request(ChatRequest((user("hi"),), top_k=40), "vllm")["top_k"] == 40
    assert encode_request(ChatRequest((user("hi"),), top_k=40), "llama.cpp")["top_k"] == 40
    with pytest.raises(InputError, match="openai dialect has no top_k"):
        encode_request(ChatRequest((user("hi"),), top_k=40), "openai")
    with pytest.raises(InputError, match="steering_concepts are an Aleph Alpha feature"):
        encode_request(ChatRequest((user("hi"),), steering_concepts=("x",)), "vllm")
    # A caller who knows their server does take it says so through extra.
    body = encode_request(ChatRequest((user("hi"),), top_k=40, extra={"top_k": 20}), "openai")
    assert body["top_k"] == 20


def test_extra_fields_are_added_override_and_none_removes() -> None:
    request = ChatRequest(
        (user("hi"),),
        temperature=0.5,
        extra={"min_p": 0.1, "guided_json": {"type": "object"}, "temperature": 0.0, "seed": None},
        seed=3,
    )
    body = encode_request(request, "vllm")
    assert body["min_p"] == 0.1
    assert body["guided_json"] == {"type": "object"}
    assert body["temperature"] == 0.0
    assert "seed" not in body


def test_unknown_dialect() -> None:
    with pytest.raises(InputError, match="unknown dialect 'ollama'"):
        encode_request(ChatRequest((user("hi"),)), "ollama")


def test_response_format_per_dialect() -> None:
    request = ChatRequest((user("a city"),), response_format=ResponseFormat.from_model(City))
    openai = encode_request(request, "openai")["response_format"]
    assert openai["type"] == "json_schema"
    inner = openai["json_schema"]
    assert inner["name"] == "City"
    assert inner["description"] == "A city."
    assert inner["strict"] is True
    # OpenAI's strict mode needs every property required and no additional ones.
    assert inner["schema"]["required"] == ["name", "population"]
    assert inner["schema"]["additionalProperties"] is False
    vllm = encode_request(request, "vllm")["response_format"]["json_schema"]["schema"]
    assert vllm == City.model_json_schema()
    llama = encode_request(request, "llama.cpp")["response_format"]
    assert llama == {"type": "json_object", "schema": City.model_json_schema()}
    any_json = ChatRequest((user("json"),), response_format=ResponseFormat.json_object())
    assert all(
        encode_request(any_json, d)["response_format"] == {"type": "json_object"} for d in DIALECTS
    )


def test_an_undocumented_model_sends_no_null_description() -> None:
    class Bare(BaseModel):
        x: int

    inner = encode_request(
        ChatRequest((user("x"),), response_format=ResponseFormat.from_model(Bare)), "aleph-alpha"
    )["response_format"]
    assert "description" not in inner["json_schema"]


def test_strict_tool_sends_the_strict_schema() -> None:
    tool = Tool.from_schema(
        "f", {"type": "object", "properties": {"a": {"type": "integer"}}}, strict=True
    )
    (encoded,) = encode_request(ChatRequest((user("x"),), tools=(tool,)), "openai")["tools"]
    assert encoded["function"]["strict"] is True
    assert encoded["function"]["parameters"] == {
        "type": "object",
        "properties": {"a": {"type": ["integer", "null"]}},
        "required": ["a"],
        "additionalProperties": False,
    }
    assert "description" not in encoded["function"]


def test_assistant_content_for_a_tool_call_turn() -> None:
    turn = assistant("", [ToolCall.from_raw("c", "now", "")])
    assert encode_message(turn, "openai")["content"] is None
    assert encode_message(turn, "aleph-alpha")["content"] == ""
    assert encode_message(turn, "llama.cpp")["content"] == ""
    # A call with empty argument text goes out as an empty object, which servers accept.
    assert encode_message(turn, "vllm")["tool_calls"][0]["function"]["arguments"] == "{}"


def test_the_exact_argument_text_is_sent_back() -> None:
    call = ToolCall.from_raw("c", "f", '{ "a" :1 }')
    assert (
        encode_message(assistant("", [call]))["tool_calls"][0]["function"]["arguments"]
        == '{ "a" :1 }'
    )


def test_tool_message_name_only_where_the_dialect_has_it() -> None:
    message = tool_result(ToolCall("c", "f", {}), "ok")
    assert "name" not in encode_message(message, "openai")
    assert encode_message(message, "vllm")["name"] == "f"


def test_image_url_and_detail() -> None:
    part = encode_message(user([Image.from_url("https://x.test/a.png", detail="low")]))["content"][
        0
    ]
    assert part == {
        "type": "image_url",
        "image_url": {"url": "https://x.test/a.png", "detail": "low"},
    }


def test_encode_query_nice_flag() -> None:
    nice = ChatRequest((user("hi"),), extra={"nice": True, "hosting": "aleph-alpha"})
    assert encode_query(nice, "aleph-alpha") == {"nice": "true"}
    body = encode_request(nice, "aleph-alpha")
    assert "nice" not in body
    assert body["hosting"] == "aleph-alpha"
    assert encode_query(ChatRequest((user("hi"),)), "aleph-alpha") == {}
    assert encode_query(nice, "openai") == {}


def test_llama_cpp_bodies_validate_against_llama_cpp_pythons_request_model() -> None:
    server_types = pytest.importorskip("llama_cpp.server.types")
    request = ChatRequest(
        conversation(),
        tools=(WEATHER,),
        tool_choice="auto",
        response_format=ResponseFormat.from_model(City),
        max_tokens=20,
        top_k=5,
        stop=("x",),
    )
    parsed = server_types.CreateChatCompletionRequest.model_validate(
        encode_request(request, "llama.cpp")
    )
    assert parsed.response_format["type"] == "json_object"
    assert parsed.response_format["schema"] == City.model_json_schema()
    assert parsed.max_tokens == 20
    assert parsed.top_k == 5


# --- decoding a request ---------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["vllm", "openai"])
def test_decode_request_reads_back_an_encoded_request(dialect: str) -> None:
    request = ChatRequest(
        conversation(),
        model="m",
        tools=(WEATHER,),
        tool_choice="required",
        parallel_tool_calls=True,
        response_format=ResponseFormat.from_schema(
            {"type": "object", "properties": {}}, name="r", strict=False
        ),
        max_tokens=10,
        temperature=1.0,
        stop=("a", "b"),
        n=2,
        extra={"min_p": 0.05},
    )
    decoded = decode_request(encode_request(request, dialect, stream=True))
    expected = request
    if dialect == "openai":  # OpenAI's tool messages carry no name
        messages = list(request.messages)
        messages[3] = Message(Role.TOOL, messages[3].content, tool_call_id="call_1")
        expected = ChatRequest(
            tuple(messages),
            **{
                f: getattr(request, f)
                for f in (
                    "model",
                    "tools",
                    "tool_choice",
                    "parallel_tool_calls",
                    "response_format",
                    "max_tokens",
                    "temperature",
                    "stop",
                    "n",
                    "extra",
                )
            },
        )
    assert decoded == expected


def test_decode_request_reads_the_odd_forms() -> None:
    decoded = decode_request(
        {
            "messages": [
                {"role": "developer", "content": "rules"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}, "there"]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {"a": 1}}}],
                },
                {"role": "ipython", "content": "42", "tool_call_id": "c"},
            ],
            "max_tokens": 5,
            "stop": "END",
            "tool_choice": "none",
            "response_format": {"type": "json_object", "schema": {"type": "object"}},
            "hosting": "x",
        }
    )
    assert [m.role for m in decoded.messages] == [Role.SYSTEM, Role.USER, Role.ASSISTANT, Role.TOOL]
    assert decoded.messages[1].content == (Text("hi"), Text("there"))
    assert decoded.messages[2].tool_calls[0].arguments == {"a": 1}
    assert decoded.max_tokens == 5
    assert decoded.stop == ("END",)
    assert decoded.response_format is not None
    assert decoded.response_format.schema == {"type": "object"}
    assert decoded.extra == {"hosting": "x"}


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        ([], InputError, "must be a JSON object"),
        ({}, MessageError, "needs 'messages'"),
        ({"messages": ["hi"]}, MessageError, r"messages\[0\] must be an object"),
        ({"messages": [{"role": "bot", "content": "x"}]}, MessageError, "'bot' is not a role"),
        ({"messages": [{"content": "x"}]}, MessageError, "has no role"),
        ({"messages": [{"role": "user", "content": 5}]}, MessageError, "content must be"),
        (
            {"messages": [{"role": "user", "content": [{"type": "audio"}]}]},
            MessageError,
            "type 'audio'",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": "ftp://x"}]}
                ]
            },
            InputError,
            "http",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"function": {}}]}]},
            MessageError,
            "has no name",
        ),
        ({"messages": [], "tools": [{"type": "function"}]}, SchemaError, r"tools\[0\]"),
        (
            {
                "messages": [],
                "tools": [{"function": {"name": "f", "parameters": {"type": "string"}}}],
            },
            SchemaError,
            "type 'object'",
        ),
        ({"messages": [], "tool_choice": {"type": "function"}}, InputError, "must name a function"),
        (
            {"messages": [], "response_format": {"type": "json_schema"}},
            SchemaError,
            "json_schema.schema",
        ),
    ],
)
def test_decode_request_names_what_is_wrong(
    body: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        decode_request(body)


# --- decoding a response --------------------------------------------------------------------


def completion(**choice: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "llama-3.1",
        "system_fingerprint": "fp_1",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Hi"},
                **choice,
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


def test_decode_a_plain_response() -> None:
    body = completion()
    response = decode_response(body)
    assert response.text == "Hi"
    assert response.finish_reason == FinishReason.STOP
    assert response.usage == Usage(3, 1, 4)
    assert (response.id, response.model, response.created, response.system_fingerprint) == (
        "chatcmpl-9",
        "llama-3.1",
        1700000000,
        "fp_1",
    )
    assert response.raw is body


def test_decode_usage_details() -> None:
    body = completion()
    body["usage"] = {
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 30},
    }
    assert decode_response(body).usage == Usage(100, 50, 150, cached_tokens=64, reasoning_tokens=30)
    body["usage"] = {"prompt_tokens": 2, "completion_tokens": 3}
    assert decode_response(body).usage == Usage(2, 3, 5)
    del body["usage"]
    assert decode_response(body).usage is None


def test_decode_reasoning_content_and_null_content_with_tool_calls() -> None:
    body = completion(
        finish_reason="tool_calls",
        message={
            "role": "assistant",
            "content": None,
            "reasoning_content": "I should look it up.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                },
                {"type": "function", "function": {"name": "now", "arguments": ""}},
            ],
        },
    )
    response = decode_response(body)
    assert response.text == ""
    assert response.message.reasoning == "I should look it up."
    assert response.tool_calls == (
        ToolCall.from_raw("c1", "get_weather", '{"city":"Oslo"}'),
        ToolCall.from_raw("call_1", "now", ""),
    )
    assert response.tool_calls[1].arguments == {}
    assert response.finish_reason == FinishReason.TOOL_CALLS


def test_decode_several_choices_in_index_order() -> None:
    body = completion()
    body["choices"] = [
        {"index": 1, "finish_reason": "length", "message": {"role": "assistant", "content": "B"}},
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "A"}},
    ]
    response = decode_response(body)
    assert [(c.index, c.message.text, c.finish_reason.value) for c in response.choices] == [
        (0, "A", "stop"),
        (1, "B", "length"),
    ]
    assert response.text == "A"


def test_unknown_finish_reason_and_role_are_values() -> None:
    response = decode_response(
        completion(finish_reason="eos", message={"role": "model", "content": "x"})
    )
    assert response.finish_reason == FinishReason.other("eos")
    assert response.finish_reason.value == "eos"
    assert response.message.role is Role.ASSISTANT


def test_decode_with_response_format_parses() -> None:
    body = completion(
        message={"role": "assistant", "content": '{"name": "Oslo", "population": 700000}'}
    )
    response = decode_response(body, response_format=ResponseFormat.from_model(City))
    assert response.parsed == City(name="Oslo", population=700000)
    bad = decode_response(
        completion(message={"role": "assistant", "content": '{"nome": 1}'}), response_format=City
    )
    with pytest.raises(StructuredOutputError) as info:
        _ = bad.parsed
    assert info.value.text == '{"nome": 1}'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("text", "must be a JSON object"),
        ({"object": "list", "data": []}, "no 'choices' list"),
        ({"error": {"message": "model not loaded", "type": "server_error"}}, "model not loaded"),
        ({"choices": []}, "no choices"),
        ({"choices": [None]}, r"choices\[0\] is not an object"),
        ({"choices": [{"message": "hi"}]}, r"choices\[0\].message is not an object"),
        ({"choices": [{"message": {"content": 5}}]}, "neither text nor null"),
        (
            {"choices": [{"message": {"tool_calls": [{"function": {"arguments": "{}"}}]}}]},
            "has no name",
        ),
        (
            {"choices": [{"message": {}}], "usage": {"prompt_tokens": "3"}},
            "prompt_tokens must be an integer",
        ),
        ({"choices": [{"index": "a", "message": {}}]}, "index is not an integer"),
    ],
)
def test_a_body_that_is_not_a_chat_completion_is_a_parse_error(body: Any, message: str) -> None:
    with pytest.raises(ParseError, match=message) as info:
        decode_response(body)
    assert info.value.text is not None
    assert not isinstance(info.value, KeyError | TypeError)


def test_an_openai_refusal_is_the_text() -> None:
    body = completion(
        message={"role": "assistant", "content": None, "refusal": "I can't help with that."}
    )
    assert decode_response(body).text == "I can't help with that."
    assert (
        decode_response(
            completion(message={"role": "assistant", "content": "ok", "refusal": None})
        ).text
        == "ok"
    )


def test_the_deprecated_function_call_form() -> None:
    body = completion(
        finish_reason="function_call",
        message={
            "role": "assistant",
            "content": None,
            "function_call": {"name": "f", "arguments": "{}"},
        },
    )
    assert decode_response(body).tool_calls == (ToolCall.from_raw("call_0", "f", "{}"),)
