"""parse_output: every form of Llama 3.x output real models emit, read whole."""

from __future__ import annotations

import re
from typing import Any

import pytest

from chatlane.errors import InputError
from chatlane.formats.base import ParsedOutput
from chatlane.formats.llama3.parser import (
    ToolCallStreamParser,
    parse_output,
    random_call_id,
    sequential_ids,
)
from chatlane.messages import Role
from chatlane.tools import Tool, brave_search, code_interpreter, wolfram_alpha

WEATHER = Tool.from_schema(
    "get_weather",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "metric": {"type": "string"}},
        "required": ["city"],
    },
    "Current weather in a city.",
)
TIME = Tool.from_schema("get-time", {"type": "object", "properties": {"tz": {"type": "string"}}})
TOOLS = (WEATHER, TIME, brave_search, wolfram_alpha, code_interpreter)


def parse(raw: str, **kwargs: Any) -> ParsedOutput:
    kwargs.setdefault("tools", TOOLS)
    return parse_output(raw, ids=sequential_ids(), **kwargs)


def calls(out: ParsedOutput) -> list[tuple[str, dict[str, Any]]]:
    return [(c.name, dict(c.arguments)) for c in out.tool_calls]


# -- plain text -------------------------------------------------------------------------------


def test_plain_text_is_content_with_outer_whitespace_trimmed() -> None:
    out = parse("\n\nThe capital of France is Paris.\n")
    assert out.content == "The capital of France is Paris."
    assert out.tool_calls == ()
    assert out.finish_reason == "stop"


@pytest.mark.parametrize(
    "text",
    [
        "Use {x} in an f-string, [1, 2] is a list, and 3 < 4 > 2.",
        'A set: {1, 2}. A dict: {\'a\': 1}. JSON data: {"city": "Paris"}.',
        "A [link](https://example.com) and `inline code` and <b>bold</b>.",
        '```python\nprint("hi")\n```',
        '```json\n{"city": "Paris", "population": 2100000}\n```',
        '[1, 2, {"a": [3]}] and [x for x in y]',
        "<function is not a tag> and <|not_a_token|>",
    ],
)
def test_text_that_only_looks_like_a_call_start_stays_text(text: str) -> None:
    out = parse(text)
    assert out.content == text
    assert out.tool_calls == ()


def test_json_data_with_a_name_key_is_not_a_call() -> None:
    text = '{"name": "Ada Lovelace", "born": 1815}'
    assert parse(text).content == text
    assert parse(text).tool_calls == ()


# -- JSON calls ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',
        '{"type": "function", "name": "get_weather", "parameters": {"city": "Paris"}}',
        '{"parameters": {"city": "Paris"}, "name": "get_weather"}',
        '{"function": {"name": "get_weather", "parameters": {"city": "Paris"}}}',
        '{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}',
        '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}<|eom_id|>',
        '```json\n{"name": "get_weather", "parameters": {"city": "Paris"}}\n```',
        '```\n{"name": "get_weather", "parameters": {"city": "Paris"}}\n```',
        '[{"name": "get_weather", "parameters": {"city": "Paris"}}]',
        '  {\n  "name": "get_weather",\n  "parameters": {\n    "city": "Paris"\n  }\n}\n',
    ],
)
def test_json_call_forms(raw: str) -> None:
    out = parse(raw)
    assert calls(out) == [("get_weather", {"city": "Paris"})]
    assert out.content == ""
    assert out.finish_reason == "tool_calls"


def test_nested_arguments_and_braces_inside_strings() -> None:
    raw = (
        '{"name": "get_weather", "parameters": {"city": "a } tricky { name",'
        ' "metric": {"unit": ["c", {"x": null}], "q": "\\"}"}}}'
    )
    assert calls(parse(raw)) == [
        (
            "get_weather",
            {"city": "a } tricky { name", "metric": {"unit": ["c", {"x": None}], "q": '"}'}},
        )
    ]


