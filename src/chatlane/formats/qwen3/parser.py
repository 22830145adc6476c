"""Reading Qwen raw output: reasoning, text and Hermes-style tool calls, whole or streamed.

The output is ``<think>\\n...\\n</think>\\n\\n`` (Qwen 3 with thinking on), text, and calls,
one block each::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

One incremental parser does both jobs (`parse_output` feeds it the whole text), so a
streamed answer adds up to what the whole parse gives, for any split of the text.

- Reasoning (inside ``<think>``...``</think>``) is reported as `ReasoningDelta`, never as
  text. A call written inside the reasoning is still a call.
- A call is reported once its ``</tool_call>`` arrives. A block that does not hold a JSON
  object with a string ``name`` (and ``arguments`` or ``parameters``) is kept as text where
  it stood and listed in `ParsedOutput.malformed_calls`; the stream goes on. A block cut
  off by the token limit becomes `ParsedOutput.partial_call`, never a call.
- ``<|im_end|>`` or ``<|endoftext|>`` in the text ends the turn (its ``stop_sequence``).
- Text and reasoning have no leading or trailing whitespace: whitespace is held back until
  more text follows (the separators around calls go).

Feeding costs time linear in the text: only a possible marker prefix (at most a dozen
characters) is held back in text, and a call's body is searched for its end only in the
new piece.
"""

from __future__ import annotations

import json
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
from chatlane.messages import ToolCall
from chatlane.tools import Tool

__all__ = [
    "CALL_CLOSE",
    "CALL_OPEN",
    "STOP_TOKENS",
    "THINK_CLOSE",
    "THINK_OPEN",
    "QwenStreamParser",
    "parse_output",
    "random_call_id",
    "sequential_ids",
]

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")

_TEXT_MARKERS = (THINK_OPEN, CALL_OPEN, *STOP_TOKENS)
_REASONING_MARKERS = (THINK_CLOSE, CALL_OPEN, *STOP_TOKENS)
_BODY_ENDS = (CALL_CLOSE, *STOP_TOKENS)
_LONGEST_END = max(len(m) for m in _BODY_ENDS)


def read_call(body: str) -> tuple[str, str] | None:
    """The name and raw arguments of a call block's body, or None if it is not a call."""
    try:
        value: Any = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    name = value.get("name")
    if not isinstance(name, str) or not name:
        return None
    args = value.get("arguments", value.get("parameters", {}))
    if isinstance(args, str):
        return name, args
    if isinstance(args, dict):
        return name, json.dumps(args, ensure_ascii=False)
    return None


class _Channel:
    """One stream of text (the answer or the reasoning), trimmed as it goes out."""

    __slots__ = ("parts", "pending", "started")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pending = ""
        self.started = False

    def take(self, text: str) -> str:
        """The part of ``text`` that can go out now (whitespace waits for more text)."""
        if not self.started:
            text = text.lstrip()
            if not text:
                return ""
            self.started = True
        core = text.rstrip()
        if not core:
            self.pending += text
            return ""
        out = self.pending + core
        self.pending = text[len(core) :]
        self.parts.append(out)
        return out


class QwenStreamParser(ScanningParser):
    """Raw Qwen output in, `ChatEvent`s out (the `StreamParser` protocol); see the module.

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
        self._text = _Channel()
        self._reasoning = _Channel()
        self._thinking = False
        self._held = ""  # a possible marker prefix, in text or reasoning
        self._in_call = False
        self._body: list[str] = []
        self._tail = ""  # the body's last characters, where an end marker may begin

    def _content(self) -> str:
        return "".join(self._text.parts)

    def _reasoning_text(self) -> str:
        return "".join(self._reasoning.parts)

    # -- the scanner ----------------------------------------------------------------------

    def _emit(self, text: str, events: list[ChatEvent]) -> None:
        if self._thinking:
            out = self._reasoning.take(text)
            if out:
                events.append(ReasoningDelta(out))
        else:
            out = self._text.take(text)
            if out:
                events.append(TextDelta(out))

    def _run(self, text: str, events: list[ChatEvent]) -> None:
        s = self._held + text if self._held else text
        self._held = ""
        i, n = 0, len(s)
        while i < n and not self._ended:
            if self._in_call:
                i = self._step_body(s, i, events)
                continue
            j = s.find("<", i)
            if j < 0:
                self._emit(s[i:], events)
                return
            if j > i:
                self._emit(s[i:j], events)
            markers = _REASONING_MARKERS if self._thinking else _TEXT_MARKERS
            for marker in markers:
                if s.startswith(marker, j):
                    i = j + len(marker)
                    self._marker(marker, events)
                    break
            else:
                rest = s[j:]
                if len(rest) < _LONGEST_END and any(m.startswith(rest) for m in markers):
                    self._held = rest
                    return
                self._emit("<", events)
                i = j + 1

    def _marker(self, marker: str, events: list[ChatEvent]) -> None:
        if marker == THINK_OPEN:
            self._thinking = True
        elif marker == THINK_CLOSE:
            self._thinking = False
        elif marker == CALL_OPEN:
            self._in_call = True
            self._body = []
            self._tail = ""
        else:
            self._stop_seen = marker
            self._end(False, events)

    def _step_body(self, s: str, i: int, events: list[ChatEvent]) -> int:
        piece = s[i:]
        window = self._tail + piece
        found, at = None, -1
        for marker in _BODY_ENDS:
            k = window.find(marker)
            if k >= 0 and (at < 0 or k < at):
                found, at = marker, k
        if found is None:
            self._body.append(piece)
            self._tail = window[-(_LONGEST_END - 1) :]
            return len(s)
        # The end marker starts at ``at`` in the window, which begins len(tail) before piece.
        cut = at - len(self._tail)
        body = "".join(self._body)
        body = body[: len(body) + cut] if cut < 0 else body + piece[:cut]
        self._in_call = False
        self._body, self._tail = [], ""
        if found == CALL_CLOSE:
            self._call(body, events)
        else:
            self._malformed_block(CALL_OPEN + body, events)
            self._stop_seen = found
            self._end(False, events)
        return i + cut + len(found)

    def _call(self, body: str, events: list[ChatEvent]) -> None:
        read = read_call(body.strip())
        if read is None:
            self._malformed_block(CALL_OPEN + body + CALL_CLOSE, events)
            return
        name, raw = read
        call = ToolCall.from_raw(self._ids(), name, raw)
        index = len(self._calls)
        self._calls.append(call)
        if self._offered_known and name not in self._tools and name not in self._unknown:
            self._unknown.append(name)
        events.append(ToolCallStarted(index, call.id, name))
        events.append(ToolCallDelta(index, raw))
        events.append(ToolCallDone(index, call))

    def _malformed_block(self, raw: str, events: list[ChatEvent]) -> None:
        self._malformed.append(raw)
        self._emit(raw, events)

    def _end(self, truncated: bool, events: list[ChatEvent]) -> None:
        self._ended = True
        if self._in_call:
            raw = CALL_OPEN + "".join(self._body)
            self._in_call = False
            if truncated:
                self._partial = raw
            else:
                self._malformed_block(raw, events)
        elif self._held:
            held, self._held = self._held, ""
            self._emit(held, events)


def parse_output(
    raw: str,
    *,
    tools: Sequence[Tool] | None = None,
    stop_sequence: str | None = None,
    truncated: bool = False,
    ids: Callable[[], str] | None = None,
) -> ParsedOutput:
    """Read a whole raw Qwen output: its reasoning, text, tool calls and how it ended."""
    return parse_whole(QwenStreamParser(tools, ids=ids), raw, stop_sequence, truncated)
