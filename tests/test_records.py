"""JSON records of messages and requests: lossless round trips and clear errors for bad input."""

from __future__ import annotations

from typing import Any

import pytest

from chatlane._records import (
    message_from_dict,
    message_to_dict,
    redact,
    request_from_dict,
    request_to_dict,
)
from chatlane.errors import InputError, MessageError
from chatlane.messages import Image, ToolCall, assistant, tool_result, user
from chatlane.request import ChatRequest
from chatlane.tools import Tool


def test_messages_round_trip_with_images_and_raw_arguments() -> None:
    call = ToolCall.from_raw("c1", "f", '{"a": 1,}')
    for message in (
        user(["look", Image.from_url("https://example.com/cat.png", detail="low")]),
        assistant("", [call], reasoning="thinking"),
        tool_result(call, {"ok": True}),
    ):
        assert message_from_dict(message_to_dict(message)) == message


def test_a_request_round_trips_with_tools_and_format() -> None:
    request = ChatRequest(
        (user("hi"),),
        model="m",
        tools=(Tool.from_schema("f", {"type": "object", "properties": {"x": {"type": "string"}}}),),
        tool_choice="f",
        response_format={"type": "object", "properties": {"y": {"type": "integer"}}},  # type: ignore[arg-type]
        max_tokens=9,
        stop=("x",),
        extra={"nice": True},
    )
    back = request_from_dict(request_to_dict(request))
    assert back.messages == request.messages
    assert back.tools == request.tools
    assert back.tool_choice == "f"
    assert back.response_format is not None
    assert back.response_format.schema == request.response_format.schema  # type: ignore[union-attr]
    assert (back.max_tokens, back.stop, dict(back.extra)) == (9, ("x",), {"nice": True})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "must be a JSON object"),
        ({}, "non-empty 'messages'"),
        ({"messages": [{"content": "x"}]}, r"messages\[0\] has no 'role'"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "'wizard' is not a role"),
        ({"messages": [{"role": "user", "content": 5}]}, "content must be a string"),
        ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "type 'audio'"),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"id": "x"}]}]},
            r"tool_calls\[0\] needs a 'function'",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "tools": [{}]}, "needs a 'function'"),
    ],
)
def test_bad_bodies_say_what_is_wrong(body: Any, message: str) -> None:
    with pytest.raises((InputError, MessageError), match=message):
        request_from_dict(body)


def test_redact_hides_secret_looking_fields_at_any_depth() -> None:
    assert redact({"api_key": "s", "x": [{"token": "t", "ok": 1}], "Password": "p"}) == {
        "api_key": "[redacted]",
        "x": [{"token": "[redacted]", "ok": 1}],
        "Password": "[redacted]",
    }
