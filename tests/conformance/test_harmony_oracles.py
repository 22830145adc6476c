"""gpt-oss (harmony) against openai-harmony: its renderer token for token, and its
`StreamableParser` on generated outputs.

openai-harmony needs the ``o200k_base`` file, which it cannot download here: the litellm
wheel bundles it, so tests/support/refs.py fetches that wheel with pip, takes out the one
file, checks its sha256 and points ``TIKTOKEN_ENCODINGS_BASE`` at it (litellm is never
imported). chatlane's own tokenizer reads the same file.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatlane.formats.harmony import Harmony
from chatlane.formats.harmony.parser import parse_output, sequential_ids
from chatlane.messages import Message, Role, ToolCall, assistant, system, tool_result, user
from chatlane.request import ChatRequest
from chatlane.tools import Tool
from support.refs import o200k_base_file

oh = pytest.importorskip("openai_harmony")


@pytest.fixture(scope="module")
def vocab() -> Path:
    return o200k_base_file()


@pytest.fixture(scope="module")
def encoding(vocab: Path) -> Any:
    old = os.environ.get("TIKTOKEN_ENCODINGS_BASE")
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(vocab.parent)
    try:
        return oh.load_harmony_encoding(oh.HarmonyEncodingName.HARMONY_GPT_OSS)
    finally:
        if old is None:
            del os.environ["TIKTOKEN_ENCODINGS_BASE"]
        else:
            os.environ["TIKTOKEN_ENCODINGS_BASE"] = old


# -- schemas: every construct the TypeScript namespace writes ------------------------------

words = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=8
)
notes = st.one_of(words, st.sampled_from(["two\nlines", "a // b", "ünï"]))
scalar_defaults = st.one_of(
    st.integers(-5, 5), st.booleans(), st.none(), words, st.lists(st.integers(0, 3), max_size=2)
)


@st.composite
def schemas(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    kinds = ["string", "number", "integer", "boolean", "array", "enum", "list", "none", "anyof"]
    if depth < 2:
        kinds += ["object", "oneof"]
    kind = draw(st.sampled_from(kinds))
    node: dict[str, Any]
    if kind == "object":
        node = object_schema(draw, depth + 1)
    elif kind == "array":
        node = {"type": "array"}
        if draw(st.booleans()):
            node["items"] = draw(schemas(depth + 1)) if depth < 2 else {"type": "string"}
    elif kind == "enum":
        node = {
            "type": "string",
            "enum": draw(st.lists(st.one_of(words, st.integers(0, 3)), min_size=1, max_size=3)),
        }
    elif kind == "list":
        node = {
            "type": draw(
                st.lists(
                    st.sampled_from(["string", "integer", "null", "boolean"]),
                    min_size=1,
                    max_size=3,
                )
            )
        }
    elif kind == "none":
        node = {}
    elif kind == "anyof":
        node = {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    elif kind == "oneof":
        node = {"oneOf": draw(st.lists(schemas(depth + 1), min_size=1, max_size=3))}
    else:
        node = {"type": kind}
    if draw(st.integers(0, 2)) == 0:
        node["description"] = draw(notes)
    if draw(st.integers(0, 3)) == 0:
        node["default"] = draw(scalar_defaults)
    if draw(st.integers(0, 5)) == 0:
        node["nullable"] = True
    if draw(st.integers(0, 6)) == 0:
        node["title"] = draw(words)
    if draw(st.integers(0, 6)) == 0:
        node["examples"] = draw(st.lists(st.one_of(words, st.integers()), max_size=2))
    return node


def object_schema(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    names: list[str] = draw(
        st.lists(st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True), max_size=4, unique=True)
    )
    required: bool = draw(st.booleans())
    props = {n: draw(schemas(depth)) for n in names}
    node: dict[str, Any] = {"type": "object", "properties": props}
    if names and required:
        node["required"] = draw(st.lists(st.sampled_from(names), unique=True))
    if draw(st.integers(0, 3)) == 0:
        node["description"] = draw(notes)
    return node


@st.composite
def tools(draw: st.DrawFn) -> list[Tool]:
    n = draw(st.integers(0, 3))
    out = []
    for i in range(n):
        params = object_schema(draw)
        description = draw(st.one_of(st.none(), notes, st.just("x\r\ny\n")))
        out.append(Tool.from_schema(f"tool_{i}", params, description))
    return out


texts = st.lists(
    st.one_of(
        st.text(st.characters(exclude_categories=["Cs"]), max_size=16),
        st.sampled_from(
            [
                "<|end|>",
                "<|start|>",
                "<|channel|>",
                "<|message|>",
                "<|call|>",
                "\n",
                " ",
                "日本語",
                "🙂",
            ]
        ),
    ),
    max_size=4,
).map("".join)


@st.composite
def conversations(draw: st.DrawFn, names: list[str]) -> list[Message]:
    messages: list[Message] = []
    if draw(st.booleans()):
        messages.append(system(draw(texts)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(
            st.sampled_from(
                ["user", "answer", "calls", "system"] if names else ["user", "answer", "system"]
            )
        )
        if kind == "user":
            messages.append(user(draw(texts)))
        elif kind == "system":
            messages.append(system(draw(texts)))
        elif kind == "answer":
            messages.append(assistant(draw(texts), reasoning=draw(st.one_of(st.none(), texts))))
        else:
            made = [
                ToolCall.from_raw(
                    f"c{len(messages)}_{k}",
                    draw(st.sampled_from(names)),
                    draw(st.sampled_from(['{"a": 1}', "{}", '{"q": "x y"}'])),
                )
                for k in range(draw(st.integers(1, 2)))
            ]
            messages.append(
                assistant(
                    draw(st.sampled_from(["", "Let me look."])),
                    made,
                    reasoning=draw(st.one_of(st.none(), texts)),
                )
            )
            for call in made:
                messages.append(tool_result(call, draw(texts)))
    if draw(st.booleans()):
        messages.append(user(draw(texts)))
    return messages


def harmony_conversation(fmt: Harmony, request: ChatRequest) -> Any:
    """The same conversation written with openai-harmony's own types."""
    sys_content = (
        oh.SystemContent.new()
        .with_model_identity(fmt.model_identity)
        .with_knowledge_cutoff(fmt.knowledge_cutoff)
        .with_reasoning_effort(oh.ReasoningEffort(fmt.reasoning_effort.capitalize()))
    )
    if fmt.date:
        sys_content = sys_content.with_conversation_start_date(fmt.date)
    out = [oh.Message.from_role_and_content(oh.Role.SYSTEM, sys_content)]
    descriptions = [
        oh.ToolDescription.new(t.name, t.description or "", parameters=dict(t.parameters))
        for t in request.tools
    ]
    systems = [m for m in request.messages if m.role is Role.SYSTEM]
    if descriptions and not systems:
        out.append(
            oh.Message.from_role_and_content(
                oh.Role.DEVELOPER, oh.DeveloperContent.new().with_function_tools(descriptions)
            )
        )
    first = True
    for m in request.messages:
        if m.role is Role.SYSTEM:
            dev = oh.DeveloperContent.new().with_instructions(m.text)
            if descriptions and first:
                dev = dev.with_function_tools(descriptions)
            first = False
            out.append(oh.Message.from_role_and_content(oh.Role.DEVELOPER, dev))
        elif m.role is Role.USER:
            out.append(oh.Message.from_role_and_content(oh.Role.USER, m.text))
        elif m.role is Role.ASSISTANT:
            if m.reasoning:
                out.append(
                    oh.Message.from_role_and_content(oh.Role.ASSISTANT, m.reasoning).with_channel(
                        "analysis"
                    )
                )
            if m.tool_calls:
                if m.text:
                    out.append(
                        oh.Message.from_role_and_content(oh.Role.ASSISTANT, m.text).with_channel(
                            "commentary"
                        )
                    )
                for c in m.tool_calls:
                    out.append(
                        oh.Message.from_role_and_content(oh.Role.ASSISTANT, c.raw_arguments)
                        .with_channel("commentary")
                        .with_recipient(f"functions.{c.name}")
                        .with_content_type("<|constrain|>json")
                    )
            else:
                out.append(
                    oh.Message.from_role_and_content(oh.Role.ASSISTANT, m.text).with_channel(
                        "final"
                    )
                )
        else:
            out.append(
                oh.Message.from_author_and_content(
                    oh.Author.new(oh.Role.TOOL, f"functions.{m.name}"), m.text
                )
                .with_channel("commentary")
                .with_recipient("assistant")
            )
    return oh.Conversation.from_messages(out)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), effort=st.sampled_from(["low", "medium", "high"]), dated=st.booleans())
