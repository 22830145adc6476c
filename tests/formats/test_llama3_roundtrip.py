"""What Llama3 renders for a tool-call turn, Llama3 parses back to the same calls.

A model continues the prompt in the format the prompt shows it, so the calls chatlane writes
into a conversation must read back as exactly those calls.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatlane.events import Finished, ToolCallDone, accumulate
from chatlane.formats.llama3 import Llama3
from chatlane.messages import ToolCall, assistant, tool_result, user
from chatlane.request import ChatRequest
from chatlane.tools import Tool, brave_search, code_interpreter, wolfram_alpha

TOOLS = (
    Tool.from_schema("get_weather", {"type": "object", "properties": {"city": {"type": "string"}}}),
    Tool.from_schema("search-docs", {"type": "object", "properties": {}}),
    brave_search,
    wolfram_alpha,
    code_interpreter,
)
CONFIGS = [
    ("3.1", "meta", "json"),
    ("3.1", "meta", "function_tag"),
    ("3.2", "meta", "pythonic"),
    ("3.3", "meta", "pythonic"),
    ("3.1", "hf", "json"),
    ("3.3", "hf", "json"),
]

# Text that spells a special token ("<|eot_id|>") is left out: the parser reads text, where
# it cannot be told from the token itself.
strings = st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=12).filter(
    lambda s: "<|" not in s
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), strings)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.from_regex(r"[a-z]{1,5}", fullmatch=True), scalars, max_size=2),
)
arguments = st.dictionaries(st.from_regex(r"[a-z][a-z_]{0,6}", fullmatch=True), values, max_size=3)


def call_turn(fmt: Llama3, calls: list[ToolCall]) -> tuple[str, str, ChatRequest]:
    """The raw text of the rendered assistant turn (as the model would write it) and its end."""
    request = ChatRequest(
        (user("go"), assistant("", calls), *(tool_result(c, "ok") for c in calls)), tools=TOOLS
    )
    text = fmt.render(request).text
    header = "<|start_header_id|>assistant<|end_header_id|>\n\n"
    start = text.index(header) + len(header)
    ends = [i for i in (text.find("<|eot_id|>", start), text.find("<|eom_id|>", start)) if i >= 0]
    end = min(ends)
    return text[start:end], text[end : end + 10], request


def same_calls(parsed: Any, calls: list[ToolCall]) -> None:
    assert [(c.name, dict(c.arguments)) for c in parsed] == [
        (c.name, dict(c.arguments)) for c in calls
    ]


@pytest.mark.parametrize(("version", "profile", "tool_format"), CONFIGS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_custom_calls_round_trip(version: Any, profile: Any, tool_format: Any, data: Any) -> None:
    fmt = Llama3(version, profile, tool_format)
    # (the hf templates take one call per turn)
    count = data.draw(st.integers(1, 1 if profile == "hf" else 3), label="calls")
    calls = [
        ToolCall(
            f"c{i}",
            data.draw(st.sampled_from(["get_weather", "search-docs"])),
            data.draw(arguments),
        )
        for i in range(count)
    ]
    raw, stop, request = call_turn(fmt, calls)
    parsed = fmt.parse(raw, request, stop_sequence=stop)
    same_calls(parsed.tool_calls, calls)
    assert parsed.content == ""
    assert parsed.unknown_tools == ()


@pytest.mark.parametrize(("version", "profile", "tool_format"), CONFIGS)
@pytest.mark.parametrize(
    "call",
    [
        ToolCall("b", "brave_search", {"query": 'say "hi" \\ there, [ok]'}),
        ToolCall("w", "wolfram_alpha", {"query": "100th decimal of pi"}),
        ToolCall("c", "code_interpreter", {"code": "import math\nprint(math.pi)"}),
    ],
)
def test_builtin_calls_round_trip(
    version: Any, profile: Any, tool_format: Any, call: ToolCall
) -> None:
    fmt = Llama3(version, profile, tool_format)
    raw, stop, request = call_turn(fmt, [call])
    parsed = fmt.parse(raw, request, stop_sequence=stop)
    same_calls(parsed.tool_calls, [call])
    if profile == "meta" or version != "3.2":
        assert stop == "<|eom_id|>"
        assert parsed.stop_sequence == "<|eom_id|>"


@pytest.mark.parametrize(("version", "profile", "tool_format"), CONFIGS)
def test_streaming_one_character_at_a_time_gives_the_same_calls(
    version: Any, profile: Any, tool_format: Any
) -> None:
    fmt = Llama3(version, profile, tool_format)
    calls = [
        ToolCall("a", "get_weather", {"city": 'Paris, "la" [ville]'}),
        ToolCall("b", "search-docs", {}),
    ][: 1 if profile == "hf" else 2]
    raw, stop, request = call_turn(fmt, calls)
    parser = fmt.stream_parser(request)
    events = [e for ch in raw for e in parser.feed(ch)]
    events += parser.finish(stop)
    assert isinstance(events[-1], Finished)
    done = [e for e in events if isinstance(e, ToolCallDone)]
    assert len(done) == len(calls)
    response = accumulate(events)
    same_calls(response.message.tool_calls, calls)


def test_plain_text_streams_without_delay() -> None:
    fmt = Llama3()
    parser = fmt.stream_parser(ChatRequest((user("hi"),), tools=TOOLS))
    out = parser.feed("Hello there")
    assert "".join(getattr(e, "text", "") for e in out) == "Hello there"
