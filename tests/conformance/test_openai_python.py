"""Checks against openai-python: the fields the ``openai`` dialect sends are ones its request
types define, and streams assemble to what its own stream accumulation makes of them."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest

from chatlane.events import ChatEvent, accumulate
from chatlane.messages import Image, Message, Role, ToolCall, assistant, system, tool_result, user
from chatlane.request import ChatRequest, ResponseFormat
from chatlane.tools import Tool
from chatlane.wire.openai import StreamAssembler, decode_response, encode_request
from chatlane.wire.sse import SSEDecoder

openai_types = pytest.importorskip("openai.types.chat")
params = pytest.importorskip("openai.types.chat.completion_create_params")

TRANSCRIPTS = Path(__file__).parent.parent / "wire" / "transcripts"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def keys_of(typed_dict: Any) -> set[str]:
    return set(typing.get_type_hints(typed_dict))


def test_the_openai_dialect_sends_only_fields_openai_defines() -> None:
    call = ToolCall("call_1", "f", {"a": 1})
    request = ChatRequest(
        (
            system("s"),
            user(["look", Image.from_bytes(PNG)], name="ann"),
            assistant("", [call]),
            tool_result(call, "done"),
        ),
        model="gpt-4o",
        tools=(
            Tool.from_schema(
                "f", {"type": "object", "properties": {"a": {"type": "integer"}}}, "F.", strict=True
            ),
        ),
        tool_choice="f",
        parallel_tool_calls=True,
        response_format=ResponseFormat.from_schema(
            {"type": "object", "properties": {}}, name="out"
        ),
        max_tokens=5,
        temperature=0.1,
        top_p=0.5,
        stop=("x",),
        seed=1,
        frequency_penalty=0.1,
        presence_penalty=0.1,
        n=1,
        logprobs=True,
        top_logprobs=2,
        user="u",
    )
    body = encode_request(request, "openai", stream=True)
    assert set(body) <= keys_of(params.CompletionCreateParamsStreaming)
    by_role = {
        "system": openai_types.ChatCompletionSystemMessageParam,
        "user": openai_types.ChatCompletionUserMessageParam,
        "assistant": openai_types.ChatCompletionAssistantMessageParam,
        "tool": openai_types.ChatCompletionToolMessageParam,
    }
    for message in body["messages"]:
        assert set(message) <= keys_of(by_role[message["role"]]), message["role"]
    (tool,) = body["tools"]
    assert set(tool) <= keys_of(openai_types.ChatCompletionFunctionToolParam)
    from openai.types.shared_params import FunctionDefinition
    from openai.types.shared_params.response_format_json_schema import JSONSchema

    assert set(tool["function"]) <= keys_of(FunctionDefinition)
    assert set(body["response_format"]["json_schema"]) <= keys_of(JSONSchema)


def openai_final(lines: list[dict[str, Any]]) -> Any:
    from openai._models import construct_type
    from openai.lib.streaming.chat import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk

    state: Any = ChatCompletionStreamState()
    for chunk in lines:
        state.handle_chunk(construct_type(type_=ChatCompletionChunk, value=chunk))
    # get_final_completion raises on a "length" finish; the snapshot is the accumulation itself.
    return state.current_completion_snapshot


def chunks_of(name: str) -> list[dict[str, Any]]:
    decoder = SSEDecoder()
    events = decoder.feed((TRANSCRIPTS / name).read_bytes()) + decoder.finish()
    return [e.json() for e in events if not e.done]


@pytest.mark.parametrize(
    "name",
    [
        "openai_parallel_tool_calls.sse",
        "llama_cpp_python_crlf.sse",
        "aleph_alpha_tool_call.sse",
        "vllm_reasoning.sse",
    ],
)
def test_streams_assemble_as_openai_python_assembles_them(name: str) -> None:
    chunks = chunks_of(name)
    assembler = StreamAssembler()
    events: list[ChatEvent] = []
    for chunk in chunks:
        events += assembler.feed(chunk)
    ours = accumulate(events + assembler.finish())
    theirs = openai_final(chunks)
    message = theirs.choices[0].message
    assert ours.text == (message.content or "")
    assert [(c.id, c.name, c.raw_arguments) for c in ours.tool_calls] == [
        (c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []
    ]
    assert ours.finish_reason == theirs.choices[0].finish_reason
    if theirs.usage is not None:
        assert ours.usage is not None
        assert (
            ours.usage.prompt_tokens,
            ours.usage.completion_tokens,
            ours.usage.total_tokens,
        ) == (
            theirs.usage.prompt_tokens,
            theirs.usage.completion_tokens,
            theirs.usage.total_tokens,
        )


def test_a_completion_decodes_as_openai_python_reads_it() -> None:
    body = json.loads(
        """{"id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": null,
          "message": {"role": "assistant", "content": null, "refusal": null,
            "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{\\"x\\": [1]}"}}]}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12,
          "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 1}}}"""
    )
    theirs = openai_types.ChatCompletion.model_validate(body)
    ours = decode_response(body)
    assert ours.message == Message(
        Role.ASSISTANT, "", (ToolCall.from_raw("t1", "f", '{"x": [1]}'),)
    )
    assert ours.finish_reason == theirs.choices[0].finish_reason
    assert ours.usage is not None
    assert theirs.usage is not None
    assert theirs.usage.prompt_tokens_details is not None
    assert theirs.usage.completion_tokens_details is not None
    assert ours.usage.cached_tokens == theirs.usage.prompt_tokens_details.cached_tokens
    assert ours.usage.reasoning_tokens == theirs.usage.completion_tokens_details.reasoning_tokens
