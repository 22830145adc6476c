"""ToolCallStreamParser: text deltas in, events out; the same answer however the text is split."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatlane.events import (
    ChatEvent,
    Finished,
    TextDelta,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStarted,
    accumulate,
)
from chatlane.formats.base import StreamParser
from chatlane.formats.llama3.parser import ToolCallStreamParser, parse_output, sequential_ids
from chatlane.tools import Tool, brave_search, code_interpreter

WEATHER = Tool.from_schema(
    "get_weather",
    {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}},
)
TOOLS = (WEATHER, brave_search, code_interpreter)


def stream(
    pieces: list[str], *, tools: tuple[Tool, ...] = TOOLS, truncated: bool = False
) -> tuple[list[ChatEvent], ToolCallStreamParser]:
    parser = ToolCallStreamParser(tools, ids=sequential_ids())
    events: list[ChatEvent] = []
    for piece in pieces:
        events += parser.feed(piece)
    events += parser.finish(truncated=truncated)
    return events, parser


def text_of(events: list[ChatEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def test_it_is_a_stream_parser() -> None:
    assert isinstance(ToolCallStreamParser(), StreamParser)


# -- no added delay for plain text -----------------------------------------------------------


@settings(deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="<{[`")))
def test_plain_text_streams_without_delay(text: str) -> None:
    parser = ToolCallStreamParser()
    seen = ""
    for i, char in enumerate(text):
        seen += text_of(parser.feed(char))
        expected = text[: i + 1].strip()
        first = re.fullmatch(r"\s*([A-Za-z_][\w.\-]*)(\s*)", text[: i + 1])
        if first and (not first[2] or re.fullmatch(r".+\.call", first[1])):
            # The first word may still become a built-in call, ``brave_search.call(...)``.
            assert seen == ""
        else:
            # Everything fed so far is out, except whitespace that may still turn out to be
            # the end of the answer.
            assert seen == expected
    parser.finish()


def test_builtin_call_without_python_tag_at_the_start_or_after_a_call() -> None:
    parser = ToolCallStreamParser(TOOLS, ids=sequential_ids())
    assert parser.feed("brave_search") == []
    events = parser.feed('.call(query="x")')
    assert [type(e) for e in events] == [ToolCallStarted, ToolCallDelta, ToolCallDone]
    events = parser.feed('brave_search.call(query="y") Then text, and later brave_search.call(')
    assert [type(e) for e in events][:3] == [ToolCallStarted, ToolCallDelta, ToolCallDone]
    assert all(isinstance(e, TextDelta) for e in events[3:])
    assert text_of(events) == "Then text, and later brave_search.call("
    assert text_of(parser.feed(' query="z")')) == ' query="z")'


def test_possible_call_prefix_is_held_only_until_disproved() -> None:
    parser = ToolCallStreamParser(TOOLS)
    assert text_of(parser.feed("Set ")) == "Set"
    assert parser.feed("{") == []
    assert text_of(parser.feed("x")) == " {x"
    assert parser.feed(" [") == []
    assert text_of(parser.feed("1")) == " [1"
    assert parser.feed(" <") == []
    assert text_of(parser.feed("b")) == " <b"
    assert parser.feed(" `") == []
    assert text_of(parser.feed("c")) == " `c"
    assert parser.feed(' {"') == []
    assert text_of(parser.feed("city")) == ' {"city'  # no call starts with that key
    assert parser.feed(' {"na') == []


def test_text_before_a_call_is_out_before_the_call_completes() -> None:
    parser = ToolCallStreamParser(TOOLS, ids=sequential_ids())
    assert text_of(parser.feed("Let me look that up.\n")) == "Let me look that up."
    assert parser.feed('{"name": "get_weather", "parameters": {"city": "Pa') == []
    events = parser.feed('ris"}}')
    assert [type(e) for e in events] == [ToolCallStarted, ToolCallDelta, ToolCallDone]
    started, delta, done = events
    assert isinstance(started, ToolCallStarted)
    assert (started.index, started.id, started.name) == (0, "call_0", "get_weather")
    assert isinstance(delta, ToolCallDelta)
    assert json.loads(delta.arguments) == {"city": "Paris"}
    assert isinstance(done, ToolCallDone)
    assert done.call.arguments == {"city": "Paris"}
    (finished,) = parser.finish("<|eom_id|>")
    assert isinstance(finished, Finished)
    assert finished.finish_reason == "tool_calls"
    assert finished.stop_sequence == "<|eom_id|>"


def test_events_for_several_calls_and_text_after() -> None:
    raw = '[get_weather(city="A"), get_weather(city="B", days=2)] Done.<|eot_id|>'
    events, _ = stream([raw])
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "ToolCallStarted",
        "ToolCallDelta",
        "ToolCallDone",
        "ToolCallStarted",
        "ToolCallDelta",
        "ToolCallDone",
        "TextDelta",
        "Finished",
    ]
    response = accumulate(events)
    assert response.message.content == "Done."
    assert [c.id for c in response.message.tool_calls] == ["call_0", "call_1"]
    assert response.stop_sequence == "<|eot_id|>"
    assert response.finish_reason == "tool_calls"


def test_stop_token_split_across_pieces_and_text_after_it_is_ignored() -> None:
    events, parser = stream(["Hi<|e", "ot_", "id|>", "more"])
    assert text_of(events) == "Hi"
    assert parser.result().stop_sequence == "<|eot_id|>"
    assert accumulate(events).stop_sequence == "<|eot_id|>"


def test_code_for_code_interpreter_is_one_call_at_the_end() -> None:
    pieces = ["<|python_", "tag|>import ", "math\nprint(", "math.pi)", "<|eom", "_id|>"]
    events, parser = stream(pieces)
    assert [c.name for c in accumulate(events).message.tool_calls] == ["code_interpreter"]
    assert accumulate(events).message.tool_calls[0].arguments == {
        "code": "import math\nprint(math.pi)"
    }
    assert parser.result().stop_sequence == "<|eom_id|>"


def test_truncated_stream_reports_length_and_no_call() -> None:
    events, parser = stream(['Ok. {"name": "get_weather", "parameters": {"ci'], truncated=True)
    response = accumulate(events)
    assert response.finish_reason == "length"
    assert response.message.tool_calls == ()
    assert response.message.content == "Ok."
    assert parser.partial_call == '{"name": "get_weather", "parameters": {"ci'


# -- the streaming property: any split gives the answer parsing it whole gives --------------

FRAGMENTS = [
    '{"name": "get_weather", "parameters": {"city": "Paris"}}',
    '{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"days\\": 2}"}}',
    '[get_weather(city="a, b", days=3), brave_search(query="x [y] \\"z\\"")]',
    '<function=get_weather>{"city": {"nested": [1, "}"]}}</function>',
    '```json\n{"name": "get_weather", "parameters": {}}\n```',
    '```python\nprint("hi")\n```',
    '```{"name": "get_weather", "parameters": {"city": "Oslo"}}```',
    '```json\n{"name": "get_weather", "parameters": {}}\n[get_weather(days=1)]\n```',
    "{x} [1] <b> `y`",
    '<|python_tag|>print("unclosed"',
    '<|python_tag|>brave_search.call(query="say \\"hi\\"")',
    "<|python_tag|>import os\nprint(os.getcwd())",
    "<|python_tag|>",
    '{"name": "unknown", "parameters": [1]}',
    '{"name": "get_weather", "parameters": {"city": "unfinished',
    "[get_weather(city=",
    "<function=",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_ta",
    "```",
    "{",
    "[",
    "}",
    "]",
    "(",
    ")",
    '"',
    "'",
    "\\",
    ";",
    ",",
    "\n",
    "  ",
    "<",
    ">",
    "`",
]
TRICKY = st.text(alphabet=st.sampled_from(list("ab {}[]()<>|\"'`\n;,=_.\\:-é😀")), max_size=12)
OUTPUTS = st.lists(
    st.sampled_from(FRAGMENTS) | TRICKY | st.just("Sure, here you go."), max_size=8
).map("".join)


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def outcome(events: list[ChatEvent], parser: ToolCallStreamParser) -> tuple[Any, ...]:
    response = accumulate(events)
    result = parser.result()
    assert isinstance(events[-1], Finished)
    assert sum(isinstance(e, Finished) for e in events) == 1
    return (
        response.message,
        response.finish_reason,
        response.stop_sequence,
        result.partial_call,
        result.unknown_tools,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OUTPUTS, st.lists(st.integers(min_value=0, max_value=10_000), max_size=12), st.booleans())
def test_any_split_gives_the_same_answer_as_parsing_whole(
    raw: str, cuts: list[int], truncated: bool
) -> None:
    whole = outcome(*stream([raw], truncated=truncated))
    assert outcome(*stream(list(raw), truncated=truncated)) == whole
    assert outcome(*stream(split(raw, cuts), truncated=truncated)) == whole
    parsed = parse_output(raw, tools=TOOLS, truncated=truncated, ids=sequential_ids())
    assert parsed.message() == whole[0]
    assert parsed.finish_reason == whole[1]
    assert parsed.partial_call == whole[3]


# -- round trip: a call written in any format reads back exactly ------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**12), max_value=10**12)
    | st.floats(allow_nan=False, allow_infinity=False, width=64)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ARGUMENTS = st.dictionaries(
    st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), JSON_VALUES, max_size=4
)
NAMES = st.from_regex(r"[a-z][a-z0-9_\-]{0,20}", fullmatch=True)


def python_literal(value: Any, json_style: bool) -> str:
    if value is None:
        return "null" if json_style else "None"
    if isinstance(value, bool):
        return ("true" if value else "false") if json_style else repr(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=json_style) if json_style else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(python_literal(v, json_style) for v in value) + "]"
    items = (
        f"{python_literal(k, json_style)}: {python_literal(v, json_style)}"
        for k, v in value.items()
    )
    return "{" + ", ".join(items) + "}"


def render(name: str, arguments: dict[str, Any], form: str) -> str:
    args = json.dumps(arguments, ensure_ascii=form.endswith("ascii"))
    if form.startswith("json"):
        return f'<|python_tag|>{{"name": "{name}", "parameters": {args}}}'
    if form.startswith("function"):
        return f"<function={name}>{args}</function>"
    if form == "builtin":
        return f"<|python_tag|>{name}.call(query={json.dumps(arguments['query'])})"
    json_style = form == "pythonic_json"
    kwargs = ", ".join(f"{k}={python_literal(v, json_style)}" for k, v in arguments.items())
    return f"[{name}({kwargs})]"


@settings(max_examples=200, deadline=None)
@given(
    NAMES,
    ARGUMENTS,
    st.sampled_from(["json", "json_ascii", "function", "pythonic", "pythonic_json", "builtin"]),
    st.text(alphabet="abc .!?\n", max_size=20).filter(lambda t: t.strip() == t),
)
def test_a_call_in_any_format_reads_back_exactly(
    name: str, arguments: dict[str, Any], form: str, prose: str
) -> None:
    if form == "builtin":
        arguments = {"query": str(arguments)}
    raw = (prose + " " if prose else "") + render(name, arguments, form)
    for pieces in ([raw], list(raw)):
        events, _ = stream(pieces, tools=())
        message = accumulate(events).message
        assert message.content == prose
        (call,) = message.tool_calls
        assert call.name == name
        assert call.arguments == arguments
        assert json.loads(call.raw_arguments) == arguments


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(FRAGMENTS) | TRICKY | st.text(max_size=10), max_size=8).map("".join)
)
def test_nothing_is_lost_when_no_call_is_found(raw: str) -> None:
    raw = raw.replace("<|", "< |")  # no special tokens: they are not text
    events, parser = stream([raw])
    result = parser.result()
    if not result.tool_calls:
        assert result.content == raw.strip()
        assert accumulate(events).message.content == raw.strip()
