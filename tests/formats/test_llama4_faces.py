"""Llama 4 through chatlane's faces: ``chatlane render|parse --format llama4`` and
``CompletionChat(..., format="llama4")`` against a real server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatlane.backends.completion import CompletionChat
from chatlane.formats.llama4 import Llama4
from chatlane.messages import user
from chatlane.request import ChatRequest
from chatlane.response import FinishReason
from chatlane.tools import Tool
from chatlane.wire.openai import decode_request
from support import Reply, ScriptedServer
from test_cli import CLI

CONVERSATION: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Paris? <|eot|> is just text here"},
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
WEATHER = Tool.from_schema(
    "get_weather",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "Current weather",
)


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    c = CLI(tmp_path)
    (tmp_path / "conv.json").write_text(json.dumps(CONVERSATION))
    return c


@pytest.mark.parametrize("profile", ["meta", "hf"])
def test_cli_render_prints_the_exact_llama4_prompt(cli: CLI, profile: str) -> None:
    expected = Llama4(profile).render(decode_request(CONVERSATION))  # type: ignore[arg-type]
    body = json.loads(
        cli.ok("render", "conv.json", "--json", "--format", "llama4", "--profile", profile)
    )
    assert body["text"] == expected.text
    assert body["tokens"] == list(expected.tokens)
    assert body["text"].endswith("<|header_start|>assistant<|header_end|>\n\n")


def test_cli_parse_reads_both_call_forms(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / "py.txt").write_text('[get_weather(city="Paris")]<|eom|>')
    (tmp_path / "json.txt").write_text(
        '<|python_start|>{"name": "get_weather", "parameters": {"city": "Paris"}}<|python_end|>'
    )
    for name, stop in (("py.txt", "<|eom|>"), ("json.txt", None)):
        body = json.loads(cli.ok("parse", name, "--format", "llama4"))
        assert [(c["name"], c["arguments"]) for c in body["tool_calls"]] == [
            ("get_weather", {"city": "Paris"})
        ]
        assert body["content"] == ""
        assert body["stop_sequence"] == stop
        assert body["finish_reason"] == "tool_calls"


class Completions:
    """A real HTTP server on 127.0.0.1 answering /v1/completions from a script."""

    def __init__(self, server: ScriptedServer) -> None:
        self.server = server
        self.script: list[Reply] = []
        server.route("/v1/completions", lambda request: self.script.pop(0))

    @property
    def url(self) -> str:
        return self.server.url

    def prompts(self) -> list[str]:
        return [str(r.json()["prompt"]) for r in self.server.requests]


@pytest.fixture
def server() -> Iterator[Completions]:
    with ScriptedServer() as s:
        yield Completions(s)


@pytest.mark.parametrize("stream", [False, True])
def test_completion_chat_with_the_llama4_format(server: Completions, stream: bool) -> None:
    raw = '[get_weather(city="Paris")]'
    if stream:
        chunks = [{"choices": [{"index": 0, "text": p, "finish_reason": None}]} for p in raw]
        chunks.append({"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]})
        server.script.append(Reply.sse(chunks))
    else:
        server.script.append(Reply.json({"choices": [{"text": raw, "finish_reason": "stop"}]}))
    request = ChatRequest((user("Weather in Paris?"),), tools=(WEATHER,))
    with CompletionChat(server.url + "/v1", format="llama4") as chat:
        response = chat.stream(request).response if stream else chat.chat(request)
    (sent,) = server.prompts()
    # the server adds <|begin_of_text|> itself (chatlane strips it from the text it sends)
    assert "<|begin_of_text|>" + sent == Llama4().render(request).text
    (call,) = response.tool_calls
    assert (call.name, dict(call.arguments)) == ("get_weather", {"city": "Paris"})
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.text == ""
