"""``chatlane render`` and ``chatlane parse``: the format's exact prompt and parse, from files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chatlane.formats.llama3 import Llama3
from chatlane.wire.openai import decode_request
from test_cli import CLI, assert_one_line_error

CONVERSATION: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Paris? <|eot_id|> is just text here"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ],
}


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    c = CLI(tmp_path)
    (tmp_path / "conv.json").write_text(json.dumps(CONVERSATION))
    return c


@pytest.mark.parametrize(
    ("options", "fmt"),
    [
        (["--date", "2026-11-21"], Llama3("3.1", date="2026-11-21")),
        (
            ["--format", "llama3.3", "--profile", "hf", "--date", "21 Nov 2026"],
            Llama3("3.3", "hf", date="21 Nov 2026"),
        ),
        (
            ["--format", "llama3.2", "--tool-format", "pythonic", "--date", "2026-01-02"],
            Llama3("3.2", tool_format="pythonic", date="2026-01-02"),
        ),
    ],
)
def test_render_prints_the_exact_prompt(cli: CLI, options: list[str], fmt: Llama3) -> None:
    expected = fmt.render(decode_request(CONVERSATION))
    body = json.loads(cli.ok("render", "conv.json", "--json", *options))
    assert body == {
        "text": expected.text,
        "tokens": list(expected.tokens),
        "count": len(expected.tokens),
    }


def test_render_text_and_tokens(cli: CLI) -> None:
    expected = Llama3("3.1", date="2026-11-21").render(decode_request(CONVERSATION))
    assert cli.ok("render", "conv.json", "--date", "2026-11-21") == expected.text
    tokens = cli.ok("render", "conv.json", "--tokens", "--date", "2026-11-21").splitlines()
    assert [int(t) for t in tokens[0].split()] == list(expected.tokens)
    assert tokens[1] == f"{len(expected.tokens)} tokens"


def test_user_text_never_becomes_a_control_token(cli: CLI) -> None:
    body = json.loads(cli.ok("render", "conv.json", "--json", "--date", "2026-11-21"))
    assert body["tokens"].count(128009) == body["text"].count("<|eot_id|>") - 1


def test_render_reads_stdin_and_a_bare_message_list(cli: CLI) -> None:
    messages = json.dumps([{"role": "user", "content": "hi"}])
    out = cli.ok("render", "-", "--profile", "hf", "--date", "2026-11-21", input=messages)
    assert out.endswith(
        "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_render_errors(cli: CLI) -> None:
    (cli.home / "bad.json").write_text("{")
    (cli.home / "wrong.json").write_text(
        json.dumps({"messages": [{"role": "wizard", "content": "x"}]})
    )
    assert_one_line_error(cli("render", "bad.json"), 2, "'bad.json' is not valid JSON")
    assert_one_line_error(cli("render", "missing.json"), 2, "no such file: 'missing.json'")
    assert_one_line_error(cli("render", "wrong.json"), 1, "'wizard' is not a role")
    assert_one_line_error(
        cli("render", "conv.json", "--format", "gpt9"), 2, "unknown format 'gpt9'"
    )
    assert_one_line_error(
        cli("render", "conv.json", "--profile", "hf", "--tool-format", "pythonic"),
        1,
        "JSON tool calling only",
    )


def test_parse_reads_content_and_tool_calls(cli: CLI) -> None:
    (cli.home / "raw.txt").write_text(
        'Let me check. {"name": "get_weather", "parameters": {"city": "Paris"}}<|eom_id|>'
    )
    body = json.loads(cli.ok("parse", "raw.txt", "--request", "conv.json"))
    [call] = body["tool_calls"]
    assert (call["name"], call["arguments"], call["error"]) == (
        "get_weather",
        {"city": "Paris"},
        None,
    )
    assert body["finish_reason"] == "tool_calls"
    assert body["stop_sequence"] == "<|eom_id|>"
    assert body["unknown_tools"] == []


def test_parse_plain_text_and_cut_off_calls(cli: CLI) -> None:
    body = json.loads(cli.ok("parse", "-", input="Paris is sunny.<|eot_id|>"))
    assert body["content"] == "Paris is sunny."
    assert body["tool_calls"] == []
    assert body["finish_reason"] == "stop"
    # Output that ends without a stop token inside what might have been a call is kept as text.
    cut = json.loads(
        cli.ok("parse", "-", input='<|python_tag|>{"name": "get_weather", "parameters": {"ci')
    )
    assert cut["tool_calls"] == []
    assert cut["content"] == '{"name": "get_weather", "parameters": {"ci'
