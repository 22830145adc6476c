"""Llama3 rendering: what a user sees in the prompt text and its tokens."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatlane.errors import InputError, MessageError
from chatlane.formats.base import Prompt, PromptFormat
from chatlane.formats.llama3 import Llama3
from chatlane.formats.llama3.tokenizer import SPECIAL_TOKENS
from chatlane.messages import Image, Message, ToolCall, assistant, system, tool_result, user
from chatlane.request import ChatRequest
from chatlane.tools import Tool, brave_search, code_interpreter, wolfram_alpha

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)
WEATHER = Tool.from_schema(
    "get_weather",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "The city"},
            "title": {"type": "string", "description": "A property named title stays"},
        },
        "required": ["city"],
    },
    "Weather for a city",
)
DATE = dt.date(2024, 9, 5)


def render(messages: Sequence[Message], fmt: Llama3 | None = None, **request: Any) -> Prompt:
    return (fmt or Llama3()).render(ChatRequest(tuple(messages), **request))


def test_is_a_prompt_format() -> None:
    fmt = Llama3()
    assert isinstance(fmt, PromptFormat)
    assert fmt.name == "llama3.1-meta"
    assert fmt.stop_sequences == ("<|eot_id|>", "<|eom_id|>")


def test_plain_conversation() -> None:
    prompt = render(
        [system("Be brief."), user("Hi"), assistant("Hello!"), user("Bye")], Llama3(date=DATE)
    )
    assert prompt.text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 05 September 2024\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert prompt.tokens[0] == 128000
    assert prompt.tokens.count(128000) == 1


tricky = st.lists(
    st.one_of(
        st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
        st.sampled_from([*sorted(SPECIAL_TOKENS)[:40], "<|begin_of_text|>", "<|eot_id|>"]),
    ),
    max_size=6,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(text=tricky, profile=st.sampled_from(["meta", "hf"]))
def test_user_text_never_becomes_a_special_token(text: str, profile: str) -> None:
    fmt = Llama3(profile=profile)  # type: ignore[arg-type]
    prompt = fmt.render(ChatRequest((system(text), user(text), assistant(text), user(text))))
    specials = [t for t in prompt.tokens if t >= 128000]
    # Exactly the structure's tokens: BOS, then header start/end and end of turn for each
    # of the four messages, and the assistant header that opens the answer.
    assert specials == [128000] + [128006, 128007, 128009] * 4 + [128006, 128007]


def test_assistant_prefill_continues_the_last_message() -> None:
    prompt = render([user("Write a haiku"), assistant("Autumn moon")])
    assert prompt.text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\nAutumn moon")
    hf = render([user("Write a haiku"), assistant("Autumn moon  ")], Llama3(profile="hf"))
    assert hf.text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\nAutumn moon")


def test_date_is_injectable_in_both_styles() -> None:
    meta = render([user("hi")], Llama3(date=DATE), tools=(WEATHER,))
    assert "Today Date: 05 September 2024<|eot_id|>" in meta.text
    hf = render([user("hi")], Llama3(profile="hf", date=DATE))
    assert "Today Date: 05 Sep 2024\n\n" in hf.text
    custom = render([user("hi")], Llama3(date="tomorrow"), tools=(WEATHER,))
    assert "Today Date: tomorrow<|eot_id|>" in custom.text
    # Meta's code gives 3.1 the date block always, 3.2 text and 3.3 never.
    assert "Today Date: 05 September 2024" in render([user("hi")], Llama3(date=DATE)).text
    assert "Today Date" not in render([user("hi")], Llama3("3.3", date=DATE)).text
    # The hf templates always write one; 3.1's default is their fixed 26 Jul 2024.
    assert "Today Date: 26 Jul 2024" in render([user("hi")], Llama3(profile="hf")).text


def test_default_date_is_today() -> None:
    months = "January February March April May June July August September October November December"
    today = dt.date.today()
    text = render([user("hi")], tools=(WEATHER,)).text
    month = months.split()[today.month - 1]
    assert f"Today Date: {today.day:02d} {month} {today.year}" in text


def test_builtin_tools_and_their_calls() -> None:
    call = ToolCall("1", "brave_search", {"query": 'say "hi" \\ now'})
    prompt = render(
        [user("search"), assistant("", [call]), tool_result(call, "results")],
        Llama3(date=DATE),
        tools=(brave_search, wolfram_alpha, code_interpreter),
    )
    assert "Environment: ipython\nTools: brave_search, wolfram_alpha\n" in prompt.text
    # Quotes and backslashes in a query are escaped, so the call stays readable; Meta's
    # ChatFormat writes <|python_tag|> before code_interpreter calls only.
    assert (
        'assistant<|end_header_id|>\n\nbrave_search.call(query="say \\"hi\\" \\\\ now")<|eom_id|>'
        "<|start_header_id|>ipython<|end_header_id|>\n\nresults<|eot_id|>"
    ) in prompt.text
    code = ToolCall("2", "code_interpreter", {"code": "print(1)"})
    text = render([user("run"), assistant("", [code]), tool_result(code, "1")]).text
    assert "<|python_tag|>print(1)<|eom_id|>" in text


@pytest.mark.parametrize(
    ("tool_format", "expected"),
    [
        (
            "json",
            '{"type": "function", "name": "get_weather", "parameters": {"city": "Paris"}}'
            '{"type": "function", "name": "get_weather", "parameters": {"city": "Rome"}}<|eot_id|>',
        ),
        (
            "function_tag",
            '<function=get_weather>{"city": "Paris"}</function>'
            '<function=get_weather>{"city": "Rome"}</function><|eot_id|>',
        ),
        (
            "pythonic",
            # (ChatFormat writes each call as a list of its own)
            '[get_weather(city="Paris")][get_weather(city="Rome")]<|eot_id|>',
        ),
    ],
)
def test_several_calls_in_one_turn(tool_format: str, expected: str) -> None:
    calls = [
        ToolCall("a", "get_weather", {"city": "Paris"}),
        ToolCall("b", "get_weather", {"city": "Rome"}),
    ]
    prompt = render(
        [user("weather?"), assistant("", calls), *(tool_result(c, "sunny") for c in calls)],
        Llama3("3.2", tool_format=tool_format),  # type: ignore[arg-type]
        tools=(WEATHER,),
    )
    assert "<|start_header_id|>assistant<|end_header_id|>\n\n" + expected in prompt.text
    assert prompt.text.count("<|start_header_id|>ipython<|end_header_id|>\n\nsunny") == 2


def test_hf_refuses_several_calls_in_one_turn_as_the_templates_do() -> None:
    calls = [ToolCall("a", "get_weather", {"city": "Paris"}), ToolCall("b", "get_weather", {})]
    with pytest.raises(MessageError, match="single tool-calls"):
        render(
            [user("weather?"), assistant("", calls)] + [tool_result(c, "ok") for c in calls],
            Llama3(profile="hf"),
            tools=(WEATHER,),
        )


def test_pythonic_values_are_python_literals() -> None:
    call = ToolCall(
        "a",
        "get_weather",
        {"city": 'He said "x, y"', "n": None, "ok": True, "tags": [1, "a"], "opts": {"k": 1.5}},
    )
    text = render(
        [user("go"), assistant("", [call]), tool_result(call, "ok")],
        Llama3("3.3", tool_format="pythonic"),
        tools=(WEATHER,),
    ).text
    assert (
        '[get_weather(city="He said \\"x, y\\"", n=None, ok=True, tags=[1, "a"], opts={"k": 1.5})]'
    ) in text


def test_tool_results_with_json_content() -> None:
    call = ToolCall("a", "get_weather", {"city": "Paris"})
    messages = [user("go"), assistant("", [call]), tool_result(call, {"temp": 21, "sky": "clear"})]
    meta = render(messages, tools=(WEATHER,)).text
    assert '<|start_header_id|>ipython<|end_header_id|>\n\n{"temp": 21, "sky": "clear"}' in meta
    # The templates quote the result's text with tojson, as a chat endpoint receives it.
    hf = render(messages, Llama3(profile="hf"), tools=(WEATHER,)).text
    assert (
        '<|start_header_id|>ipython<|end_header_id|>\n\n"{\\"temp\\": 21, \\"sky\\": \\"clear\\"}"'
        in hf
    )
    # The templates write a string result as a JSON string.
    plain = [user("go"), assistant("", [call]), tool_result(call, "21 C")]
    hf_plain = render(plain, Llama3(profile="hf"), tools=(WEATHER,)).text
    assert '<|start_header_id|>ipython<|end_header_id|>\n\n"21 C"<|eot_id|>' in hf_plain


def test_invalid_call_arguments_are_kept_as_written() -> None:
    call = ToolCall.from_raw("a", "get_weather", '{"city": "Par')
    text = render(
        [user("go"), assistant("", [call]), tool_result(call, "error")], tools=(WEATHER,)
    ).text
    assert '{"type": "function", "name": "get_weather", "parameters": {"city": "Par}' in text


def test_tools_in_the_system_prompt_or_the_first_user_message() -> None:
    in_user = render([user("hi")], Llama3(date=DATE), tools=(WEATHER,)).text
    assert in_user.index("Here is a list of functions in JSON format") > in_user.index(
        "<|start_header_id|>user"
    )
    in_system = render([user("hi")], Llama3(date=DATE, tools_in="system"), tools=(WEATHER,)).text
    assert in_system.index("Here is a list of functions in JSON format") < in_system.index(
        "<|start_header_id|>user"
    )
    hf = render([user("hi")], Llama3(profile="hf", tools_in="system"), tools=(WEATHER,)).text
    assert hf.index('"name": "get_weather"') < hf.index("<|start_header_id|>user")


def test_schema_property_named_title_is_kept() -> None:
    for fmt in (
        Llama3(),
        Llama3(tool_format="function_tag"),
        Llama3("3.2", tool_format="pythonic"),
        Llama3(profile="hf"),
    ):
        assert '"title"' in render([user("hi")], fmt, tools=(WEATHER,)).text


@pytest.mark.parametrize(
    ("choice", "sentence"),
    [
        ("required", "You MUST use one of the provided functions/tools to answer the user query."),
        ("get_weather", "You MUST use the tool `get_weather` to answer the user query."),
    ],
)
def test_tool_choice(choice: str, sentence: str) -> None:
    for fmt in (Llama3(), Llama3("3.2", tool_format="pythonic")):
        assert sentence in render([user("hi")], fmt, tools=(WEATHER,), tool_choice=choice).text
    # The templates ignore tool_choice (a chat endpoint forces calls by decoding).
    hf = Llama3(profile="hf")
    assert sentence not in render([user("hi")], hf, tools=(WEATHER,), tool_choice=choice).text
    # "none" offers no tools at all.
    text = render([user("hi")], tools=(WEATHER,), tool_choice="none").text
    assert "get_weather" not in text


def test_images_become_the_image_token() -> None:
    prompt = render([user([Image.from_bytes(PNG), "What is this?"])], Llama3("3.2"))
    assert "<|start_header_id|>user<|end_header_id|>\n\n<|image|>What is this?" in prompt.text
    assert 128256 in prompt.tokens
    with pytest.raises(InputError, match="cannot render images"):
        render([user([Image.from_bytes(PNG), "What?"])], Llama3("3.2", "hf"))
    with pytest.raises(MessageError, match="system message cannot hold images"):
        render([system([Image.from_bytes(PNG)]), user("x")])


def test_rerendering_reuses_unchanged_turns() -> None:
    fmt = Llama3()
    messages = [system("s"), user("a"), assistant("b")]
    first = fmt.render(ChatRequest((*messages, user("c"))))
    grown = [*messages, user("c"), assistant("d"), user("e")]
    again = fmt.render(ChatRequest(tuple(grown)))
    fresh = Llama3().render(ChatRequest(tuple(grown)))
    assert again == fresh
    assert again.tokens[: len(first.tokens) - 5] == first.tokens[: len(first.tokens) - 5]


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "at least one message"),
        ([user("a"), system("b")], "one system message, first"),
        ([user("a"), tool_result("x", "r")], "follows no assistant tool call"),
        ([user("a"), assistant("", [ToolCall("1", "f", {})])], "add their results"),
    ],
)
def test_bad_message_order_is_a_clear_error(messages: list[Message], message: str) -> None:
    with pytest.raises(MessageError, match=message):
        Llama3().render(messages)


def test_hf_tools_need_a_first_user_message() -> None:
    with pytest.raises(MessageError, match="first user message"):
        render([system("s")], Llama3(profile="hf"), tools=(WEATHER,))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": "4"}, "version"),
        ({"profile": "vllm"}, "profile"),
        ({"tool_format": "xml"}, "tool_format"),
        ({"profile": "hf", "tool_format": "pythonic"}, "JSON tool calling only"),
        ({"tools_in": "assistant"}, "tools_in"),
        ({"date": 20240101}, "date must be"),
    ],
)
def test_bad_settings_are_input_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        Llama3(**kwargs)


def test_render_completion_for_base_models() -> None:
    prompt = Llama3().render_completion("The sky is")
    assert prompt.text == "<|begin_of_text|>The sky is"
    assert prompt.tokens == (128000, 791, 13180, 374)


def test_special_tokens_are_module_constants() -> None:
    from chatlane.formats import llama3

    assert (llama3.BEGIN_OF_TEXT, llama3.END_OF_TURN, llama3.END_OF_MESSAGE) == (
        128000,
        128009,
        128008,
    )
    assert llama3.PYTHON_TAG == 128010
    assert Llama3().tokenizer.encode("hello") == [15339]
    assert json.loads(json.dumps(list(Llama3().render([user("x")]).tokens)))


@settings(max_examples=50, deadline=None)
@given(text=tricky, profile=st.sampled_from(["meta", "hf"]))
def test_render_text_is_the_prompt_text(text: str, profile: str) -> None:
    call = ToolCall("a", "get_weather", {"city": text})
    messages = (user(text), assistant("", [call]), tool_result(call, text), assistant(text))
    fmt = Llama3(profile=profile)  # type: ignore[arg-type]
    request = ChatRequest(messages, tools=(WEATHER,))
    fresh = Llama3(profile=profile)  # type: ignore[arg-type]
    assert fmt.render_text(request) == fmt.render(request).text == fresh.render_text(request)


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(1, 8), st.booleans(), st.booleans()), min_size=1, max_size=6
    ),
    profile=st.sampled_from(["meta", "hf"]),
)
def test_one_formatter_renders_like_a_fresh_one(
    steps: list[tuple[int, bool, bool]], profile: str
) -> None:
    # Conversations that grow, shrink, change tools or end in a prefill, one after another
    # on the same Llama3: every prompt equals a fresh Llama3's.
    call = ToolCall("a", "get_weather", {"city": "Paris"})
    pool = [
        system("s"),
        user("u1"),
        assistant("", [call]),
        tool_result(call, "sunny"),
        assistant("a1"),
        user("u2"),
        assistant("a2"),
        user("u3"),
    ]
    fmt = Llama3(profile=profile)  # type: ignore[arg-type]
    for length, with_tools, as_text in steps:
        messages = pool[: max(length, 2)]
        if messages[-1].tool_calls:
            messages = messages[:-1]
        request = ChatRequest(tuple(messages), tools=(WEATHER,) if with_tools else ())
        fresh = Llama3(profile=profile)  # type: ignore[arg-type]
        if as_text:
            assert fmt.render_text(request) == fresh.render_text(request)
        else:
            assert fmt.render(request) == fresh.render(request)


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True),
        st.text(max_size=8),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values, indent=st.sampled_from([2, 4]))
def test_indented_json_is_the_standard_library_s(value: Any, indent: int) -> None:
    from chatlane.formats.llama3.prompts import hf_tojson

    assert hf_tojson(value, indent=indent) == json.dumps(value, ensure_ascii=False, indent=indent)


def test_text_renders_without_a_tokenizer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from chatlane.formats.llama3.tokenizer import ENV_VAR, TokenizerNotFound

    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing.model"))
    fmt = Llama3()
    assert fmt.render_text([user("hi")]).startswith("<|begin_of_text|>")
    with pytest.raises(TokenizerNotFound, match="no Llama 3 tokenizer file"):
        fmt.render([user("hi")])


def test_without_the_generation_prompt_the_prompt_ends_after_the_last_message() -> None:
    for fmt in (
        Llama3(add_generation_prompt=False),
        Llama3(profile="hf", add_generation_prompt=False),
    ):
        assert render([user("Hi")], fmt).text.endswith("Hi<|eot_id|>")
    # A final assistant message is closed when it is not to be continued.
    closed = Llama3(add_generation_prompt=False, continue_final_message=False)
    assert render([user("Hi"), assistant("Hello")], closed).text.endswith("Hello<|eot_id|>")
    reopened = Llama3(continue_final_message=False)
    assert render([user("Hi"), assistant("Hello")], reopened).text.endswith(
        "Hello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_continue_final_message_needs_a_final_assistant_message() -> None:
    with pytest.raises(MessageError, match="ends with a user message"):
        render([user("Hi")], Llama3(continue_final_message=True))
    assert render(
        [user("Hi"), assistant("Hel")], Llama3(continue_final_message=True)
    ).text.endswith("assistant<|end_header_id|>\n\nHel")


def test_new_settings_are_checked() -> None:
    with pytest.raises(InputError, match="system_message_behavior"):
        Llama3(system_message_behavior="prepend")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"vision=True is for Llama 3\.2"):
        Llama3("3.1", vision=True)
    assert Llama3("3.2", "hf", vision=True).name == "llama3.2-vision-hf"


def test_the_hf_vision_template_writes_images_and_refuses_them_beside_a_system_message() -> None:
    fmt = Llama3("3.2", "hf", vision=True)
    prompt = render([user([Image.from_bytes(PNG), " What is this? "])], fmt)
    # No system turn when an image appears; the content is not trimmed.
    assert prompt.text == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
        "<|image|> What is this? <|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert prompt.tokens.count(128256) == 1
    with pytest.raises(MessageError, match="incompatible with system messages"):
        render([system("Be brief."), user([Image.from_bytes(PNG), "What?"])], fmt)
    # The text templates cannot write images at all.
    with pytest.raises(InputError, match="vision=True"):
        render([user([Image.from_bytes(PNG), "What?"])], Llama3("3.2", "hf"))


def test_a_vision_conversation_that_gains_an_image_drops_its_system_turn() -> None:
    # The first image changes the Vision template's opening: the grown conversation is
    # rendered anew, as a fresh renderer renders it.
    fmt = Llama3("3.2", "hf", vision=True, date=DATE)
    first = [user("Hi"), assistant("Hello")]
    assert "system<|end_header_id|>" in render(first, fmt).text
    grown = [*first, user([Image.from_bytes(PNG), "And this?"])]
    expected = render(grown, Llama3("3.2", "hf", vision=True, date=DATE))
    assert render(grown, fmt) == expected
    assert "system<|end_header_id|>" not in expected.text
