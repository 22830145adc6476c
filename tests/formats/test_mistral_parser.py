"""The Mistral output parser: calls in both syntaxes, reasoning, malformed and cut-off calls,
and streaming that equals whole parsing for any split (1 char, 1 token, N tokens)."""

from __future__ import annotations

import codecs
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatlane import formats
from chatlane.events import (
    ChatEvent,
    Finished,
    ReasoningDelta,
    TextDelta,
    ToolCallDone,
    ToolCallStarted,
    accumulate,
)
from chatlane.formats.mistral.parser import (
    MistralParsedOutput,
    MistralStreamParser,
    parse_output,
    sequential_ids,
)
from chatlane.response import FinishReason
from chatlane.tools import Tool


def stream(
    pieces: list[str], *, truncated: bool = False, tools: Any = None
) -> tuple[list[ChatEvent], MistralParsedOutput]:
    parser = MistralStreamParser(tools, ids=sequential_ids())
    events: list[ChatEvent] = []
    for piece in pieces:
        events += parser.feed(piece)
    events += parser.finish(truncated=truncated)
    return events, parser.result()


def whole(raw: str, **kw: Any) -> MistralParsedOutput:
    return parse_output(raw, ids=sequential_ids(), **kw)


# -- what it reads ----------------------------------------------------------------------


