"""Reading Llama 4 output: both call forms, with or without the python tags, whole and
streamed in any split."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatlane.events import TextDelta, ToolCallDone, accumulate
from chatlane.formats.base import ParsedOutput
from chatlane.formats.llama4 import Llama4
from chatlane.formats.llama4.parser import (
    Llama4StreamParser,
    parse_output,
    sequential_ids,
)
from chatlane.messages import user
from chatlane.request import ChatRequest
from chatlane.response import FinishReason
from chatlane.tools import Tool

WEATHER = Tool.from_schema(
    "get_weather",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    },
)
NOW = Tool.from_schema("now", None)
TOOLS = (WEATHER, NOW)


def parse(raw: str, **kw: Any) -> ParsedOutput:
    return parse_output(raw, tools=TOOLS, ids=sequential_ids(), **kw)


def calls(out: ParsedOutput) -> list[tuple[str, dict[str, Any]]]:
    return [(c.name, dict(c.arguments)) for c in out.tool_calls]


PARIS = ("get_weather", {"city": "Paris"})


@pytest.mark.parametrize(
    "raw",
    [
        '[get_weather(city="Paris")]',
        "[get_weather(city='Paris')]",
        '<|python_start|>[get_weather(city="Paris")]<|python_end|>',
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        '{"type": "function", "name": "get_weather", "parameters": {"city": "Paris"}}',
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',
        '{"function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}',
        '<|python_start|>{"name": "get_weather", "parameters": {"city": "Paris"}}<|python_end|>',
        '[{"name": "get_weather", "parameters": {"city": "Paris"}}]',
        '  \n[get_weather(city="Paris")]\n',
    ],
)
def test_either_call_form_reads_as_the_call(raw: str) -> None:
    out = parse(raw)
    assert calls(out) == [PARIS]
    assert out.content == ""
    assert out.finish_reason is FinishReason.TOOL_CALLS
    assert out.malformed_calls == ()


def test_parallel_calls_in_both_forms() -> None:
    assert calls(parse('[get_weather(city="Paris"), now()]')) == [PARIS, ("now", {})]
    json_calls = (
        '{"name": "get_weather", "parameters": {"city": "Paris"}}; '
        '{"name": "now", "parameters": {}}'
    )
    assert calls(parse(json_calls)) == [PARIS, ("now", {})]
    tagged = (
        '<|python_start|>{"name": "get_weather", "parameters": {"city": "Paris"}}'
        '{"name": "now", "parameters": {}}<|python_end|>'
    )
    assert calls(parse(tagged)) == [PARIS, ("now", {})]


def test_pythonic_values_and_positional_arguments() -> None:
    out = parse('[get_weather("Paris", unit=None), now()]')
    assert calls(out) == [("get_weather", {"city": "Paris", "unit": None}), ("now", {})]
    out = parse("[get_weather(city=true, unit=[1, 2.5, 'x'])]")
    assert calls(out) == [("get_weather", {"city": True, "unit": [1, 2.5, "x"]})]


def test_prose_around_calls_is_kept() -> None:
    out = parse('Let me check. [get_weather(city="Paris")] Done.')
    assert out.content == "Let me check. Done."
    assert calls(out) == [PARIS]


def test_text_that_only_looks_like_a_call_is_text() -> None:
    raw = 'See [1] and [the docs] or {x} and {"q": 1} or [a, b] <|image|> <|eot_id|>.'
    out = parse(raw)
    assert out.content == raw
    assert out.tool_calls == ()
    assert out.malformed_calls == ()


def test_a_malformed_call_stays_text_with_a_flag_and_the_stream_goes_on() -> None:
    raw = '[get_weather(city="Paris"]) and more text'
    parser = Llama4StreamParser(TOOLS, ids=sequential_ids())
    events = parser.feed(raw[:25]) + parser.feed(raw[25:]) + parser.finish("<|eot|>")
    out = parser.result()
    assert out.content == raw
    assert out.tool_calls == ()
    assert out.malformed_calls == ('[get_weather(city="Paris"])',)
    assert out.stop_sequence == "<|eot|>"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == raw
    bad_json = '{"name": "get_weather", "parameters": {"city": Paris}}'
    out = parse(bad_json + " then")
    assert out.content == bad_json + " then"
    assert out.malformed_calls == (bad_json,)


def test_an_unbalanced_call_at_the_end_is_text_unless_cut_off() -> None:
    raw = 'Sure: [get_weather(city="Par'
    whole = parse(raw)
    assert whole.content == raw
    assert whole.malformed_calls == ('[get_weather(city="Par',)
    assert whole.tool_calls == ()
    cut = parse(raw, truncated=True)
    assert cut.content == "Sure:"
    assert cut.partial_call == '[get_weather(city="Par'
    assert cut.tool_calls == ()
    assert cut.finish_reason is FinishReason.LENGTH
    head = parse("[get_wea", truncated=True)
    assert head.partial_call == "[get_wea"
    assert head.content == ""


def test_stop_tokens_end_the_turn_and_show_on_the_response() -> None:
    out = parse('[get_weather(city="Paris")]<|eom|>ignored')
    assert calls(out) == [PARIS]
    assert out.stop_sequence == "<|eom|>"
    out = parse("Hello.<|eot|>[now()]")
    assert (out.content, out.tool_calls, out.stop_sequence) == ("Hello.", (), "<|eot|>")
    # a stop token inside an unfinished call ends the call as text
    out = parse('[get_weather(city="Pa<|eot|>')
    assert out.content == '[get_weather(city="Pa'
    assert out.stop_sequence == "<|eot|>"
    assert out.malformed_calls == ('[get_weather(city="Pa',)
    # told by the caller (a server that strips the stop token)
    assert parse("Hi", stop_sequence="<|eom|>").stop_sequence == "<|eom|>"


def test_unknown_tools_are_calls_and_named() -> None:
    out = parse("[send_mail(to='a@b')]")
    assert calls(out) == [("send_mail", {"to": "a@b"})]
    assert out.unknown_tools == ("send_mail",)


def test_plain_text_is_released_at_once() -> None:
    parser = Llama4StreamParser(TOOLS)
    assert parser.feed("Hello") == [TextDelta("Hello")]
    assert parser.feed(" wor") == [TextDelta(" wor")]
    assert parser.feed("ld [") == [TextDelta("ld")]  # the space waits: trailing whitespace
    assert "".join(e.text for e in parser.feed("1] ok") if isinstance(e, TextDelta)) == " [1] ok"


def test_the_format_s_stream_parser_and_parse_agree() -> None:
    fmt = Llama4("hf")
    request = ChatRequest((user("x"),), tools=TOOLS)
    raw = 'On it. <|python_start|>[get_weather(city="Paris"), now()]<|python_end|>'
    parser = fmt.stream_parser(request)
    events = [e for piece in raw for e in parser.feed(piece)] + parser.finish("<|eom|>")
    response = accumulate(events)
    whole = fmt.parse(raw, request, stop_sequence="<|eom|>")
    assert response.text == whole.content == "On it."
    assert [(c.name, dict(c.arguments)) for c in response.tool_calls] == calls(whole)
    assert response.stop_sequence == "<|eom|>"
    assert len([e for e in events if isinstance(e, ToolCallDone)]) == 2


# -- any split of any output reads as the whole -----------------------------------------

PIECES = [
    '[get_weather(city="Paris")]',
    "[now()]",
    '[get_weather(city="a]b\\"c", unit=\'x\'), now()]',
    '{"name": "get_weather", "parameters": {"city": "{[<|eot|>]}"}}',
    '{"name": "now", "parameters": {}}',
    "<|python_start|>",
    "<|python_end|>",
    "<|eom|>",
    "<|eot|>",
    "<|eo",
    "<|python",
    "[get_weather(city=",
    '{"name": ',
    '{"q": 1}',
    "[1]",
    "[a b]",
    "{x}",
    "[",
    "{",
    "<",
    "(",
    ")",
    "]",
    "}",
    '"',
    "'",
    ";",
    ",",
    " ",
    "\n",
    "Hello",
    "é🙂",
]
outputs = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=6)), max_size=10).map(
    "".join
)


def _stream(raw: str, cuts: list[int], truncated: bool) -> tuple[ParsedOutput, list[Any]]:
    parser = Llama4StreamParser(TOOLS, ids=sequential_ids())
    events: list[Any] = []
    last = 0
    for cut in [*sorted(set(cuts)), len(raw)]:
        events += parser.feed(raw[last:cut])
        last = cut
    events += parser.finish(truncated=truncated)
    return parser.result(), events


@settings(max_examples=300, deadline=None)
@given(raw=outputs, data=st.data(), truncated=st.booleans())
def test_any_split_reads_as_the_whole(raw: str, data: Any, truncated: bool) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=8))
    whole = parse_output(raw, tools=TOOLS, ids=sequential_ids(), truncated=truncated)
    streamed, events = _stream(raw, cuts, truncated)
    assert streamed == whole
    response = accumulate(events)
    assert response.text == whole.content
    assert [c.name for c in response.tool_calls] == [c.name for c in whole.tool_calls]
    # nothing is lost: every character is content, a call, a control token, cut off, or
    # after the stop
    assert whole.content == whole.content.strip()


@settings(max_examples=100, deadline=None)
@given(raw=outputs, size=st.integers(1, 7))
def test_fixed_size_chunks_read_as_the_whole(raw: str, size: int) -> None:
    whole = parse_output(raw, tools=TOOLS, ids=sequential_ids())
    streamed, _ = _stream(raw, list(range(0, len(raw), size)), False)
    assert streamed == whole
