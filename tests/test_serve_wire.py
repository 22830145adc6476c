"""The wire codec's response encoders read back by its decoders: `encode_response` by
`decode_response`, `StreamEncoder` chunks by `StreamAssembler`, for any mix of text,
reasoning, tool calls and usage (and in OpenAI's exact chunk shapes)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chatlane.events import (
    ChatEvent,
    Finished,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStarted,
    UsageReported,
    accumulate,
)
from chatlane.messages import Message, Role, ToolCall
from chatlane.response import ChatResponse, FinishReason, Usage
from chatlane.wire.openai import (
    StreamAssembler,
    StreamEncoder,
    decode_response,
    encode_response,
    encode_usage,
)

text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
arguments = st.dictionaries(
    st.text("abcxyz", min_size=1, max_size=5), st.integers() | text, max_size=3
)


@st.composite
def responses(draw: st.DrawFn) -> ChatResponse:
    calls = tuple(
        ToolCall(f"call_{i}", draw(st.sampled_from(["get_weather", "add", "f"])), args)
        for i, args in enumerate(draw(st.lists(arguments, max_size=3)))
    )
    reasoning = draw(st.none() | text.filter(bool))
    message = Message(Role.ASSISTANT, draw(text), calls, reasoning=reasoning)
    reason = (
        FinishReason.TOOL_CALLS
        if calls
        else draw(st.sampled_from([FinishReason.STOP, FinishReason.LENGTH]))
    )
    usage = draw(
        st.none()
        | st.builds(
            lambda p, c, cached, r: Usage(p, c, p + c, cached, r),
            st.integers(0, 999),
            st.integers(0, 999),
            st.none() | st.integers(0, 9),
            st.none() | st.integers(0, 9),
        )
    )
    stop = draw(st.none() | st.sampled_from(["</s>", "<|eot_id|>"]))
    return ChatResponse(
        message,
        reason,
        usage,
        model="m",
        id="chatcmpl-1",
        created=1730000000,
        stop_sequence=stop,
    )


def _events(response: ChatResponse, cut: int) -> list[ChatEvent]:
    """The events a backend would stream for ``response``, text cut every ``cut`` characters."""
    message = response.message
    events: list[ChatEvent] = []
    for start in range(0, len(message.reasoning or ""), cut):
        events.append(ReasoningDelta((message.reasoning or "")[start : start + cut]))
    for start in range(0, len(message.text), cut):
        events.append(TextDelta(message.text[start : start + cut]))
    for i, call in enumerate(message.tool_calls):
        events.append(ToolCallStarted(i, call.id, call.name))
        raw = call.raw_arguments
        # Some parsers stream no argument text and deliver the call whole.
        for start in range(0, len(raw) // 2, cut):
            events.append(ToolCallDelta(i, raw[start : min(start + cut, len(raw) // 2)]))
        events.append(ToolCallDone(i, call))
    if response.usage is not None:
        events.append(UsageReported(response.usage))
    events.append(Finished(response.finish_reason, 0, response.stop_sequence))
    return events


@settings(max_examples=60, deadline=None)
@given(responses())
def test_a_whole_answer_reads_back_as_it_was(response: ChatResponse) -> None:
    assert decode_response(encode_response(response)) == response


@settings(max_examples=60, deadline=None)
@given(responses(), st.integers(1, 7))
def test_a_streamed_answer_reads_back_as_it_was(response: ChatResponse, cut: int) -> None:
    encoder = StreamEncoder(id="chatcmpl-1", model="m", created=1730000000, include_usage=True)
    assembler = StreamAssembler()
    events: list[ChatEvent] = []
    for event in _events(response, cut):
        for chunk in encoder.encode(event):
            events += assembler.feed(chunk)
    for chunk in encoder.finish():
        events += assembler.feed(chunk)
    events += assembler.finish()
    assert accumulate(events) == response


def test_chunks_have_openais_shapes() -> None:
    encoder = StreamEncoder(id="chatcmpl-9", model="llama", created=5, include_usage=True)
    call = ToolCall("call_a", "get_weather", {"city": "Paris"})
    chunks: list[dict[str, Any]] = []
    script: list[ChatEvent] = [
        ReasoningDelta("think"),
        TextDelta("Hi"),
        ToolCallStarted(0, "call_a", "get_weather"),
        ToolCallDelta(0, '{"city": '),
        ToolCallDone(0, call),
        UsageReported(Usage(3, 4, 7)),
        Finished(FinishReason.TOOL_CALLS),
    ]
    for event in script:
        chunks += encoder.encode(event)
    chunks += encoder.finish()
    head = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 5, "model": "llama"}

    def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        item = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**head, "choices": [item], "usage": None}

    assert chunks == [
        choice({"role": "assistant", "content": ""}),
        choice({"reasoning_content": "think"}),
        choice({"content": "Hi"}),
        choice(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            }
        ),
        choice({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        choice({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        choice({}, "tool_calls"),
        {
            **head,
            "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        },
    ]


def test_without_include_usage_no_chunk_mentions_usage() -> None:
    encoder = StreamEncoder(id="c", model="m", created=1)
    chunks = encoder.encode(TextDelta("a")) + encoder.encode(UsageReported(Usage(1, 1, 2)))
    chunks += encoder.encode(Finished(FinishReason.STOP)) + encoder.finish()
    assert all("usage" not in c for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"]


def test_a_call_without_arguments_is_sent_an_empty_object() -> None:
    encoder = StreamEncoder(id="c", model="m", created=1)
    chunks = encoder.encode(ToolCallDone(0, ToolCall.from_raw("call_0", "now", "")))
    sent = "".join(
        c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in chunks[1:]
    )
    assert sent == "{}"
    whole = encode_response(
        ChatResponse(Message(Role.ASSISTANT, "", (ToolCall.from_raw("call_0", "now", ""),)))
    )
    assert whole["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert whole["choices"][0]["message"]["content"] is None


def test_usage_details_are_written_as_openai_does() -> None:
    assert encode_usage(Usage(10, 5, 15, cached_tokens=4, reasoning_tokens=2)) == {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }


@settings(max_examples=40, deadline=None)
@given(responses(), st.integers(1, 7))
def test_sse_bytes_carry_exactly_the_chunks(response: ChatResponse, cut: int) -> None:
    import json

    def encoder() -> StreamEncoder:
        return StreamEncoder(id="chatcmpl-1", model="m", created=1, include_usage=True)

    as_dicts, as_bytes = encoder(), encoder()
    for event in _events(response, cut):
        data = as_bytes.encode_sse(event)
        blocks = [b for b in data.split(b"\n\n") if b]
        assert all(b.startswith(b"data: ") for b in blocks)
        assert [json.loads(b[6:]) for b in blocks] == as_dicts.encode(event)
