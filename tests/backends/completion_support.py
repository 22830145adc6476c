"""Test helpers for CompletionChat: the scripted server (tests/support) answering every
completion endpoint from one list of replies, and a small prompt format implementing the
`PromptFormat` protocol, so that the backend is tested against the protocol, not one format's
details."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chatlane.events import (
    ChatEvent,
    Finished,
    TextDelta,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStarted,
)
from chatlane.formats.base import FormatBase, ParsedOutput, Prompt
from chatlane.messages import ToolCall
from chatlane.request import ChatRequest
from chatlane.response import FinishReason
from support import Reply, ScriptedServer

# The scripted server (tests/support) answering every completion endpoint.

PATHS = {"openai": "/v1/completions", "llama.cpp": "/completion", "aleph-alpha": "/complete"}


@dataclass
class Got:
    path: str
    headers: dict[str, str]
    """Names in lower case."""
    body: Any
    query: dict[str, str]


class Harness:
    """The scripted server answering every completion endpoint from one list of replies."""

    def __init__(self, server: ScriptedServer) -> None:
        self.server = server
        self.script: list[Reply] = []
        for path in PATHS.values():
            server.route(path, self._next)

    def _next(self, request: Any) -> Reply:
        if not self.script:
            return Reply.error(500, "the test's script is used up")
        return self.script.pop(0)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def received(self) -> list[Got]:
        return [Got(r.path, r.headers, r.json(), r.query) for r in self.server.requests]

    def wait_for_disconnect(self) -> bool:
        return self.server.wait_for_disconnects(1, timeout=5)


# A small prompt format: Llama-like special tokens, whole-JSON tool calls.

SPECIALS = {
    "<|begin_of_text|>": 1000,
    "<|start_header_id|>": 1001,
    "<|end_header_id|>": 1002,
    "<|eot_id|>": 1003,
    "<|eom_id|>": 1004,
    "<|python_tag|>": 1005,
}
_NAMES = {v: k for k, v in SPECIALS.items()}


class TinyTokenizer:
    """Special tokens by id; every other character is its code point."""

    special_tokens = SPECIALS

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def special(self, name: str) -> int:
        return SPECIALS[name]

    def is_special(self, token: int) -> bool:
        return token in _NAMES

    def decode(self, tokens: Sequence[int]) -> str:
        return "".join(_NAMES.get(t) or chr(t) for t in tokens)


class TinyParser:
    """Text streams through; an output starting with ``{`` is held and read as one call."""

    def __init__(self, request: ChatRequest | None) -> None:
        self._buffer = ""
        self._mode: str | None = None
        self.fed: list[str] = []

    def feed(self, text: str) -> list[ChatEvent]:
        self.fed.append(text)
        if self._mode is None and text:
            self._mode = "call" if text.lstrip().startswith("{") else "text"
        if self._mode == "call":
            self._buffer += text
            return []
        return [TextDelta(text)] if text else []

    def finish(
        self, stop_sequence: str | None = None, *, truncated: bool = False
    ) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        reason = FinishReason.LENGTH if truncated else FinishReason.STOP
        if self._mode == "call":
            try:
                value = json.loads(self._buffer)
            except ValueError:
                value = None
            if isinstance(value, dict) and not truncated:
                args = json.dumps(value.get("parameters", {}))
                call = ToolCall.from_raw("call_1", str(value["name"]), args)
                events += [
                    ToolCallStarted(0, "call_1", call.name),
                    ToolCallDelta(0, args),
                    ToolCallDone(0, call),
                ]
                reason = FinishReason.TOOL_CALLS
            else:
                events.append(TextDelta(self._buffer))
        events.append(Finished(reason, stop_sequence=stop_sequence))
        return events


class TinyFormat(FormatBase):
    """Renders ``<|start_header_id|>role<|end_header_id|>\\n\\ntext<|eot_id|>`` turns."""

    name = "tiny"
    stop_sequences = ("<|eot_id|>", "<|eom_id|>")
    begin_text = "<|begin_of_text|>"
    control_spelling = re.compile(r"<\|[A-Za-z0-9_]+\|>")

    def __init__(self) -> None:
        self.tokenizer: TinyTokenizer = TinyTokenizer()
        self.parsers: list[TinyParser] = []

    def render(self, request: ChatRequest) -> Prompt:
        parts: list[tuple[str, bool]] = [("<|begin_of_text|>", True)]
        for m in request.messages:
            parts += [
                ("<|start_header_id|>", True),
                (m.role.value, False),
                ("<|end_header_id|>", True),
                ("\n\n" + m.text, False),
                ("<|eot_id|>", True),
            ]
        parts += [("<|start_header_id|>", True), ("assistant", False), ("<|end_header_id|>", True)]
        parts.append(("\n\n", False))
        tokens: list[int] = []
        for text, special in parts:
            tokens += [SPECIALS[text]] if special else self.tokenizer.encode(text)
        return Prompt("".join(t for t, _ in parts), tuple(tokens))

    def parse(
        self, raw: str, request: ChatRequest | None = None, *, stop_sequence: str | None = None
    ) -> ParsedOutput:
        raise NotImplementedError

    def stream_parser(self, request: ChatRequest | None = None) -> TinyParser:
        parser = TinyParser(request)
        self.parsers.append(parser)
        return parser