def test_v11_call_with_and_without_call_id() -> None:
    out = whole('[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}</s>')
    assert [(c.name, dict(c.arguments)) for c in out.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert out.tool_calls[0].id == "call00001"
    assert out.tool_calls[0].raw_arguments == '{"city": "Paris"}'
    assert out.content == ""
    assert out.stop_sequence == "</s>"
    assert out.finish_reason is FinishReason.TOOL_CALLS
    out = whole(
        '[TOOL_CALLS]f[CALL_ID]abcDEF123[ARGS]{}[TOOL_CALLS]g[CALL_ID]xyz987QRS[ARGS]{"a": [1, {"b": "}"}]}'
    )
    assert [(c.id, c.name) for c in out.tool_calls] == [("abcDEF123", "f"), ("xyz987QRS", "g")]
    assert out.tool_calls[1].arguments == {"a": [1, {"b": "}"}]}


def test_v3_json_list_of_calls() -> None:
    out = whole(
        'Sure. [TOOL_CALLS] [{"name": "f", "arguments": {"x": 1}, "id": "abcDEF123"}, '
        '{"name": "g", "arguments": "{\\"y\\": 2}"}]</s>'
    )
    assert out.content == "Sure."
    assert [(c.id, c.name, dict(c.arguments)) for c in out.tool_calls] == [
        ("abcDEF123", "f", {"x": 1}),
        ("call00001", "g", {"y": 2}),
    ]


def test_generated_ids_follow_mistral_rule() -> None:
    out = parse_output(
        '[TOOL_CALLS]f[ARGS]{}[TOOL_CALLS][{"name": "g", "arguments": {}, "id": "bad"}]'
    )
    for call in out.tool_calls:
        assert len(call.id) == 9
        assert call.id.isalnum()


def test_reasoning_is_kept_apart() -> None:
    raw = "[THINK]Let me think [x] <y>.[/THINK]The answer is 4.</s>"
    out = whole(raw)
    assert out.reasoning == "Let me think [x] <y>."
    assert out.content == "The answer is 4."
    assert out.message().reasoning == out.reasoning
    events, _ = stream(list(raw))
    response = accumulate(events)
    assert response.message.reasoning == "Let me think [x] <y>."
    assert response.message.content == "The answer is 4."
    assert not any(isinstance(e, TextDelta) and "think" in e.text for e in events)


def test_call_after_reasoning_and_call_inside_unclosed_reasoning() -> None:
    out = whole('[THINK]need weather[/THINK][TOOL_CALLS]w[ARGS]{"c": "x"}</s>')
    assert out.reasoning == "need weather"
    assert [c.name for c in out.tool_calls] == ["w"]
    out = whole('[THINK]need weather[TOOL_CALLS]w[ARGS]{"c": "x"}')
    assert out.reasoning == "need weather"
    assert [c.name for c in out.tool_calls] == ["w"]


def test_a_stray_end_of_reasoning_stays_text() -> None:
    out = whole("I thought.[/THINK]Answer.")
    assert out.content == "I thought.[/THINK]Answer."
    assert out.reasoning is None


def test_text_after_the_stop_token_is_not_part_of_the_turn() -> None:
    out = whole("Hello</s>[INST] more")
    assert out.content == "Hello"
    assert out.stop_sequence == "</s>"


def test_plain_text_is_released_at_once() -> None:
    parser = MistralStreamParser(ids=sequential_ids())

    def text(piece: str) -> str:
        return "".join(e.text for e in parser.feed(piece) if isinstance(e, TextDelta))

    # "[w" cannot begin a control token: nothing is held.
    assert text("Hello [world") == "Hello [world"
    assert text("] and <b>") == "] and <b>"
    assert text(" [TOOL_") == ""  # may become [TOOL_CALLS]: held, a dozen characters at most
    assert text("X]") == " [TOOL_X]"
    assert text(" </") == ""  # may become </s>
    assert text("p>") == " </p>"


def test_a_call_whose_begin_and_end_arrive_in_one_delta() -> None:
    parser = MistralStreamParser(ids=sequential_ids())
    events = parser.feed('Hi [TOOL_CALLS]f[ARGS]{"a": 1}[TOOL_CALLS]g[ARGS]{}</s>')
    assert [type(e) for e in events if not isinstance(e, TextDelta)].count(ToolCallDone) == 2
    assert [e.name for e in events if isinstance(e, ToolCallStarted)] == ["f", "g"]
    events += parser.finish()
    assert isinstance(events[-1], Finished)
    assert events[-1].finish_reason is FinishReason.TOOL_CALLS


@pytest.mark.parametrize(
    "bad",
    [
        "[TOOL_CALLS]f[ARGS]{bad json}",
        "[TOOL_CALLS]f{}",
        "[TOOL_CALLS] hello there",
        '[TOOL_CALLS][{"nome": "f"}]',
        "[TOOL_CALLS]f[ARGS][1, 2]",
        "[TOOL_CALLS]" + "n" * 80 + "[ARGS]{}",
    ],
)
def test_a_malformed_call_in_the_middle_is_text_and_the_stream_goes_on(bad: str) -> None:
    raw = f'Before. {bad} After.[TOOL_CALLS]ok[ARGS]{{"x": 1}}</s>'
    out = whole(raw)
    assert [c.name for c in out.tool_calls] == ["ok"]
    assert out.content == f"Before. {bad} After."
    assert len(out.malformed_calls) == 1
    assert out.malformed[0].reason
    malformed = out.malformed[0].raw
    assert malformed.startswith("[TOOL_CALLS]")
    assert bad.startswith(malformed)
    for split in (list(raw), [raw[:9], raw[9:20], raw[20:]]):
        _, streamed = stream(split)
        assert streamed == out


def test_a_cut_off_call_is_never_a_call() -> None:
    raw = 'Let me check.[TOOL_CALLS]get_weather[ARGS]{"city": "Par'
    out = whole(raw, truncated=True)
    assert out.tool_calls == ()
    assert out.truncated
    assert out.partial_call == '[TOOL_CALLS]get_weather[ARGS]{"city": "Par'
    assert out.content == "Let me check."
    assert out.finish_reason is FinishReason.LENGTH
    # Ended without the token limit (a stop the caller saw): the text is kept as text.
    out = whole(raw)
    assert out.tool_calls == ()
    assert out.content == raw
    assert out.malformed[0].reason == "the output ended inside the call"
    # A stop token inside the JSON ends the call too.
    out = whole('[TOOL_CALLS]f[ARGS]{"a": 1</s>')
    assert out.tool_calls == ()
    assert out.content == '[TOOL_CALLS]f[ARGS]{"a": 1'
    assert out.stop_sequence == "</s>"


def test_unknown_tools_are_listed() -> None:
    tool = Tool("f", "", {"type": "object", "properties": {}})
    out = whole("[TOOL_CALLS]g[ARGS]{}[TOOL_CALLS]f[ARGS]{}", tools=[tool])
    assert out.unknown_tools == ("g",)


# -- streaming == whole, for any split ------------------------------------------------------

_plain = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from("[]<>/{} \n"),
    max_size=20,
).filter(
    lambda t: (
        "[TOOL_CALLS]" not in t and "[THINK]" not in t and "[/THINK]" not in t and "</s>" not in t
    )
)
_args = st.dictionaries(
    st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=8), st.none()), max_size=3
)
_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
_ids = st.from_regex(r"[A-Za-z0-9]{9}", fullmatch=True)


