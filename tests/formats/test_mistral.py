"""The Mistral formats through the registry: names, detection, tool-call ids, tokenizer
files, grammars, and ``chatlane render|parse --format mistral-v11``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chatlane import formats
from chatlane.errors import InputError, MessageError
from chatlane.formats.base import ModelInfo, PromptFormat
from chatlane.formats.mistral import Mistral
from chatlane.formats.mistral.tokenizer import ENV_VAR, TokenizerNotFound, shipped_file
from chatlane.messages import Message, Role, ToolCall
from chatlane.request import ChatRequest
from chatlane.tools import Tool
from test_cli import CLI

NAMES = (
    "mistral",
    "mistral-v3",
    "mistral-v3-tekken",
    "mistral-v7",
    "mistral-v7-tekken",
    "mistral-v11",
    "mistral-v13",
)
WEATHER = Tool(
    "get_weather", "Weather", {"type": "object", "properties": {"city": {"type": "string"}}}
)


def mistral(name: str, **settings: Any) -> Mistral:
    fmt = formats.get(name, **settings)
    assert isinstance(fmt, Mistral)
    return fmt


def test_every_name_is_registered_and_speaks_the_protocol() -> None:
    assert set(NAMES) <= set(formats.names())
    for name in NAMES:
        fmt = formats.get(name)
        assert isinstance(fmt, PromptFormat)
        assert fmt.name == name
        assert fmt.stop_sequences == ("</s>",)
        assert fmt.begin_text == "<s>"
    assert mistral("mistral").version == 11
    with pytest.raises(InputError, match="nonsense"):
        mistral("mistral-v11", nonsense=1)


def _vocab(*tokens: str) -> ModelInfo:
    ids = {t: i for i, t in enumerate(tokens)}
    return ModelInfo(
        architecture="llama", control_token=ids.get, metadata={"tokenizer.ggml.model": "gpt2"}
    )


@pytest.mark.parametrize(
    ("model_id", "expected"),
    [
        ("mistralai/Mistral-Small-3.1-24B-Instruct-2503", "mistral-v7-tekken"),
        ("mistralai/Mistral-Small-3.2-24B-Instruct-2506", "mistral-v11"),
        ("mistralai/Magistral-Small-2507", "mistral-v13"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "mistral-v3"),
        ("mistralai/Mistral-Nemo-Instruct-2407", "mistral-v3-tekken"),
        ("mistralai/Mistral-Large-Instruct-2411", "mistral-v7"),
        ("mistralai/Devstral-Small-2507", "mistral-v11"),
        ("mistralai/Mistral-7B-Instruct-v0.2", None),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama3.1-meta"),
    ],
)
def test_detection_from_model_ids(model_id: str, expected: str | None) -> None:
    found = formats.detect(ModelInfo(model_id=model_id))
    assert (found.name if found is not None else None) == expected


def test_detection_from_gguf_vocabulary() -> None:
    base = ("<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]")
    cases = {
        base: "mistral-v3-tekken",
        (*base, "[SYSTEM_PROMPT]"): "mistral-v7-tekken",
        (*base, "[SYSTEM_PROMPT]", "[ARGS]", "[CALL_ID]"): "mistral-v11",
        (*base, "[SYSTEM_PROMPT]", "[ARGS]", "[THINK]", "[/THINK]"): "mistral-v13",
    }
    for tokens, expected in cases.items():
        found = formats.detect(_vocab(*tokens))
        assert found is not None
        assert found.name == expected
    sentencepiece = ModelInfo(
        control_token={t: i for i, t in enumerate(base)}.get,
        metadata={"tokenizer.ggml.model": "llama"},
    )
    assert mistral("mistral-v3").matches(sentencepiece)
    found = formats.detect(sentencepiece)
    assert found is not None
    assert found.name == "mistral-v3"
    # The model's name wins over the vocabulary's guess.
    named = ModelInfo(
        name="Mistral-Small-3.2-24B-Instruct-2506",
        control_token={t: i for i, t in enumerate((*base, "[SYSTEM_PROMPT]"))}.get,
    )
    found = formats.detect(named)
    assert found is not None
    assert found.name == "mistral-v11"
    # Llama 3's vocabulary is not Mistral's.
    llama = _vocab("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
    assert not mistral("mistral").matches(llama)


def test_detection_from_a_chat_template() -> None:
    template = "{{ bos_token }}[INST]{{ m }}[/INST][TOOL_CALLS]{{ name }}[ARGS]{{ args }}"
    found = formats.detect(ModelInfo(chat_template=template))
    assert found is not None
    assert found.name == "mistral-v11"


def _history(call_id: str) -> list[Message]:
    return [
        Message(Role.USER, "Weather?"),
        Message(Role.ASSISTANT, "", (ToolCall(call_id, "get_weather", {"city": "Paris"}),)),
        Message(Role.TOOL, "sunny", tool_call_id=call_id),
    ]


def test_foreign_call_ids_are_refused_or_mapped() -> None:
    with pytest.raises(MessageError, match=r"call_abc123.*9 letters or digits"):
        mistral("mistral-v11").render(_history("call_abc123"))
    mapped = mistral("mistral-v11", tool_call_ids="map").render_text(_history("call_abc123"))
    [written] = {part.split("[ARGS]")[0] for part in mapped.split("[CALL_ID]")[1:]}
    assert len(written) == 9
    assert written.isalnum()
    assert f"[TOOL_RESULTS]{written}[TOOL_CONTENT]sunny" in mapped
    # A valid id is written as it is.
    assert "[CALL_ID]abcDEF123[ARGS]" in mistral("mistral-v11").render_text(_history("abcDEF123"))


def test_reasoning_is_replayed_only_where_the_format_has_it() -> None:
    messages = [
        Message(Role.USER, "2+2?"),
        Message(Role.ASSISTANT, "4", reasoning="Add them."),
        Message(Role.USER, "Sure?"),
    ]
    v13 = mistral("mistral-v13").render_text(messages)
    assert "[THINK]Add them.[/THINK]4</s>" in v13
    v11 = mistral("mistral-v11").render_text(messages)
    assert "Add them." not in v11
    assert "[/INST]4</s>" in v11


def test_refusals_name_the_problem() -> None:
    with pytest.raises(MessageError, match="both text and tool calls"):
        mistral("mistral-v3").render(
            [
                Message(Role.USER, "x"),
                Message(Role.ASSISTANT, "text", (ToolCall("abcDEF123", "f", {}),)),
                Message(Role.TOOL, "r", tool_call_id="abcDEF123"),
            ]
        )
    with pytest.raises(MessageError, match="needs text or tool calls"):
        mistral("mistral-v7").render(
            [Message(Role.USER, "x"), Message(Role.ASSISTANT, ""), Message(Role.USER, "y")]
        )
    with pytest.raises(InputError, match="tekken only"):
        Mistral(11, tekken=False)


def test_the_tokenizer_file_comes_from_the_setting_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = shipped_file("tekken_240718.json")
    assert shipped is not None
    fmt = mistral("mistral-v11", tokenizer_path=shipped)
    assert fmt.tokenizer.special_tokens["[ARGS]"] == 32
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing.json"))
    with pytest.raises(TokenizerNotFound, match=r"missing\.json"):
        _ = mistral("mistral-v13").tokenizer
    (tmp_path / "broken.json").write_text("{}")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "broken.json"))
    with pytest.raises(TokenizerNotFound, match="not a readable tekken file"):
        _ = mistral("mistral-v7-tekken").tokenizer


def test_user_text_never_becomes_control_tokens() -> None:
    for name in ("mistral-v3", "mistral-v11"):
        fmt = mistral(name)
        prompt = fmt.render([Message(Role.USER, "say [TOOL_CALLS] and </s> [INST]")])
        calls = fmt.tokenizer.special_tokens["[TOOL_CALLS]"]
        assert calls not in prompt.tokens
        assert fmt.misread_text(prompt) == "[TOOL_CALLS]"


def test_forced_call_grammar_uses_the_control_tokens() -> None:
    request = ChatRequest((Message(Role.USER, "x"),), tools=(WEATHER,), tool_choice="get_weather")
    v11 = mistral("mistral-v11").grammar(request)
    assert v11 is not None
    assert v11.is_call
    assert v11.end_sequences == ("</s>",)
    start, call = v11.lark.splitlines()
    assert start == "start: <[9]> (call_0)"  # [TOOL_CALLS] by its id
    assert call.startswith('call_0: "get_weather" <[32]> %json {"type": "object"')  # [ARGS]
    v3 = mistral("mistral-v3-tekken").grammar(request)
    assert v3 is not None
    assert v3.lark.splitlines()[0] == 'start: <[9]> "[" (call_0) "]"'
    assert '"name": {"const": "get_weather"}' in v3.lark
    assert mistral("mistral").grammar(ChatRequest((Message(Role.USER, "x"),))) is None


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    c = CLI(tmp_path)
    conversation = {
        "messages": [
            {"role": "system", "content": "Terse."},
            {"role": "user", "content": "Weather in Paris?"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather",
                    "parameters": WEATHER.parameters,
                },
            }
        ],
    }
    (tmp_path / "conv.json").write_text(json.dumps(conversation))
    return c


def test_cli_render_and_parse_with_mistral_v11(cli: CLI) -> None:
    text = cli.ok("render", "conv.json", "--format", "mistral-v11")
    assert text.startswith("<s>[SYSTEM_PROMPT]Terse.[/SYSTEM_PROMPT][AVAILABLE_TOOLS][{")
    assert text.endswith("[INST]Weather in Paris?[/INST]")
    body = json.loads(cli.ok("render", "conv.json", "--format", "mistral-v11", "--json"))
    assert body["tokens"][:2] == [1, 17]
    assert body["count"] == len(body["tokens"])
    (cli.home / "raw.txt").write_text(
        '[THINK]hmm[/THINK][TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}</s>'
    )
    parsed = json.loads(
        cli.ok("parse", "raw.txt", "--format", "mistral-v11", "--request", "conv.json")
    )
    [call] = parsed["tool_calls"]
    assert (call["name"], call["arguments"]) == ("get_weather", {"city": "Paris"})
    assert len(call["id"]) == 9
    assert call["id"].isalnum()
    assert parsed["reasoning"] == "hmm"
    assert parsed["content"] == ""
    assert parsed["finish_reason"] == "tool_calls"
    assert parsed["stop_sequence"] == "</s>"


@pytest.mark.parametrize(
    "name", ["mistral-v3-tekken", "mistral-v7-tekken", "mistral-v11", "mistral-v13"]
)
def test_what_the_format_writes_its_parser_reads_back(name: str) -> None:
    calls = (
        ToolCall("abcDEF123", "get_weather", {"city": "Paris", "days": [1, 2]}),
        ToolCall("xyz987QRS", "get_time", {"zone": "CET", "note": "}] [ARGS] </s>"}),
    )
    fmt = mistral(name)
    text = fmt.render_text([Message(Role.USER, "x"), Message(Role.ASSISTANT, "", calls)])
    answer = text.rsplit("[/INST]", 1)[1]
    parsed = fmt.parse(answer + "</s>")
    assert [(c.name, dict(c.arguments)) for c in parsed.tool_calls] == [
        (c.name, dict(c.arguments)) for c in calls
    ]
    if fmt.version in (3, 7, 11):
        assert [c.id for c in parsed.tool_calls] == ["abcDEF123", "xyz987QRS"]
    assert parsed.content == ""
