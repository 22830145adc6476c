"""The parser against Meta's reference (llama-models 0.3.0).

1. Assistant turns with tool calls, written by llama-models' own ``ChatFormat.encode_message``
   in each of its tool formats, decoded to text with its tokenizer, read back by chatlane:
   the same calls, names and arguments, and the same stop token.
2. Where llama-models' ``decode_assistant_message_from_content`` reads a single call, chatlane
   reads the same call (it also reads several, which the reference does not).
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatlane.formats.llama3.parser import parse_output, sequential_ids

pytest.importorskip("llama_models")

from llama_models.datatypes import (
    BuiltinTool,
    RawMessage,
    StopReason,
    ToolCall,
    ToolPromptFormat,
)
from llama_models.llama3.chat_format import ChatFormat
from llama_models.llama3.tokenizer import Tokenizer

HEADER = "<|start_header_id|>assistant<|end_header_id|>\n\n"


@functools.cache
def chat_format() -> tuple[ChatFormat, Tokenizer]:
    tokenizer = Tokenizer.get_instance()
    return ChatFormat(tokenizer), tokenizer


def meta_text(message: RawMessage, tool_format: ToolPromptFormat) -> str:
    """The assistant turn as llama-models writes it, as text, without its header."""
    fmt, tokenizer = chat_format()
    tokens, _ = fmt.encode_message(message, tool_format)
    text: str = tokenizer.decode(tokens)
    assert text.startswith(HEADER)
    return text[len(HEADER) :]


# llama-models writes strings into built-in and pythonic calls without escaping them, so the
# strings here have no quotes or backslashes: with them the reference's own text is invalid.
SAFE_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\"'\\"),
    max_size=30,
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**9), max_value=10**9)
    | st.floats(allow_nan=False, allow_infinity=False)
    | SAFE_TEXT
)
# llama-models writes a dict argument in a pythonic call as {k=v}, which is not Python:
# nested objects are left to the JSON formats.
PY_VALUES = SCALARS | st.lists(SCALARS, max_size=3)
JSON_VALUES = PY_VALUES | st.dictionaries(SAFE_TEXT, SCALARS, max_size=3)
ARG_NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)
TOOL_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True).filter(
    lambda n: n not in {"brave_search", "wolfram_alpha", "photogen", "code_interpreter"}
)


@st.composite
def custom_calls(draw: st.DrawFn, tool_format: ToolPromptFormat) -> ToolCall:
    values = PY_VALUES if tool_format is ToolPromptFormat.python_list else JSON_VALUES
    return ToolCall(
        call_id="x",
        tool_name=draw(TOOL_NAMES),
        arguments=draw(st.dictionaries(ARG_NAMES, values, max_size=4)),
    )


@st.composite
def builtin_calls(draw: st.DrawFn) -> ToolCall:
    tool = draw(st.sampled_from([BuiltinTool.brave_search, BuiltinTool.wolfram_alpha]))
    return ToolCall(call_id="x", tool_name=tool, arguments={"query": draw(SAFE_TEXT)})


def expected(calls: list[ToolCall]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (c.tool_name.value if isinstance(c.tool_name, BuiltinTool) else c.tool_name, c.arguments)
        for c in calls
    ]


def read(raw: str) -> list[tuple[str, dict[str, Any]]]:
    out = parse_output(raw, ids=sequential_ids())
    assert out.content == ""
    assert out.partial_call is None
    return [(c.name, dict(c.arguments)) for c in out.tool_calls]


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(list(ToolPromptFormat)).flatmap(
        lambda f: st.tuples(
            st.just(f), st.lists(builtin_calls() | custom_calls(f), min_size=1, max_size=3)
        )
    ),
    st.sampled_from([StopReason.end_of_message, StopReason.end_of_turn]),
)
def test_calls_written_by_llama_models_read_back(
    format_and_calls: tuple[ToolPromptFormat, list[ToolCall]], stop: StopReason
) -> None:
    tool_format, calls = format_and_calls
    message = RawMessage(role="assistant", content="", stop_reason=stop, tool_calls=calls)
    raw = meta_text(message, tool_format)
    assert read(raw) == expected(calls)
    token = "<|eom_id|>" if stop is StopReason.end_of_message else "<|eot_id|>"
    assert parse_output(raw).stop_sequence == token


@settings(max_examples=50, deadline=None)
@given(
    st.text(
        alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r"),
        min_size=1,
        max_size=60,
    ).filter(lambda code: code.strip() == code and _is_python(code))
)
def test_code_interpreter_turns_written_by_llama_models_read_back(code: str) -> None:
    call = ToolCall(call_id="x", tool_name=BuiltinTool.code_interpreter, arguments={"code": code})
    message = RawMessage(
        role="assistant", content="", stop_reason=StopReason.end_of_message, tool_calls=[call]
    )
    raw = meta_text(message, ToolPromptFormat.json)
    assert raw.startswith("<|python_tag|>")
    assert read(raw) == [("code_interpreter", {"code": code})]


def _is_python(code: str) -> bool:
    import ast

    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


@pytest.mark.parametrize(
    "raw",
    [
        '<|python_tag|>brave_search.call(query="Menlo Park weather")<|eom_id|>',
        '<|python_tag|>wolfram_alpha.call(query="100th decimal of pi")<|eom_id|>',
        'brave_search.call(query="today\'s news")<|eom_id|>',
        '{"type": "function", "name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>',
        '{"name": "get_weather", "parameters": {"city": "Paris", "days": 3}}<|eom_id|>',
        '<function=spotify_trending_songs>{"n": "5"}</function><|eom_id|>',
        '[get_weather(city="San Francisco", metric="celsius")]<|eot_id|>',
        "<|python_tag|>import math\nprint(math.sqrt(2))<|eom_id|>",
    ],
)
def test_same_call_as_the_reference_decoder(raw: str) -> None:
    fmt, _ = chat_format()
    reference = fmt.decode_assistant_message_from_content(raw, StopReason.out_of_tokens)
    out = parse_output(raw, ids=sequential_ids())
    assert expected(reference.tool_calls) == [(c.name, dict(c.arguments)) for c in out.tool_calls]
    token = {
        StopReason.end_of_message: "<|eom_id|>",
        StopReason.end_of_turn: "<|eot_id|>",
    }[reference.stop_reason]
    assert out.stop_sequence == token