@st.composite
def outputs(draw: Any) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    parts: list[str] = []
    calls: list[tuple[str, dict[str, Any]]] = []
    if draw(st.booleans()):
        parts.append(f"[THINK]{draw(_plain)}[/THINK]")
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["text", "v11", "v11id", "v3", "bad"]))
        if kind == "text":
            parts.append(draw(_plain))
            continue
        if kind == "bad":
            parts.append(
                draw(st.sampled_from(["[TOOL_CALLS]f[ARGS]{oops}", "[TOOL_CALLS]?", "[TOOL_"]))
            )
            continue
        name, args = draw(_names), draw(_args)
        calls.append((name, args))
        if kind == "v3":
            parts.append("[TOOL_CALLS]" + json.dumps([{"name": name, "arguments": args}]))
        elif kind == "v11id":
            parts.append(f"[TOOL_CALLS]{name}[CALL_ID]{draw(_ids)}[ARGS]{json.dumps(args)}")
        else:
            parts.append(f"[TOOL_CALLS]{name}[ARGS]{json.dumps(args, ensure_ascii=False)}")
    if draw(st.booleans()):
        parts.append("</s>")
    return "".join(parts), calls


def _tekken() -> Any:
    return formats.get("mistral-v11").tokenizer


def _token_pieces(raw: str, group: int) -> list[str]:
    """The text an engine hands over, ``group`` tokens at a time (UTF-8 decoded as it goes,
    so a character split across tokens arrives whole)."""
    tok = _tekken()
    ids: list[int] = []
    for segment in _split_specials(raw, tok.special_tokens):
        if segment in tok.special_tokens:
            ids.append(tok.special_tokens[segment])
        else:
            ids += tok.encode(segment)
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    pieces: list[str] = []
    for i in range(0, len(ids), group):
        chunk = b""
        for t in ids[i : i + group]:
            chunk += tok.decode([t]).encode() if tok.is_special(t) else tok.token_bytes(t)
        pieces.append(decoder.decode(chunk))
    pieces.append(decoder.decode(b"", final=True))
    return pieces


def _split_specials(raw: str, specials: Any) -> list[str]:
    import re

    pattern = (
        "("
        + "|".join(
            re.escape(s)
            for s in ("[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "[THINK]", "[/THINK]", "</s>")
        )
        + ")"
    )
    return [s for s in re.split(pattern, raw) if s]


@settings(max_examples=150, deadline=None)
@given(outputs(), st.data())
def test_streaming_equals_whole_parsing_for_any_split(case: Any, data: Any) -> None:
    raw, calls = case
    expected = whole(raw)
    assert [(c.name, dict(c.arguments)) for c in expected.tool_calls] == calls
    # one character at a time
    _, by_char = stream(list(raw))
    assert by_char == expected
    # random splits
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    _, by_pieces = stream(pieces)
    assert by_pieces == expected
    # one token and N tokens at a time, as the engine hands them over
    for group in (1, data.draw(st.integers(2, 6))):
        _, by_tokens = stream(_token_pieces(raw, group))
        assert by_tokens == expected
    # events add up to the result
    events, _ = stream(list(raw))
    response = accumulate(events)
    assert response.message.content == expected.content
    assert response.message.reasoning == expected.reasoning
    assert [c.name for c in response.message.tool_calls] == [c.name for c in expected.tool_calls]
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert reasoning == (expected.reasoning or "")