@pytest.mark.parametrize("separator", ["; ", ";", "\n", "\n\n", ", ", " "])
def test_several_json_calls_in_one_turn(separator: str) -> None:
    raw = separator.join(
        [
            '{"name": "get_weather", "parameters": {"city": "Paris"}}',
            '{"name": "get_weather", "parameters": {"city": "Rome"}}',
            '{"name": "get-time", "parameters": {"tz": "CET"}}',
        ]
    )
    out = parse("<|python_tag|>" + raw)
    assert calls(out) == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Rome"}),
        ("get-time", {"tz": "CET"}),
    ]
    assert [c.id for c in out.tool_calls] == ["call_0", "call_1", "call_2"]
    assert calls(parse(raw)) == calls(out)


def test_prose_before_and_after_a_call_is_kept() -> None:
    raw = (
        "Let me check the weather for you.\n\n"
        '{"name": "get_weather", "parameters": {"city": "Paris"}}\n\n'
        "I will report back once I have it."
    )
    out = parse(raw)
    assert calls(out) == [("get_weather", {"city": "Paris"})]
    assert out.content == "Let me check the weather for you.\n\nI will report back once I have it."


def test_prose_before_a_call_only() -> None:
    out = parse(
        'Checking. <|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}<|eom_id|>'
    )
    assert out.content == "Checking."
    assert calls(out) == [("get_weather", {"city": "Oslo"})]
    assert out.stop_sequence == "<|eom_id|>"


@pytest.mark.parametrize(
    ("parameters", "error"),
    [("5", "got int"), ('["Paris"]', "got list"), ('"not json"', "not valid JSON")],
)
def test_arguments_that_are_not_an_object_are_a_visible_error_not_a_crash(
    parameters: str, error: str
) -> None:
    out = parse('{"name": "get_weather", "parameters": ' + parameters + "}")
    (call,) = out.tool_calls
    assert call.name == "get_weather"
    assert not call.valid
    assert call.arguments == {}
    assert call.arguments_error is not None
    assert error in call.arguments_error


def test_null_or_missing_parameters_of_an_offered_tool() -> None:
    assert calls(parse('{"name": "get-time", "parameters": null}')) == [("get-time", {})]
    assert calls(parse('{"name": "get-time"}')) == [("get-time", {})]
    # Without parameters and not an offered tool, a {"name": ...} object is data.
    assert parse('{"name": "Ada"}').tool_calls == ()


def test_json_that_is_not_an_object_after_the_python_tag_is_not_a_crash() -> None:
    for raw in ('<|python_tag|>"just a string"', "<|python_tag|>[1, 2, 3]", "<|python_tag|>42"):
        out = parse(raw, tools=(WEATHER,))
        assert all(c.name == "code_interpreter" for c in out.tool_calls)


def test_malformed_json_call_is_text_not_code() -> None:
    raw = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris",}}<|eom_id|>'
    out = parse(raw)
    # Not a call, and not swallowed into a code_interpreter call: kept as text.
    assert out.tool_calls == ()
    assert out.content == '{"name": "get_weather", "parameters": {"city": "Paris",}}'
    assert out.stop_sequence == "<|eom_id|>"


# -- pythonic calls ----------------------------------------------------------------------------


def test_pythonic_list_of_calls() -> None:
    raw = (
        "[get_weather(city=\"San Francisco, CA\", metric='celsius'), "
        'get-time(tz="Europe/Paris"), brave_search(query="a [b] (c) \\"d\\"")]'
    )
    out = parse(raw)
    assert calls(out) == [
        ("get_weather", {"city": "San Francisco, CA", "metric": "celsius"}),
        ("get-time", {"tz": "Europe/Paris"}),
        ("brave_search", {"query": 'a [b] (c) "d"'}),
    ]
    assert out.content == ""


def test_pythonic_values_nested_and_json_or_python_literals() -> None:
    raw = (
        "[get_weather(city=\"Paris\", metric={'unit': ['c', 'f'], 'ok': true, 'n': null, "
        "'x': (1, 2.5, -3e2), 'y': False, 'z': None})]"
    )
    out = parse(raw)
    assert calls(out) == [
        (
            "get_weather",
            {
                "city": "Paris",
                "metric": {
                    "unit": ["c", "f"],
                    "ok": True,
                    "n": None,
                    "x": [1, 2.5, -300.0],
                    "y": False,
                    "z": None,
                },
            },
        )
    ]


