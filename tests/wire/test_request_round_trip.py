"""A property: any request, encoded for a server and read back, is the request it was."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chatlane.messages import Image, Message, Role, Text, ToolCall
from chatlane.request import ChatRequest, ResponseFormat
from chatlane.tools import Tool
from chatlane.wire.openai import decode_request, encode_request

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))

_text = st.text(max_size=20)
_name = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True)
_arguments = st.one_of(
    st.dictionaries(_name, st.one_of(st.integers(), _text), max_size=2).map(json.dumps),
    st.text(min_size=1, max_size=10).filter(str.strip),  # not JSON: sent back exactly as it came
)
_calls = st.lists(
    st.builds(ToolCall.from_raw, st.text("abc123", min_size=1, max_size=6), _name, _arguments),
    max_size=2,
)
_part = st.one_of(
    _text.map(Text),
    st.sampled_from([None, "low", "high"]).map(
        lambda d: Image(data=PNG, media_type="image/png", detail=d)
    ),
    st.just(Image.from_url("https://example.test/a.png")),
)
_content = st.one_of(_text, st.lists(_part, min_size=1, max_size=3).map(tuple))


@st.composite
def messages(draw: st.DrawFn) -> Message:
    role = draw(st.sampled_from(list(Role)))
    if role is Role.ASSISTANT:
        return Message(role, draw(_text), tuple(draw(_calls)))
    if role is Role.TOOL:
        return Message(role, draw(_content), tool_call_id=draw(_name), name=draw(st.none() | _name))
    return Message(role, draw(_content), name=draw(st.none() | _name))


_schema = st.builds(
    lambda props: {"type": "object", "properties": {p: {"type": "string"} for p in props}},
    st.lists(_name, max_size=3, unique=True),
)
_tools = st.lists(
    st.builds(Tool.from_schema, _name, _schema, st.none() | _text, strict=st.booleans()),
    max_size=3,
    unique_by=lambda t: t.name,
)


@st.composite
def requests(draw: st.DrawFn) -> ChatRequest:
    tools = draw(_tools)
    choices = ["auto", "none", "required", *(t.name for t in tools)]
    return ChatRequest(
        tuple(draw(st.lists(messages(), min_size=1, max_size=5))),
        model=draw(st.none() | _name),
        tools=tuple(tools),
        tool_choice=draw(st.none() | st.sampled_from(choices)),
        parallel_tool_calls=draw(st.none() | st.booleans()),
        response_format=draw(
            st.none()
            | st.just(ResponseFormat.json_object())
            | st.builds(ResponseFormat.from_schema, _schema, name=_name, strict=st.booleans())
        ),
        max_tokens=draw(st.none() | st.integers(1, 1000)),
        temperature=draw(st.none() | st.floats(0, 2)),
        top_p=draw(st.none() | st.floats(0, 1)),
        top_k=draw(st.none() | st.integers(1, 100)),
        stop=tuple(draw(st.lists(_text, max_size=2))),
        seed=draw(st.none() | st.integers(0, 2**31)),
        n=draw(st.none() | st.integers(1, 3)),
        extra=draw(
            st.dictionaries(st.sampled_from(["min_p", "repetition_penalty"]), st.floats(0, 1))
        ),
    )


@settings(max_examples=200, deadline=None)
@given(requests())
def test_a_vllm_body_reads_back_as_the_request(request: ChatRequest) -> None:
    body: Any = json.loads(json.dumps(encode_request(request, "vllm", stream=True)))
    # A strict tool goes out in the strict schema form, so that is what comes back.
    sent_tools = tuple(
        Tool(t.name, t.description, t.strict_parameters(), strict=True) if t.strict else t
        for t in request.tools
    )
    assert decode_request(body) == dataclasses.replace(request, tools=sent_tools)
