"""The Llama 3 renderer's shortcuts give what a fresh renderer gives, render after render.

A `Llama3` keeps the last prompt (to copy the start a new one shares), the last conversation
(to extend it when it grows) and its messages' renderings (filed by the render after the one
that made them). These tests render a sequence of overlapping conversations on one `Llama3`
and compare each prompt with a new `Llama3`'s, and check the JSON of tool calls against
``json.dumps``, which llama-models writes them with.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatlane.errors import MessageError
from chatlane.formats.llama3 import Llama3
from chatlane.formats.llama3 import prompts as P
from chatlane.formats.llama3.tokenizer import END_HEADER, END_OF_TURN, START_HEADER, load_tokenizer
from chatlane.messages import Message, ToolCall, assistant, system, tool_result, user
from chatlane.request import ChatRequest
from chatlane.tools import Tool, brave_search

# Characters where tokenizing could go wrong: whitespace of each kind, non-ASCII, specials.
texts = st.lists(
    st.sampled_from([*"ab Z7.,'\"{}\n\t\x0b\x0c\u3000é日", "<|eot_id|>", "  "]), max_size=10
).map("".join)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
# Raw arguments: ASCII whitespace of every kind next to other characters.
raw_texts = st.lists(
    st.sampled_from(["a", "1", "{", " ", "\n", "\t", "\t ", "\x0b ", " \x0c", "\x0c "]), max_size=6
).map("".join)
arguments = st.dictionaries(texts, json_values, max_size=4)
names = st.sampled_from(["get_weather", "tool_0", 'odd"name\t', "brave_search", "日本"])

WEATHER = Tool.from_schema(
    "get_weather",
    {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The  city"}},
        "required": ["city"],
    },
    "Weather\tnow.",
)


@st.composite
def calls(draw: st.DrawFn) -> ToolCall:
    name = draw(names)
    if draw(st.integers(0, 2)) == 0:
        # arguments the model wrote that are not JSON: written as they are
        return ToolCall.from_raw(f"c{draw(st.integers(0, 99))}", name, draw(raw_texts))
    return ToolCall(f"c{draw(st.integers(0, 99))}", name, draw(arguments))


@st.composite
def conversations(draw: st.DrawFn) -> list[Message]:
    messages: list[Message] = []
    if draw(st.booleans()):
        messages.append(system(draw(texts)))
    for _ in range(draw(st.integers(1, 5))):
        messages.append(user(draw(texts)))
        if draw(st.booleans()):
            made = draw(st.lists(calls(), min_size=1, max_size=2))
            messages.append(assistant(draw(texts), made))
            messages.extend(tool_result(call, draw(texts)) for call in made)
        messages.append(assistant(draw(texts)))
    return messages


def _valid_end(messages: list[Message], n: int) -> bool:
    # A prompt cannot end with an assistant's tool calls: their results must follow.
    return not messages[n - 1].tool_calls


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=conversations(),
    steps=st.lists(
        st.tuples(st.integers(1, 40), st.booleans(), st.booleans()), min_size=2, max_size=7
    ),
    settings_=st.sampled_from(
        [
            {},
            {"tool_format": "function_tag"},
            {"version": "3.2", "tool_format": "pythonic"},
            {"profile": "hf"},
            {"tools_in": "system"},
        ]
    ),
)
def test_a_sequence_of_renders_matches_fresh_renders(
    tokenizer: Any,
    messages: list[Message],
    steps: list[tuple[int, bool, bool]],
    settings_: dict[str, Any],
) -> None:
    fmt = Llama3(date="1 July 2024", tokenizer=tokenizer, **settings_)
    for length, with_tools, tokenize in steps:
        n = min(length, len(messages))
        if not _valid_end(messages, n):
            n -= 1
        hf = settings_.get("profile") == "hf"
        if hf and with_tools and not any(m.role.value == "user" for m in messages[:n]):
            continue
        tools = (WEATHER, brave_search) if with_tools else ()
        request = ChatRequest(tuple(messages[:n]), tools=tools)
        fresh = Llama3(date="1 July 2024", tokenizer=tokenizer, **settings_)
        if tokenize:
            assert outcome(fmt.render, request) == outcome(fresh.render, request)
        else:
            assert outcome(fmt.render_text, request) == outcome(fresh.render_text, request)


def outcome(render: Any, request: ChatRequest) -> Any:
    # The prompt, or the error for what the profile refuses (the hf templates take one call
    # per turn).
    try:
        return render(request)
    except MessageError as e:
        return str(e)


def test_a_conversation_rendered_again_after_another_reuses_its_messages(tokenizer: Any) -> None:
    fmt = Llama3(tokenizer=tokenizer)
    call = ToolCall("c1", "get_weather", {"city": "Paris"})
    first = [user("hi"), assistant("", [call]), tool_result(call, "sunny"), assistant("ok")]
    other = [user("something else")]
    fmt.render(ChatRequest((*first, user("and?")), tools=(WEATHER,)))
    fmt.render(ChatRequest(tuple(other)))
    # The first conversation's messages were filed when the second render ran.
    assert all(id(m) in fmt._cache.messages for m in first)
    again = ChatRequest((system("now with a system prompt"), *first, user("and?")))
    assert fmt.render(again) == Llama3(tokenizer=tokenizer).render(again)


@settings(max_examples=300, deadline=None)
@given(call=calls())
def test_json_calls_are_json_dumps(call: ToolCall) -> None:
    if call.valid:
        expected = json.dumps(
            {"type": "function", "name": call.name, "parameters": dict(call.arguments)}
        )
    else:
        expected = (
            f'{{"type": "function", "name": {json.dumps(call.name)}, '
            f'"parameters": {call.raw_arguments}}}'
        )
    assert P.meta_json_call(call) == expected


def test_dumps_fails_as_json_dumps_fails_and_goes_on() -> None:
    circular: dict[str, Any] = {}
    circular["me"] = circular
    with pytest.raises(ValueError, match="Circular reference"):
        P.dumps(circular)
    with pytest.raises(TypeError, match="not JSON serializable"):
        P.dumps({"a": [1, object()]})
    # Nothing is left behind by a failure: the same objects encode afterwards.
    value = {"a": [1, 2.5, math.inf], "b": {"c": None, "é": "x\ty"}}
    assert P.dumps(value) == json.dumps(value)
    assert P.dumps({"me": {"a": 1}}) == '{"me": {"a": 1}}'


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=conversations(), tool_format=st.sampled_from(["json", "function_tag", "pythonic"]))
def test_each_message_is_rendered_as_the_generic_path_renders_it(
    tokenizer: Any, messages: list[Message], tool_format: Any
) -> None:
    # A text turn is written directly (header ids, the text's tokens, <|eot_id|>); that is
    # what laying out its pieces and tokenizing each on its own (ChatFormat's way) gives.
    fmt = Llama3(tool_format=tool_format, tokenizer=tokenizer)
    if messages[-1].tool_calls:
        messages = messages[:-1]
    parts = fmt._render(ChatRequest(tuple(messages), tools=(WEATHER,)), tokenize=True)
    rest = [m for m in messages if m.role.value != "system"]
    # [<|begin_of_text|>, the system prompt and tools, each message..., the assistant header]
    assert len(parts) == 2 + len(rest) + (0 if rest[-1].role.value == "assistant" else 1)
    for i, message in enumerate(rest):
        continuing = i == len(rest) - 1 and message.role.value == "assistant"
        if message.tool_calls:
            pieces = fmt._call_pieces(message, None)
        else:
            role = "ipython" if message.role.value == "tool" else message.role.value
            pieces = [START_HEADER, role, END_HEADER, "\n\n", message.text]
            pieces += [] if continuing else [END_OF_TURN]
        text, tokens = fmt._encode(pieces)
        assert parts[2 + i][0] == text
        assert list(parts[2 + i][1]) == list(tokens)


def test_raw_arguments_with_whitespace_runs_take_the_exact_regex(tokenizer: Any) -> None:
    # "\t " before a letter: the lookahead regex gives "\t", " a"; the lookahead-free one
    # would give "\t ", "a".
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

    call = ToolCall.from_raw("c1", "f", "{\t a}")
    messages = (user("x"), assistant("", [call]), tool_result(call, "r"))
    part = Llama3(tokenizer=tokenizer)._render(ChatRequest(messages), tokenize=True)[3]
    text = '{"type": "function", "name": "f", "parameters": {\t a}}'
    meta = list(MetaTokenizer.get_instance().encode(text, bos=False, eos=False))
    assert list(part[1]) == [*tokenizer.header_tokens["assistant"], *meta, 128009]


def test_tools_sharing_values_are_tokenized_as_meta_does(tokenizer: Any) -> None:
    # Repeated values (a parameter name, a description, an empty one) are tokenized once
    # per text; each repeat must still take the path its own text needs.
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

    def tool(name: str, description: str) -> Tool:
        return Tool.from_schema(
            name,
            {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": description},
                    "limit": {"type": "integer"},
                    "mode": {"type": "string", "description": "two  spaces"},
                },
                "required": ["query"],
            },
            description,
        )

    tools = [tool(f"t{i}", d) for i, d in enumerate(["same", "same", "", "two  spaces", "é"])]
    segments = P.meta_json_tools_segments(tools)
    assert len(set(segments[1::2])) < len(segments[1::2])
    whole = "".join(segments)
    meta = list(MetaTokenizer.get_instance().encode(whole, bos=False, eos=False))
    assert tokenizer.encode_segments(segments) == meta
    assert tokenizer.encode_segments([*segments[:-1], segments[-1] + "\t"]) == list(
        MetaTokenizer.get_instance().encode(whole + "\t", bos=False, eos=False)
    )


def test_a_conversation_that_only_grows_keeps_the_message_cache_bounded(
    tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatlane.formats.llama3 import _cache

    monkeypatch.setattr(_cache, "CACHE_SIZE", 40)
    fmt = Llama3(tokenizer=tokenizer)
    messages: list[Message] = [system("s")]
    for turn in range(150):
        messages.append(user(f"question {turn}"))
        prompt = fmt.render(ChatRequest(tuple(messages)))
        messages.append(assistant(f"answer {turn}"))
        assert len(fmt._cache.messages) <= 40
        assert sum(len(body) for body, _, _ in fmt._cache.unfiled) <= 2 * 65
    assert prompt == Llama3(tokenizer=tokenizer).render(ChatRequest(tuple(messages[:-1])))
    # A render that looks messages up (the system prompt changed) files them first.
    again = ChatRequest((system("other"), *messages[-6:-1]))
    assert fmt.render(again) == Llama3(tokenizer=tokenizer).render(again)
    assert not fmt._cache.unfiled
    assert len(fmt._cache.messages) <= 40
