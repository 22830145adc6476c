"""Four parsing defects seen in Llama 3 output (issue 10), each read the same whole and
streamed in pieces of any size."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatlane import formats
from chatlane.events import TextDelta
from chatlane.formats.base import ParsedOutput
from chatlane.formats.llama3.parser import ToolCallStreamParser, parse_output, sequential_ids
from chatlane.messages import user
from chatlane.request import ChatRequest
from chatlane.tools import Tool, brave_search, code_interpreter, wolfram_alpha

WEATHER = Tool.from_schema(
    "get_weather", {"type": "object", "properties": {"city": {"type": "string"}}}
)
TOOLS = (WEATHER, brave_search, wolfram_alpha, code_interpreter)
PARIS = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
ROME = '{"name": "get_weather", "parameters": {"city": "Rome"}}'


def whole(raw: str, stop: str | None = None) -> ParsedOutput:
    return parse_output(raw, tools=TOOLS, stop_sequence=stop, ids=sequential_ids())


def streamed(raw: str, size: int, stop: str | None = None) -> ParsedOutput:
    parser = ToolCallStreamParser(TOOLS, ids=sequential_ids())
    for i in range(0, len(raw), size):
        parser.feed(raw[i : i + size])
    parser.finish(stop)
    return parser.result()


def read(raw: str, stop: str | None = None) -> tuple[str, list[tuple[str, object]]]:
    """What ``raw`` reads as, checked to be the same whole and in pieces of 1 to 7."""
    out = whole(raw, stop)
    for size in range(1, 8):
        assert streamed(raw, size, stop) == out, size
    return out.content, [(c.name, c.arguments) for c in out.tool_calls]


# -- 1. calls in a code fence leave no backticks in the content -------------------------------


@pytest.mark.parametrize(
    ("raw", "content", "cities"),
    [
        ("```json\n" + PARIS + "\n```", "", ["Paris"]),
        (
            "Sure.\n```json\n" + PARIS + "\n" + ROME + "\n```\nDone.",
            "Sure.\nDone.",
            ["Paris", "Rome"],
        ),
        ("```\n" + PARIS + ";\n" + ROME + "\n```", "", ["Paris", "Rome"]),
        ("```json\n" + PARIS + ",\n" + ROME + "```", "", ["Paris", "Rome"]),
        ("```" + PARIS + "```", "", ["Paris"]),
        ("Here: ```" + PARIS + "``` then more.", "Here: then more.", ["Paris"]),
        ("```[" + PARIS + ", " + ROME + "]```", "", ["Paris", "Rome"]),
    ],
)
def test_calls_in_a_fence_leave_no_backticks(raw: str, content: str, cities: list[str]) -> None:
    got_content, calls = read(raw)
    assert "`" not in got_content
    assert (got_content, calls) == (content, [("get_weather", {"city": c}) for c in cities])


def test_a_fence_of_code_that_is_not_a_call_stays_text() -> None:
    raw = 'Use:\n```json\n{"city": "Paris"}\n```\nand ```{x}``` too'
    assert read(raw) == (raw, [])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=40))
def test_a_fenced_call_streamed_in_any_pieces_leaves_no_backticks(sizes: list[int]) -> None:
    raw = "Checking.\n```json\n" + PARIS + "\n" + ROME + "\n```\nOK."
    parser = ToolCallStreamParser(TOOLS, ids=sequential_ids())
    text, at, k = "", 0, 0
    while at < len(raw):
        size = sizes[k % len(sizes)]
        text += "".join(
            e.text for e in parser.feed(raw[at : at + size]) if isinstance(e, TextDelta)
        )
        at, k = at + size, k + 1
    text += "".join(e.text for e in parser.finish() if isinstance(e, TextDelta))
    assert text == "Checking.\nOK."
    assert [c.arguments for c in parser.result().tool_calls] == [
        {"city": "Paris"},
        {"city": "Rome"},
    ]


# -- 2. the hold-back keeps a fence-and-brace prefix until it knows ----------------------------


def test_a_fence_and_brace_prefix_is_held_until_it_proves_to_be_text() -> None:
    parser = ToolCallStreamParser(TOOLS, ids=sequential_ids())
    assert "".join(e.text for e in parser.feed("Here:\n") if isinstance(e, TextDelta)) == "Here:"
    for piece in ("```", "{", " ", '"na'):
        assert parser.feed(piece) == [], piece  # may still become ```{"name": ...}```
    released = parser.feed('me_of_city": 1}')  # "name_of_city" is not a call's key: text
    assert "".join(e.text for e in released if isinstance(e, TextDelta)).startswith('\n```{ "na')


# -- 3. code after <|python_tag|> that ends at <|eom_id|> is a code_interpreter call ---------


@pytest.mark.parametrize(
    "code",
    [
        "import math\nprint(math.pi)",
        'print("unclosed"',  # does not parse, yet the model waits for its result
        "print 'python 2'",
        "!pip list",
    ],
)
def test_code_after_the_tag_ending_at_eom_is_code_interpreter(code: str) -> None:
    raw = "<|python_tag|>" + code
    expected = ("", [("code_interpreter", {"code": code})])
    assert read(raw + "<|eom_id|>") == expected  # the stop token in the text
    assert read(raw, stop="<|eom_id|>") == expected  # or told by the server


def test_text_after_the_tag_that_ends_the_turn_is_not_code() -> None:
    raw = "<|python_tag|>print('unclosed'"
    assert read(raw + "<|eot_id|>") == ("print('unclosed'", [])
    assert read(raw) == ("print('unclosed'", [])


def test_the_format_reads_eom_code_as_code_interpreter() -> None:
    fmt = formats.get("llama3.1")
    out = fmt.parse(
        "<|python_tag|>print('x'", ChatRequest((user("run it"),)), stop_sequence="<|eom_id|>"
    )
    assert [(c.name, c.arguments) for c in out.tool_calls] == [
        ("code_interpreter", {"code": "print('x'"})
    ]


# -- 4. a Meta-style built-in JSON call keeps its argument names -----------------------------


@pytest.mark.parametrize("tag", ["", "<|python_tag|>"])
@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("brave_search", '{"query": "weather in Paris"}'),
        ("brave_search", '{"search_query": "x", "count": 3}'),
        ("wolfram_alpha", '{"expression": "2+2"}'),
    ],
)
def test_a_builtin_json_call_keeps_its_argument_names(tag: str, name: str, arguments: str) -> None:
    import json

    raw = f'{tag}{{"name": "{name}", "parameters": {arguments}}}<|eom_id|>'
    assert read(raw) == ("", [(name, json.loads(arguments))])
    fmt = formats.get("llama3.1")
    for request in (None, ChatRequest((user("q"),)), ChatRequest((user("q"),), tools=TOOLS)):
        [call] = fmt.parse(raw, request).tool_calls
        assert (call.name, call.arguments) == (name, json.loads(arguments))


# -- the whole-output reader gives what the scanner gives --------------------------------------

PIECES = st.sampled_from(
    [
        PARIS,
        ROME,
        "[" + PARIS + ", " + ROME + "]",
        '{"name": "get_weather", "parameters": {"city": "P",}}',
        '{"name": "Ada"}',
        '{"city": "Paris"}',
        '[get_weather(city="San Francisco, CA"), brave_search(query="a) b")]',
        '[get_weather(city="x"',
        'brave_search.call(query="say \\"hi\\"")',
        "get_weather(city='Oslo')",
        "print(1)",
        "import math\nprint(math.pi)",
        "[1, 2]",
        "(1, 2",
        "x = {'a': [1, (2,)]}",
        '"""a"b"""',
        "Let me check.",
        "{x} and [1]",
        "<b>",
        "```",
        "; ",
        ", ",
        "\n",
        "  ",
    ]
)
ENDINGS = st.sampled_from(["", "<|eom_id|>", "<|eot_id|>", "<|end_of_text|>", "<|eot_id|>after"])


@settings(max_examples=400, deadline=None)
@given(
    st.booleans(),
    st.lists(PIECES, max_size=4).map("".join),
    ENDINGS,
    st.sampled_from([None, "<|eom_id|>", "<|eot_id|>"]),
    st.booleans(),
)
def test_the_whole_output_reader_agrees_with_the_scanner(
    tag: bool, body: str, ending: str, stop: str | None, truncated: bool
) -> None:
    raw = (" <|python_tag|>" if tag else "") + body + ending
    scanner = ToolCallStreamParser(TOOLS, ids=sequential_ids())
    scanner.feed(raw)
    scanner.finish(stop, truncated=truncated)
    expected = scanner.result()
    assert (
        parse_output(
            raw, tools=TOOLS, stop_sequence=stop, truncated=truncated, ids=sequential_ids()
        )
        == expected
    )
    parser = ToolCallStreamParser(TOOLS, ids=sequential_ids())
    for char in raw:
        parser.feed(char)
    parser.finish(stop, truncated=truncated)
    assert parser.result() == expected
