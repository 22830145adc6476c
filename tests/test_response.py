"""Responses, finish reasons and usage."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from chatlane.errors import InputError, StructuredOutputError
from chatlane.messages import ToolCall, assistant
from chatlane.request import ResponseFormat
from chatlane.response import ChatResponse, Choice, FinishReason, Usage


class Point(BaseModel):
    x: int
    y: int


def test_known_finish_reasons_are_the_class_constants() -> None:
    for name in ("stop", "length", "tool_calls", "content_filter", "incomplete"):
        reason = FinishReason.parse(name)
        assert reason is getattr(FinishReason, name.upper())
        assert reason.known
        assert reason == name
        assert repr(reason) == f"FinishReason.{name.upper()}"


def test_unknown_finish_reasons_are_values() -> None:
    reason = FinishReason.parse("eos_token")
    assert reason == FinishReason.other("eos_token")
    assert reason == "eos_token"
    assert reason != "stop"
    assert not reason.known
    assert str(reason) == "eos_token"
    assert repr(reason) == "FinishReason.other('eos_token')"
    assert hash(reason) == hash(FinishReason.other("eos_token"))
    assert FinishReason.parse(None) is FinishReason.INCOMPLETE
    assert FinishReason.parse(reason) is reason


def test_usage_adds_up() -> None:
    total = Usage(10, 5, 15, cached_tokens=4) + Usage(1, 2, 3, reasoning_tokens=1)
    assert total == Usage(11, 7, 18, cached_tokens=4, reasoning_tokens=1)
    assert (Usage(1, 1, 2) + Usage(1, 1, 2)).cached_tokens is None


def test_a_response_has_one_choice_by_default() -> None:
    call = ToolCall("c", "f", {"a": 1})
    response = ChatResponse(assistant("hello", [call]), "tool_calls")  # type: ignore[arg-type]
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.text == "hello"
    assert response.tool_calls == (call,)
    assert response.choices == (Choice(0, response.message, FinishReason.TOOL_CALLS),)


def test_parsed_validates_against_the_requested_format() -> None:
    fmt = ResponseFormat.from_model(Point)
    assert ChatResponse(assistant('{"x": 1, "y": 2}'), response_format=fmt).parsed == Point(
        x=1, y=2
    )
    with pytest.raises(StructuredOutputError) as info:
        _ = ChatResponse(assistant('{"x": 1}'), response_format=fmt).parsed
    assert info.value.text == '{"x": 1}'
    with pytest.raises(InputError, match="not asked for a response_format"):
        _ = ChatResponse(assistant("{}")).parsed
    assert ChatResponse(assistant('{"x": 3, "y": 4}')).parse_as(Point) == Point(x=3, y=4)


def test_raw_and_format_do_not_take_part_in_equality() -> None:
    a = ChatResponse(assistant("x"), raw={"id": 1})
    b = ChatResponse(assistant("x"), raw={"id": 2}, response_format=ResponseFormat.json_object())
    assert a == b
    assert "raw" not in repr(a)
