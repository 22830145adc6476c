"""Reading gpt-oss (harmony) output: channels, reasoning and calls, whole or streamed.

The model's turn is a run of messages, each a header and a body::

    <|channel|>analysis<|message|>The user wants the weather.<|end|>
    <|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>

or ``...<|channel|>final<|message|>It is sunny.<|return|>``. What each body is:

- with a recipient (``to=functions.NAME`` anywhere in the header, on any channel: some
  models put it on ``analysis``): a tool call, reported when its ``<|call|>`` (or ``<|end|>``)
  arrives. A body that is not a JSON object is kept as text and listed in
  `ParsedOutput.malformed_calls`; one cut off by the token limit is `partial_call`.
- on ``analysis``: reasoning (`ReasoningDelta`), never content;
- on ``final``, ``commentary`` (a preamble) or none: content (`TextDelta`).

Header markup never reaches the content: only bodies do, and control tokens inside a body
are dropped. ``<|return|>`` and ``<|call|>`` end the turn (``stop_sequence``). Text that
never gets a header (a model ignoring the format) is content once it is longer than any
header. Messages of one kind are joined with a blank line.

One incremental parser does the whole parse too, so streaming in any pieces gives the
whole parse; only a possible control-token prefix (at most 20 characters) or a header is
held back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from chatlane.events import (
    ChatEvent,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStarted,
)
from chatlane.formats._scanner import ScanningParser, parse_whole, random_call_id, sequential_ids
from chatlane.formats.base import ParsedOutput
from chatlane.formats.harmony.tokenizer import SPECIAL_TOKENS
from chatlane.messages import ToolCall
from chatlane.tools import Tool

__all__ = [
    "STOP_TOKENS",
    "HarmonyStreamParser",
    "bench_outputs",
    "parse_output",
    "random_call_id",
    "sequential_ids",
]

STOP_TOKENS = ("<|return|>", "<|call|>")
_CONTROL = re.compile(r"<\|[a-z0-9_]+\|>")
_CONTROL_PREFIX = re.compile(r"<(?:\|[a-z0-9_]*\|?)?$")
_MAX_CONTROL = 24
_MAX_HEADER = 256
_RECIPIENT = re.compile(r"\bto=([^\s<]+)")
_CHANNEL = re.compile(r"<\|channel\|>\s*([^\s<]+)")


class _Stream:
    __slots__ = ("parts", "sep")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.sep = ""


class HarmonyStreamParser(ScanningParser):
    """Raw gpt-oss output in, `ChatEvent`s out (the `StreamParser` protocol); see the module.

    Args:
        tools: the offered tools (calls to others are listed in ``unknown_tools``), or None
            when they are not known.
        ids: where call ids come from (default `random_call_id`).
    """

    def __init__(
        self, tools: Sequence[Tool] | None = None, *, ids: Callable[[], str] | None = None
    ) -> None:
        super().__init__(ids)
        self._tools = {t.name for t in tools or ()}
        self._offered_known = tools is not None
        self._text = _Stream()
        self._reasoning = _Stream()
        self._in_body = False
        self._header: list[str] = []
        self._header_len = 0
        self._header_checked = False
        self._target: _Stream | None = None  # the body's stream, or None for a call
        self._call_name = ""
        self._call_header = ""
        self._body: list[str] = []
        self._held = ""

    def _content(self) -> str:
        return "".join(self._text.parts)

    def _reasoning_text(self) -> str:
        return "".join(self._reasoning.parts)

    # -- the scanner ----------------------------------------------------------------------

    def _run(self, text: str, events: list[ChatEvent]) -> None:
        s = self._held + text if self._held else text
        self._held = ""
        i, n = 0, len(s)
        while i < n and not self._ended:
            j = s.find("<", i)
            if j < 0:
                self._plain(s[i:], events)
                return
            if j > i:
                self._plain(s[i:j], events)
                if self._ended:
                    return
            m = _CONTROL.match(s, j)
            if m is not None and m.group() in SPECIAL_TOKENS:
                self._control(m.group(), events)
                i = m.end()
                continue
            rest = s[j : j + _MAX_CONTROL]
            if len(rest) == n - j and _CONTROL_PREFIX.match(rest):
                self._held = rest
                return
            self._plain("<", events)
            i = j + 1

    def _plain(self, text: str, events: list[ChatEvent]) -> None:
        if self._in_body:
            if self._target is None:
                self._body.append(text)
            else:
                self._out(self._target, text, events)
            return
        self._header.append(text)
        self._header_len += len(text)
        if self._header_len > _MAX_HEADER and not self._header_checked:
            # Decided once, on the header's first characters, so that any split of the
            # output decides alike.
            self._header_checked = True
            header = "".join(self._header)
            first = header[: _MAX_HEADER + 1]
            if "<|" not in first and "to=" not in first:
                # No header is this long: the model wrote plain text.
                self._header, self._header_len, self._header_checked = [], 0, False
                self._in_body, self._target = True, self._text
                self._text.sep = "\n\n" if self._text.parts else ""
                self._out(self._text, header, events)

    def _out(self, stream: _Stream, text: str, events: list[ChatEvent]) -> None:
        if not text:
            return
        if stream.sep:
            text, stream.sep = stream.sep + text, ""
        stream.parts.append(text)
        events.append(ReasoningDelta(text) if stream is self._reasoning else TextDelta(text))

    def _control(self, token: str, events: list[ChatEvent]) -> None:
        if not self._in_body:
            if token == "<|message|>":
                self._start_body("".join(self._header))
            elif token == "<|start|>":
                self._header, self._header_len, self._header_checked = [], 0, False
            elif token in STOP_TOKENS or token == "<|end|>":
                self._header, self._header_len, self._header_checked = [], 0, False
                if token in STOP_TOKENS:
                    self._stop_seen = token
                    self._end(False, events)
            else:
                self._header.append(token)
            return
        if token in ("<|end|>", "<|start|>", *STOP_TOKENS):
            self._end_body(events)
            if token in STOP_TOKENS:
                self._stop_seen = token
                self._end(False, events)
        # Any other control token inside a body is markup, never content.

    def _start_body(self, header: str) -> None:
        self._header, self._header_len, self._header_checked = [], 0, False
        self._in_body = True
        recipient = _RECIPIENT.search(header)
        target = recipient.group(1) if recipient else None
        if target is not None and target not in ("assistant", "all", "user"):
            self._target = None
            self._call_name = target.removeprefix("functions.")
            self._call_header = header
            self._body = []
            return
        channel = _CHANNEL.search(header)
        stream = self._reasoning if channel and channel.group(1) == "analysis" else self._text
        stream.sep = "\n\n" if stream.parts else ""
        self._target = stream

    def _end_body(self, events: list[ChatEvent]) -> None:
        self._in_body = False
        if self._target is not None:
            self._target.sep = ""
            self._target = None
            return
        body = "".join(self._body)
        self._body = []
        self._call(body, events)

    def _call(self, body: str, events: list[ChatEvent]) -> None:
        raw = body.strip()
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict) or not self._call_name:
            self._malformed.append(self._call_header + "<|message|>" + body)
            self._text.sep = "\n\n" if self._text.parts else ""
            self._out(self._text, body, events)
            self._text.sep = ""
            return
        name = self._call_name
        call = ToolCall.from_raw(self._ids(), name, raw)
        index = len(self._calls)
        self._calls.append(call)
        if self._offered_known and name not in self._tools and name not in self._unknown:
            self._unknown.append(name)
        events.append(ToolCallStarted(index, call.id, name))
        events.append(ToolCallDelta(index, raw))
        events.append(ToolCallDone(index, call))

    def _end(self, truncated: bool, events: list[ChatEvent]) -> None:
        self._ended = True
        held, self._held = self._held, ""
        if held:
            self._plain(held, events)
        if self._in_body and self._target is None:
            raw = self._call_header + "<|message|>" + "".join(self._body)
            if truncated:
                self._partial = raw
                self._in_body = False
                return
            self._end_body(events)
        elif not self._in_body:
            header = "".join(self._header)
            self._header = []
            if header.strip() and "<|" not in header and "to=" not in header:
                self._text.sep = "\n\n" if self._text.parts else ""
                self._out(self._text, header, events)
            elif truncated and "to=" in header:
                self._partial = header


def parse_output(
    raw: str,
    *,
    tools: Sequence[Tool] | None = None,
    stop_sequence: str | None = None,
    truncated: bool = False,
    ids: Callable[[], str] | None = None,
) -> ParsedOutput:
    """Read a whole raw gpt-oss output: reasoning, text, tool calls and how it ended."""
    return parse_whole(HarmonyStreamParser(tools, ids=ids), raw, stop_sequence, truncated)


def bench_outputs() -> dict[str, Callable[[int], str]]:
    """Outputs of a given length in characters, for bench/bench_stream_families.py."""
    unit = "Paris is the capital of France; a < b and <| are not markup. "

    def fill(size: int) -> str:
        return (unit * (size // len(unit) + 1))[:size]

    def analysis(size: int) -> str:
        return (
            "<|channel|>analysis<|message|>"
            + fill(size - 60)
            + "<|end|><|start|>assistant<|channel|>final<|message|>Ok.<|return|>"
        )

    def final(size: int) -> str:
        return "<|channel|>final<|message|>" + fill(size - 40) + "<|return|>"

    def call(size: int) -> str:
        head = '<|channel|>commentary to=functions.write <|constrain|>json<|message|>{"content": "'
        return head + fill(size - len(head) - 10).replace('"', "'") + '"}<|call|>'

    return {"analysis": analysis, "final": final, "one long call": call}