def test_pythonic_doc_example_with_python_tag_and_eot() -> None:
    # Meta's Llama 3.2 prompt_format.md example answer.
    raw = '<|python_tag|>[get_weather(city="San Francisco", metric="celsius")]<|eot_id|>'
    out = parse(raw)
    assert calls(out) == [("get_weather", {"city": "San Francisco", "metric": "celsius"})]
    assert out.stop_sequence == "<|eot_id|>"


def test_pythonic_call_without_arguments_and_positional_arguments() -> None:
    assert calls(parse("[get-time()]")) == [("get-time", {})]
    # A positional argument is named after the tool's schema, in order.
    assert calls(parse('[get_weather("Paris", "celsius")]')) == [
        ("get_weather", {"city": "Paris", "metric": "celsius"})
    ]
    # Too many positional arguments to name: the call keeps its text and says what is wrong.
    (call,) = parse('[get-time("a", "b")]').tool_calls
    assert call.raw_arguments == '"a", "b"'
    assert not call.valid


def test_pythonic_strings_with_escapes_and_unicode() -> None:
    raw = r'[get_weather(city="Z\u00fcrich \ud83d\ude00 \x41 line\nbreak \\ \' \q")]'
    (call,) = parse(raw).tool_calls
    assert call.arguments["city"] == "Zürich 😀 A line\nbreak \\ ' \\q"


def test_text_in_brackets_that_fails_as_calls_is_text() -> None:
    for raw in ("[see(here)]", '[f(a="unterminated)]', "[f(a=1) g(b=2)]"):
        out = parse(raw)
        assert out.tool_calls == ()
        assert out.content == raw


# -- <function=name> ---------------------------------------------------------------------------


def test_function_tag_call_with_nested_objects() -> None:
    raw = '<function=get_weather>{"city": "Paris", "metric": {"a": {"b": [1, {"c": "}"}]}}}</function>'
    out = parse(raw)
    assert calls(out) == [
        ("get_weather", {"city": "Paris", "metric": {"a": {"b": [1, {"c": "}"}]}}})
    ]


def test_function_tag_calls_several_and_without_closing_tag() -> None:
    raw = (
        'Sure.\n<function=get_weather>{"city": "Paris"}</function>\n'
        '<function=get-time>{"tz": "UTC"}</function><|eot_id|>'
    )
    out = parse(raw)
    assert calls(out) == [("get_weather", {"city": "Paris"}), ("get-time", {"tz": "UTC"})]
    assert out.content == "Sure."
    assert calls(parse('<function=get_weather>{"city": "Paris"}')) == [
        ("get_weather", {"city": "Paris"})
    ]


def test_function_tag_with_invalid_json_is_a_call_with_a_visible_error() -> None:
    (call,) = parse('<function=get_weather>{"city": Paris}</function>').tool_calls
    assert call.name == "get_weather"
    assert call.raw_arguments == '{"city": Paris}'
    assert not call.valid


# -- built-in tools ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            '<|python_tag|>brave_search.call(query="say \\"hi\\" to (me), [you]")<|eom_id|>',
            ("brave_search", {"query": 'say "hi" to (me), [you]'}),
        ),
        (
            '<|python_tag|>wolfram_alpha.call(query="100th decimal of pi")<|eom_id|>',
            ("wolfram_alpha", {"query": "100th decimal of pi"}),
        ),
        (
            "<|python_tag|>brave_search.call(query='single quotes')",
            ("brave_search", {"query": "single quotes"}),
        ),
        (
            '<|python_tag|>brave_search.call("positional")',
            ("brave_search", {"query": "positional"}),
        ),
    ],
)
def test_builtin_calls(raw: str, expected: tuple[str, dict[str, Any]]) -> None:
    out = parse(raw)
    assert calls(out) == [expected]
    assert out.content == ""


def test_builtin_call_followed_by_another() -> None:
    raw = '<|python_tag|>brave_search.call(query="a")\nwolfram_alpha.call(query="b")'
    assert calls(parse(raw)) == [
        ("brave_search", {"query": "a"}),
        ("wolfram_alpha", {"query": "b"}),
    ]


