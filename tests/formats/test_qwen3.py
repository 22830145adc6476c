"""Qwen 3's parser (reasoning, Hermes calls, streaming), detection, grammar and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatlane import formats
from chatlane.events import (
    ChatEvent,
    Finished,
    ReasoningDelta,
    TextDelta,
    ToolCallDone,
    ToolCallStarted,
)
from chatlane.formats.base import ModelInfo, PromptFormat
from chatlane.formats.qwen3 import Qwen
from chatlane.formats.qwen3.parser import QwenStreamParser, parse_output, sequential_ids
from chatlane.messages import assistant, tool_result, user
from chatlane.request import ChatRequest
from chatlane.response import FinishReason
from chatlane.tools import Tool
from support.refs import sdist_file
from test_cli import CLI

WEATHER = Tool.from_schema(
    "get_weather", {"type": "object", "properties": {"city": {"type": "string"}}}, "Weather"
)


@pytest.fixture(scope="module")
def qwen_vocab() -> Path:
    return sdist_file("models/ggml-vocab-qwen2.gguf")


def call_block(name: str, args: Any) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {json.dumps(args)}}}\n</tool_call>'


def stream(raw: str, pieces: list[int] | None = None, **finish: Any) -> tuple[list[ChatEvent], Any]:
    parser = QwenStreamParser([WEATHER], ids=sequential_ids())
    events: list[ChatEvent] = []
    if pieces is None:
        pieces = [1] * len(raw)
    i = 0
    for n in pieces:
        events += parser.feed(raw[i : i + n])
        i += n
    events += parser.feed(raw[i:])
    events += parser.finish(**finish)
    return events, parser.result()


def text_of(events: list[ChatEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def reasoning_of(events: list[ChatEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, ReasoningDelta))


def test_reasoning_text_and_calls() -> None:
    raw = (
        "<think>\nThe user wants weather.\n</think>\n\nLet me check.\n"
        + call_block("get_weather", {"city": "Paris"})
        + "\n"
        + call_block("get_weather", {"city": "Rome"})
        + "<|im_end|>"
    )
    out = parse_output(raw, tools=[WEATHER], ids=sequential_ids())
    assert out.reasoning == "The user wants weather."
    assert out.content == "Let me check."
    assert [(c.name, dict(c.arguments)) for c in out.tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Rome"}),
    ]
    assert out.stop_sequence == "<|im_end|>"
    assert out.finish_reason is FinishReason.TOOL_CALLS
    message = out.message()
    assert message.reasoning == "The user wants weather."
    assert "<think>" not in message.text


def test_calls_never_left_in_content() -> None:
    out = parse_output("Sure. " + call_block("get_weather", {"city": "Oslo"}) + " Done.")
    assert "<tool_call>" not in out.content
    assert "get_weather" not in out.content
    assert out.content == "Sure.  Done."
    assert len(out.tool_calls) == 1


def test_begin_and_end_in_one_delta() -> None:
    """A server bug: a call whose open and close tags arrive in one piece was dropped."""
    raw = call_block("get_weather", {"city": "Paris"})
    events, out = stream(raw, pieces=[len(raw)])
    assert [type(e) for e in events if isinstance(e, ToolCallStarted | ToolCallDone)] == [
        ToolCallStarted,
        ToolCallDone,
    ]
    assert out.tool_calls[0].arguments == {"city": "Paris"}
    # The whole turn, call and stop token, in one delta.
    events, out = stream("Hi " + raw + "<|im_end|>", pieces=[len(raw) + 13])
    assert len(out.tool_calls) == 1
    assert out.content == "Hi"


def test_call_inside_think_is_a_call() -> None:
    """A server bug: a call written inside <think> was lost."""
    raw = "<think>I will call it " + call_block("get_weather", {"city": "Lima"}) + " now</think>"
    out = parse_output(raw)
    assert [c.name for c in out.tool_calls] == ["get_weather"]
    assert out.reasoning == "I will call it  now"
    assert out.content == ""


@pytest.mark.parametrize(
    "bad",
    [
        "<tool_call>\nnot json\n</tool_call>",
        '<tool_call>\n{"arguments": {}}\n</tool_call>',
        '<tool_call>\n{"name": "f", "arguments": 3}\n</tool_call>',
        "<tool_call>[1, 2]</tool_call>",
    ],
)
def test_malformed_call_is_kept_and_the_stream_goes_on(bad: str) -> None:
    """A server bug: a malformed call aborted the stream."""
    raw = "Before " + bad + " after " + call_block("get_weather", {"city": "Bern"}) + " end"
    events, out = stream(raw)
    assert out.content == "Before " + bad + " after  end"
    assert out.malformed_calls == (bad,)
    assert [c.name for c in out.tool_calls] == ["get_weather"]
    assert isinstance(events[-1], Finished)
    assert parse_output(raw, ids=sequential_ids()) == out


def test_cut_off_call_is_never_a_call() -> None:
    raw = 'Ok <tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa'
    out = parse_output(raw, truncated=True)
    assert out.tool_calls == ()
    assert out.partial_call == raw[3:]
    assert out.finish_reason is FinishReason.LENGTH
    assert out.content == "Ok"
    # Ended by the stop token before its </tool_call>: malformed, kept as text.
    ended = parse_output(raw + "<|im_end|>")
    assert ended.tool_calls == ()
    assert ended.content == raw
    assert ended.malformed_calls == (raw[3:],)
    assert ended.stop_sequence == "<|im_end|>"


def test_unknown_tools_listed() -> None:
    out = parse_output(call_block("launch", {}), tools=[WEATHER])
    assert out.unknown_tools == ("launch",)
    assert parse_output(call_block("launch", {})).unknown_tools == ()


def test_text_after_stop_token_is_not_part_of_the_turn() -> None:
    out = parse_output("Hello<|im_end|>\n<|im_start|>user\nmore")
    assert out.content == "Hello"
    assert out.stop_sequence == "<|im_end|>"


def test_markup_like_text_stays_text() -> None:
    out = parse_output("a < b and <tool or <thinking> <|im_start|>")
    assert out.content == "a < b and <tool or <thinking> <|im_start|>"


# -- streaming == whole parse -------------------------------------------------------------

pieces = st.sampled_from(
    [
        "<think>",
        "</think>",
        "\n",
        " ",
        "Hello",
        "é 日本",
        "<",
        "<tool",
        "<|im_end|>",
        "</tool_call>",
        call_block("get_weather", {"city": "Paris"}),
        call_block("x", {"a": [1, {"b": "</tool_"}]}),
        "<tool_call>\n{bad}\n</tool_call>",
        "<tool_call>\n",
        '{"name": "f", "arguments": {}}',
    ]
)
outputs = st.lists(st.one_of(pieces, st.text(max_size=8)), max_size=12).map("".join)


def _chunks(raw: str, sizes: list[int]) -> list[int]:
    return [max(1, s) for s in sizes]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=outputs, sizes=st.lists(st.integers(1, 9), max_size=40), truncated=st.booleans())
def test_streaming_equals_whole_parse(raw: str, sizes: list[int], truncated: bool) -> None:
    whole = parse_output(raw, tools=[WEATHER], truncated=truncated, ids=sequential_ids())
    for split in ([1] * len(raw), _chunks(raw, sizes), [len(raw)]):
        events, out = stream(raw, split, truncated=truncated)
        assert out == whole
        assert text_of(events) == whole.content
        assert reasoning_of(events) == (whole.reasoning or "")
        assert [e.call for e in events if isinstance(e, ToolCallDone)] == list(whole.tool_calls)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(raw=outputs, n=st.integers(1, 5))
def test_streaming_by_tokens(qwen_vocab: Path, raw: str, n: int) -> None:
    """Fed N tokens at a time (each token's text, as an engine detokenizes), the same."""
    tok = Qwen(vocab=qwen_vocab).tokenizer
    assert tok is not None
    ids = tok.encode(raw)
    texts: list[str] = []
    for i in range(0, len(ids), n):
        texts.append(tok.decode(ids[i : i + n]))
    joined = "".join(texts)
    whole = parse_output(joined, ids=sequential_ids())
    parser = QwenStreamParser(None, ids=sequential_ids())
    for t in texts:
        parser.feed(t)
    parser.finish()
    assert parser.result() == whole


# -- round trip: a parsed message renders back as the model wrote it ----------------------


def test_round_trip_history() -> None:
    fmt = Qwen()
    raw = "<think>\nWeather needed.\n</think>\n\nChecking.\n" + call_block(
        "get_weather", {"city": "Paris"}
    )
    message = fmt.parse(raw + "<|im_end|>").message()
    call = message.tool_calls[0]
    request = ChatRequest((user("Weather?"), message, tool_result(call, "sunny")))
    text = fmt.render(request).text
    assert (raw + "<|im_end|>\n") in text
    # After a new user turn the old reasoning is dropped, as the template does.
    later = ChatRequest(
        (user("Weather?"), message, tool_result(call, "sunny"), assistant("Sunny."), user("Thanks"))
    )
    assert "Weather needed." not in fmt.render(later).text


def test_no_thinking_prompt() -> None:
    fmt = formats.get("qwen3-no-thinking")
    assert fmt.render(ChatRequest((user("hi"),))).text.endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


# -- detection and the registry -----------------------------------------------------------


@pytest.mark.parametrize(
    ("info", "name"),
    [
        (ModelInfo(architecture="qwen3"), "qwen3"),
        (ModelInfo(architecture="qwen3moe"), "qwen3"),
        (ModelInfo(architecture="qwen2"), "qwen2.5"),
        (ModelInfo(model_id="Qwen/Qwen3-8B"), "qwen3"),
        (ModelInfo(model_id="qwen3:0.6b"), "qwen3"),
        (ModelInfo(model_id="Qwen/Qwen2.5-7B-Instruct"), "qwen2.5"),
        (ModelInfo(model_id="meta-llama/Llama-3.1-8B-Instruct"), "llama3.1-meta"),
        (ModelInfo(model_id="mystery"), None),
    ],
)
def test_detect(info: ModelInfo, name: str | None) -> None:
    found = formats.detect(info)
    assert (found.name if found is not None else None) == name


def test_detect_from_vocabulary_and_template() -> None:
    vocab = {"<|im_start|>": 151644, "<|im_end|>": 151645}
    info = ModelInfo(
        name="some-finetune",
        chat_template="{{ '<|im_start|>' }} <tool_call> <think>",
        control_token=vocab.get,
    )
    found = formats.detect(info)
    assert found is not None
    assert found.name == "qwen3"
    empty: dict[str, int] = {}
    assert formats.detect(ModelInfo(name="qwen3-x", control_token=empty.get)) is None


def test_is_a_prompt_format() -> None:
    fmt = formats.get("qwen3")
    assert isinstance(fmt, PromptFormat)
    assert fmt.stop_sequences == ("<|im_end|>", "<|endoftext|>")
    assert formats.family("qwen2.5") == "chatlane.formats.qwen3"


def test_grammar_forces_a_call_in_qwens_syntax() -> None:
    request = ChatRequest((user("x"),), tools=(WEATHER,), tool_choice="get_weather")
    grammar = formats.get("qwen3").grammar(request)
    assert grammar is not None
    assert grammar.is_call
    # The call tags are Qwen's added tokens, by id (the engine test runs it).
    assert '<[151657]> "\\n" %json' in grammar.lark
    assert '"\\n" <[151658]>' in grammar.lark
    assert '"name": {"const": "get_weather"}' in grammar.lark
    assert grammar.end_sequences == ("<|im_end|>",)
    assert formats.get("qwen3").grammar(ChatRequest((user("x"),))) is None


# -- the CLI --------------------------------------------------------------------------------


def test_cli_render_and_parse(tmp_path: Path) -> None:
    cli = CLI(tmp_path)
    conversation = {
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [
            {
                "type": "function",
                "function": {"name": "get_weather", "parameters": WEATHER.parameters},
            }
        ],
    }
    (tmp_path / "conv.json").write_text(json.dumps(conversation))
    shown = cli.ok("render", "conv.json", "--format", "qwen3")
    from chatlane.wire.openai import decode_request

    assert shown == Qwen().render_text(decode_request(conversation))
    raw = "<think>hm</think>" + call_block("get_weather", {"city": "Paris"}) + "<|im_end|>"
    (tmp_path / "out.txt").write_text(raw)
    body = json.loads(cli.ok("parse", "out.txt", "--format", "qwen3"))
    assert body["reasoning"] == "hm"
    assert body["content"] == ""
    assert body["tool_calls"][0]["arguments"] == {"city": "Paris"}
    assert body["finish_reason"] == "tool_calls"


def test_vocabulary_from_a_tokenizer_json(qwen_vocab: Path, tmp_path: Path) -> None:
    """A Hugging Face tokenizer.json serves as well as a GGUF (its vocab has the same
    byte-level spelling)."""
    import gguf

    reader = gguf.GGUFReader(str(qwen_vocab))
    field = reader.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(field.parts[i]).decode() for i in field.data]
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"model": {"vocab": {t: i for i, t in enumerate(tokens[:151643])}}}))
    from_json = Qwen(vocab=path).tokenizer
    from_gguf = Qwen(vocab=qwen_vocab).tokenizer
    assert from_json is not None
    assert from_gguf is not None
    text = "Hello wörld 123 日本語\n\n  x"
    assert from_json.encode(text) == from_gguf.encode(text)


def test_a_file_that_is_no_vocabulary_is_named(tmp_path: Path) -> None:
    from chatlane.formats.qwen3.tokenizer import TokenizerNotFound

    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a model")
    with pytest.raises(TokenizerNotFound, match=r"x\.gguf"):
        _ = Qwen(vocab=bad).tokenizer