def test_render_is_openai_harmonys(
    encoding: Any, vocab: Path, data: st.DataObject, effort: str, dated: bool
) -> None:
    offered = data.draw(tools())
    messages = data.draw(conversations([t.name for t in offered]))
    fmt = Harmony(reasoning_effort=effort, date="2025-06-28" if dated else None, vocab=vocab)  # type: ignore[arg-type]
    request = ChatRequest(tuple(messages), tools=tuple(offered))
    prompt = fmt.render(request)
    config = oh.RenderConversationConfig(auto_drop_analysis=True)
    conversation = harmony_conversation(fmt, request)
    if messages[-1].role is Role.ASSISTANT:
        # Continuing the last answer: the conversation as rendered, before its last <|end|>.
        expected = encoding.render_conversation(conversation, config)[:-1]
    else:
        expected = encoding.render_conversation_for_completion(
            conversation, oh.Role.ASSISTANT, config
        )
    assert prompt.text == encoding.decode_utf8(expected)
    assert list(prompt.tokens) == expected


def test_continuing_a_final_answer(encoding: Any, vocab: Path) -> None:
    fmt = Harmony(vocab=vocab)
    request = ChatRequest((user("Hi"), assistant("Hello, how", reasoning="greet")))
    expected = encoding.render_conversation(
        harmony_conversation(fmt, request), oh.RenderConversationConfig(auto_drop_analysis=True)
    )
    assert expected[-1] == 200007  # <|end|>: a continued answer stops before it
    assert list(fmt.render(request).tokens) == expected[:-1]