def test_code_interpreter_code() -> None:
    code = 'import math\n\ndef f(x):\n    return {"a": [x, "}"]}\n\nprint(f(math.pi))'
    out = parse(f"<|python_tag|>{code}<|eom_id|>")
    assert calls(out) == [("code_interpreter", {"code": code})]
    assert out.stop_sequence == "<|eom_id|>"
    assert out.finish_reason == "tool_calls"


def test_code_that_starts_like_a_call_or_a_list() -> None:
    for code in ('print("hi")\nprint(2)', "[x * x for x in range(3)]", "x = {1: 2}\nprint(x)"):
        assert calls(parse("<|python_tag|>" + code)) == [("code_interpreter", {"code": code})]


def test_python_tag_followed_by_prose_is_text_not_code() -> None:
    out = parse("<|python_tag|>I cannot run that, sorry.<|eot_id|>")
    assert out.tool_calls == ()
    assert out.content == "I cannot run that, sorry."


def test_stop_token_text_ends_the_turn() -> None:
    out = parse("Hello.<|eot_id|>\n\nignored")
    assert out.content == "Hello."
    assert out.stop_sequence == "<|eot_id|>"
    # A stop token given by the caller wins over none in the text.
    assert parse("Hello.", stop_sequence="<|eom_id|>").stop_sequence == "<|eom_id|>"


# -- unknown tools, truncation ------------------------------------------------------------------


def test_call_to_a_tool_not_offered_is_reported_as_such() -> None:
    out = parse('{"name": "send_email", "parameters": {"to": "a@b.c"}}', tools=(WEATHER,))
    assert calls(out) == [("send_email", {"to": "a@b.c"})]
    assert out.unknown_tools == ("send_email",)
    out = parse('<|python_tag|>brave_search.call(query="x")', tools=(WEATHER,))
    assert calls(out) == [("brave_search", {"query": "x"})]
    assert out.unknown_tools == ("brave_search",)


def test_a_request_without_tools_makes_every_call_unknown() -> None:
    out = parse('{"name": "send_email", "parameters": {}}', tools=())
    assert calls(out) == [("send_email", {})]
    assert out.unknown_tools == ("send_email",)


def test_when_the_offered_tools_are_not_known_nothing_is_unknown() -> None:
    out = parse('{"name": "send_email", "parameters": {}}', tools=None)
    assert calls(out) == [("send_email", {})]
    assert out.unknown_tools == ()


def test_llama3_parse_reports_calls_a_request_did_not_offer() -> None:
    from chatlane.formats.llama3 import Llama3
    from chatlane.messages import user
    from chatlane.request import ChatRequest

    raw = '<|python_tag|>{"name": "send_email", "parameters": {"to": "a@b.c"}}'
    offered_nothing = Llama3().parse(raw, ChatRequest((user("mail Ada"),)))
    assert [c.name for c in offered_nothing.tool_calls] == ["send_email"]
    assert offered_nothing.unknown_tools == ("send_email",)
    assert Llama3().parse(raw).unknown_tools == ()


@pytest.mark.parametrize(
    "cut",
    [
        '{"name": "get_weather", "parameters": {"city": "Par',
        '<|python_tag|>{"name": "get_weather", "para',
        '[get_weather(city="Paris"), get-time(',
        '<function=get_weather>{"city": ',
        '```json\n{"name": "get_weather", "parameters": {',
        "<|python_tag|>import math\nprint(math.",
        '<|python_tag|>brave_search.call(query="unfinished',
    ],
)
def test_truncated_call_is_partial_never_a_made_up_call(cut: str) -> None:
    out = parse("Checking. " + cut, truncated=True)
    assert out.tool_calls == ()
    assert out.truncated
    assert out.finish_reason == "length"
    assert out.content == "Checking."
    assert out.partial_call is not None
    assert cut.endswith(out.partial_call)


def test_truncated_after_complete_calls_keeps_them() -> None:
    raw = '{"name": "get_weather", "parameters": {"city": "Paris"}}\n{"name": "get_wea'
    out = parse(raw, truncated=True)
    assert calls(out) == [("get_weather", {"city": "Paris"})]
    assert out.partial_call == '{"name": "get_wea'
    assert out.finish_reason == "length"


