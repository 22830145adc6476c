"""The event stream and its accumulation into a response."""

from __future__ import annotations

import asyncio
import typing
from collections.abc import AsyncIterator

from chatlane.events import (
    Accumulator,
    ChatEvent,
    Finished,
    ReasoningDelta,
    ResponseStarted,
    TextDelta,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStarted,
    UsageReported,
    aaccumulate,
    accumulate,
)
from chatlane.messages import ToolCall
from chatlane.request import ResponseFormat
from chatlane.response import FinishReason, Usage

EVENTS: list[ChatEvent] = [
    ResponseStarted("r1", "llama", 7),
    ReasoningDelta("Need "),
    ReasoningDelta("weather."),
    TextDelta("Checking"),
    TextDelta("."),
    ToolCallStarted(0, "c1", "get_weather"),
    ToolCallDelta(0, '{"city":'),
    ToolCallDelta(0, '"Oslo"}'),
    ToolCallDone(0, ToolCall.from_raw("c1", "get_weather", '{"city":"Oslo"}')),
    Finished(FinishReason.TOOL_CALLS),
    UsageReported(Usage(3, 4, 7)),
]


def test_accumulate_a_whole_stream() -> None:
    response = accumulate(EVENTS)
    assert response.text == "Checking."
    assert response.message.reasoning == "Need weather."
    assert response.tool_calls == (ToolCall.from_raw("c1", "get_weather", '{"city":"Oslo"}'),)
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.usage == Usage(3, 4, 7)
    assert (response.id, response.model, response.created) == ("r1", "llama", 7)


def test_a_partial_stream_keeps_what_arrived() -> None:
    acc = Accumulator()
    for event in EVENTS[:7]:
        acc.add(event)
    partial = acc.response()
    assert partial.finish_reason is FinishReason.INCOMPLETE
    assert partial.text == "Checking."
    # The call that had not finished is there, with the argument text received so far.
    (call,) = partial.tool_calls
    assert (call.id, call.name, call.raw_arguments, call.valid) == (
        "c1",
        "get_weather",
        '{"city":',
        False,
    )
    assert accumulate([]).finish_reason is FinishReason.INCOMPLETE
    assert accumulate([]).text == ""


def test_the_last_usage_counts_and_started_info_merges() -> None:
    response = accumulate(
        [
            ResponseStarted("r1"),
            ResponseStarted(None, "m", None, "fp"),
            UsageReported(Usage(1, 1, 2)),
            UsageReported(Usage(1, 5, 6)),
        ]
    )
    assert (response.id, response.model, response.system_fingerprint) == ("r1", "m", "fp")
    assert response.usage == Usage(1, 5, 6)


def test_choices_are_kept_apart() -> None:
    response = accumulate(
        [
            TextDelta("b", 1),
            TextDelta("a", 0),
            Finished(FinishReason.LENGTH, 1),
            Finished(FinishReason.STOP, 0, "###"),
        ]
    )
    assert [(c.index, c.message.text, c.finish_reason) for c in response.choices] == [
        (0, "a", FinishReason.STOP),
        (1, "b", FinishReason.LENGTH),
    ]
    assert response.stop_sequence == "###"


def test_async_accumulation_and_the_format() -> None:
    async def events() -> AsyncIterator[ChatEvent]:
        for event in (TextDelta('{"a": 1}'), Finished(FinishReason.STOP)):
            yield event

    response = asyncio.run(aaccumulate(events(), response_format=ResponseFormat.json_object()))
    assert response.parsed == {"a": 1}


def test_every_event_has_its_own_kind() -> None:
    kinds = [t.kind for t in typing.get_args(ChatEvent)]
    assert len(set(kinds)) == len(kinds) == 9