# -- the parser against StreamableParser -----------------------------------------------

bodies = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="<"), max_size=30)


@st.composite
def outputs(draw: st.DrawFn) -> list[Any]:
    """An assistant turn as harmony messages: analysis, preambles, calls, a final answer."""
    out = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["analysis", "preamble"]))
        channel = "analysis" if kind == "analysis" else "commentary"
        out.append(
            oh.Message.from_role_and_content(oh.Role.ASSISTANT, draw(bodies)).with_channel(channel)
        )
    end = draw(st.sampled_from(["final", "call", "analysis-call"]))
    if end == "final":
        out.append(
            oh.Message.from_role_and_content(oh.Role.ASSISTANT, draw(bodies)).with_channel("final")
        )
    else:
        args = draw(st.sampled_from(['{"city": "Paris"}', "{}", '{"a": [1, 2]}']))
        channel = "commentary" if end == "call" else "analysis"
        out.append(
            oh.Message.from_role_and_content(oh.Role.ASSISTANT, args)
            .with_channel(channel)
            .with_recipient("functions.get_weather")
            .with_content_type("<|constrain|>json")
        )
    return out


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(messages=outputs(), n=st.integers(1, 6))
def test_parse_is_streamable_parsers(
    encoding: Any, vocab: Path, messages: list[Any], n: int
) -> None:
    tokens: list[int] = encoding.render_conversation_for_training(
        oh.Conversation.from_messages(messages)
    )
    # The prompt ended with "<|start|>assistant": the output starts after it.
    assert tokens[0] == 200006
    tokens = tokens[1:]
    head = encoding.encode("assistant", allowed_special=set())
    assert tokens[: len(head)] == head
    tokens = tokens[len(head) :]
    reference = oh.StreamableParser(encoding, oh.Role.ASSISTANT)
    for t in tokens:
        reference.process(t)
    read = reference.messages
    reasoning = [m.content[0].text for m in read if m.channel == "analysis" and m.recipient is None]
    content = [m.content[0].text for m in read if m.channel != "analysis" and m.recipient is None]
    calls = [
        (m.recipient.removeprefix("functions."), m.content[0].text) for m in read if m.recipient
    ]
    expected_reasoning = "\n\n".join(r for r in reasoning if r) or None
    expected_content = "\n\n".join(c for c in content if c)

    fmt = Harmony(vocab=vocab)
    assert fmt.tokenizer is not None
    # Fed N tokens at a time, as an engine streams it.
    parser = fmt.stream_parser(None)
    decoder = codecs.getincrementaldecoder("utf-8")()
    tok = fmt.tokenizer
    pieces = [decoder.decode(tok.decode_bytes(tokens[i : i + n])) for i in range(0, len(tokens), n)]
    for piece in pieces:
        parser.feed(piece)
    parser.finish()
    out = parser.result()
    assert out.reasoning == expected_reasoning
    assert out.content == expected_content
    assert [(c.name, c.raw_arguments) for c in out.tool_calls] == calls
    assert out.stop_sequence == ("<|call|>" if calls else "<|return|>")
    whole = parse_output("".join(pieces), ids=sequential_ids())
    assert (whole.content, whole.reasoning) == (out.content, out.reasoning)