def test_truncated_plain_text() -> None:
    out = parse("The answer is {", truncated=True)
    assert out.content == "The answer is {"
    assert out.partial_call is None
    assert out.finish_reason == "length"


def test_unfinished_call_that_the_model_ended_is_kept_as_text() -> None:
    raw = '{"name": "get_weather", "parameters": {"city": "Paris"}'
    out = parse(raw + "<|eot_id|>")
    assert out.tool_calls == ()
    assert out.content == raw


# -- the message and ids -------------------------------------------------------------------------


def test_message_is_an_assistant_message_with_content_and_calls() -> None:
    out = parse('Here. {"name": "get_weather", "parameters": {"city": "Paris"}}')
    message = out.message()
    assert message.role is Role.ASSISTANT
    assert message.content == "Here."
    assert message.tool_calls == out.tool_calls


def test_ids_are_random_by_default_and_sequential_on_request() -> None:
    raw = "[get-time(), get-time()]"
    first = parse_output(raw).tool_calls
    second = parse_output(raw).tool_calls
    ids = [c.id for c in first + second]
    assert len(set(ids)) == 4
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", i) for i in ids)
    assert re.fullmatch(r"call_[0-9a-f]{24}", random_call_id())
    next_id = sequential_ids("t")
    assert [next_id(), next_id()] == ["t0", "t1"]


def test_raw_arguments_keep_what_the_model_wrote() -> None:
    (call,) = parse('{"name": "get_weather", "arguments": "{\\"city\\":\\"Paris\\"}"}').tool_calls
    assert call.raw_arguments == '{"city":"Paris"}'
    assert call.arguments == {"city": "Paris"}


def test_parser_refuses_use_after_finish() -> None:
    parser = ToolCallStreamParser()
    parser.finish()
    with pytest.raises(RuntimeError):
        parser.feed("more")
    with pytest.raises(RuntimeError):
        parser.finish()


def test_bytes_are_refused_with_a_clear_error() -> None:
    with pytest.raises(InputError, match="got bytes"):
        parse_output(b"hello")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("before", "call"),
    [
        ("a <", '{"name": "get_weather", "parameters": {"city": "Paris"}}'),
        ("{ ", '[get_weather(city="Paris")]'),
        ("``", '<function=get_weather>{"city": "Paris"}</function>'),
        ("[x ", '{"name": "get_weather", "parameters": {"city": "Paris"}}'),
        ("<|python", '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}'),
    ],
)
def test_a_call_right_after_a_false_start_is_still_found(before: str, call: str) -> None:
    out = parse(before + call)
    assert calls(out) == [("get_weather", {"city": "Paris"})]
    assert out.content == before.strip()


def test_builtin_call_without_python_tag_as_llama_models_writes_it() -> None:
    out = parse('brave_search.call(query="Menlo Park weather")<|eom_id|>')
    assert calls(out) == [("brave_search", {"query": "Menlo Park weather"})]
    assert out.stop_sequence == "<|eom_id|>"
    # Only at the start or right after a call: in prose it is text.
    text = 'To search, the model writes brave_search.call(query="x").'
    assert parse(text).content == text
    assert parse(text).tool_calls == ()


def test_calls_written_back_to_back_without_separator() -> None:
    # llama-models' ChatFormat joins several calls with nothing in between.
    raw = (
        'brave_search.call(query="a"){"type": "function", "name": "get_weather", '
        '"parameters": {"city": "Paris"}}[get-time(tz="UTC")]<function=get_weather>{}</function>'
    )
    assert calls(parse(raw)) == [
        ("brave_search", {"query": "a"}),
        ("get_weather", {"city": "Paris"}),
        ("get-time", {"tz": "UTC"}),
        ("get_weather", {}),
    ]


def test_first_word_that_is_not_a_builtin_call_is_text() -> None:
    for text in ("Hello", "Hello world.", "e.g. this", "x.call", "x.call is a method", "print(1)"):
        out = parse(text)
        assert out.content == text
        assert out.tool_calls == ()
