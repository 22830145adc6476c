"""Reading Llama 4 raw output: text and tool calls, whole or as it streams.

One incremental parser does both jobs: `parse_output` feeds it the whole text at once and
the streaming backends feed it piece by piece, so a streamed answer adds up to exactly what
parsing it whole gives (the property tests check it for any split).

Llama 4 answers with either call form, whatever its prompt asked for:

- pythonic lists ``[get_weather(city="Paris"), now()]`` (the form Meta's system prompt asks
  for);
- JSON objects ``{"name": ..., "parameters": {...}}`` (``"arguments"`` too, with or without
  ``"type": "function"``, wrapped in ``{"function": {...}}``, or a JSON list of them; several
  separated by ``;``, ``,`` or whitespace);

each with or without ``<|python_start|>…<|python_end|>`` around it (the tags are dropped).

Plain text is released as soon as it cannot start a call: only ``[`` followed by a name and
``(``, ``{`` followed by a call key, and the start of a control token's text are held back
until they prove to be a call or text. A call is reported (``ToolCallStarted``,
``ToolCallDelta``, ``ToolCallDone`` together) once its brackets balance and it reads as a
call. A bracketed text that looked like a call but does not read as one stays text, and its
raw text is listed in `ParsedOutput.malformed_calls`; a call cut off by the token limit is
`ParsedOutput.partial_call`, never a call. ``<|eot|>``, ``<|eom|>`` and ``<|end_of_text|>``
end the turn (reported as ``stop_sequence``); nothing after one is read.

Whitespace: the content has no leading or trailing whitespace; separators right after a call
(whitespace, ``;``, ``,``) are dropped. Nothing here runs model output.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from chatlane.errors import InputError
from chatlane.events import (
    ChatEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStarted,
)
from chatlane.formats._pythonic import PyCall, parse_call_list
from chatlane.formats._scanner import ScanningParser, parse_whole, random_call_id, sequential_ids
from chatlane.formats.base import ParsedOutput
from chatlane.messages import ToolCall
from chatlane.tools import Tool

__all__ = [
    "STOP_TOKENS",
    "Llama4StreamParser",
    "parse_output",
    "random_call_id",
    "sequential_ids",
]

STOP_TOKENS = ("<|eom|>", "<|eot|>", "<|end_of_text|>")
"""The texts that end an assistant turn: eom (waits for a tool result), eot, end of text."""
_TAGS = ("<|python_start|>", "<|python_end|>")
_LITERALS = (*STOP_TOKENS, *_TAGS)
_TRIGGER = re.compile(r"[<\[{]")
_NAME_START = re.compile(r"[A-Za-z_]")
_NAME_CHAR = re.compile(r"[\w.\-]")
_CALL_KEYS = frozenset({"name", "type", "function", "parameters", "arguments", "id"})
_CALL_FIELDS = frozenset({"name", "type", "parameters", "arguments", "id"})
_NAME = re.compile(r"[A-Za-z_][\w.\-]*")
_SEPARATORS = frozenset(" \t\r\n;,")
_LONGEST = max(len(t) for t in _LITERALS)
_MAX_HEAD = 200
"""A call's opening (up to the point where it is certain) is never longer than this."""


_TEXT, _HEAD, _BODY = 0, 1, 2


class Llama4StreamParser(ScanningParser):
    """Raw Llama 4 output in, `ChatEvent`s out (the `StreamParser` protocol).

    Args:
        tools: the tools the request offered. Calls to other tools are still calls, and
            their names are listed in `ParsedOutput.unknown_tools`; ``None`` (not known)
            reports nothing as unknown.
        ids: where tool-call ids come from (default: `random_call_id`).
    """

    def __init__(
        self, tools: Sequence[Tool] | None = None, *, ids: Callable[[], str] | None = None
    ) -> None:
        super().__init__(ids)
        self._tools: dict[str, Tool] = {t.name: t for t in tools or ()}
        self._offered_known = tools is not None
        self._mode = _TEXT
        self._held = ""  # a head, or a body
        self._json = False  # the body is JSON (else a pythonic list)
        self._depth = 0
        self._quote = ""
        self._escaped = False
        self._after_call = False
        self._started = False
        self._pending_ws = ""
        self._text: list[str] = []

    def _content(self) -> str:
        return "".join(self._text)

    # -- the scanner ----------------------------------------------------------------------

    def _run(self, s: str, events: list[ChatEvent]) -> None:
        i = 0
        n = len(s)
        while i < n and not self._ended:
            mode = self._mode
            if mode == _TEXT:
                if self._after_call:
                    while i < n and s[i] in _SEPARATORS:
                        i += 1
                    if i == n:
                        return
                m = _TRIGGER.search(s, i)
                end = n if m is None else m.start()
                if end > i:
                    self._emit_text(s[i:end], events)
                if m is None:
                    return
                self._mode = _HEAD
                self._held = s[end]
                i = end + 1
            elif mode == _HEAD:
                again = self._step_head(s[i], events)
                i += 1
                if again is not None:
                    # The head proved to be text: its first character is text, the rest is
                    # read again (it may hold the next trigger).
                    self._run(again, events)
            else:
                i = self._step_body(s, i, events)

    def _step_head(self, char: str, events: list[ChatEvent]) -> str | None:
        head = self._held + char
        verdict = _classify(head)
        if verdict is None and len(head) <= _MAX_HEAD:
            self._held = head
            return None
        self._held = ""
        if verdict is None or verdict is False:
            self._mode = _TEXT
            self._emit_text(head[0], events)
            return head[1:]
        if verdict in STOP_TOKENS:
            self._mode = _TEXT
            self._stop_seen = verdict
            self._ended = True
            self._end(False, events)
            return None
        if verdict in _TAGS:
            self._mode = _TEXT
            return None
        # A call has begun: read its body from the start (the head is inside it).
        self._mode = _BODY
        self._json = verdict == "json"
        self._depth = 0
        self._quote = ""
        self._escaped = False
        self._held = ""
        return self._step_body_text(head, events)

    def _step_body_text(self, text: str, events: list[ChatEvent]) -> str | None:
        i = 0
        while i < len(text) and self._mode == _BODY and not self._ended:
            i = self._step_body(text, i, events)
        rest = text[i:]
        if rest and not self._ended:
            return rest
        return None

    def _step_body(self, s: str, i: int, events: list[ChatEvent]) -> int:
        """Read a body up to where its brackets balance (strings skipped); a control
        token's text inside it (found at its closing ``>``, however the text was split)
        ends the body unfinished."""
        n = len(s)
        start = i
        quote, escaped, depth = self._quote, self._escaped, self._depth
        json_body = self._json
        while i < n:
            c = s[i]
            i += 1
            if c == ">":
                tail = (self._held[-_LONGEST:] + s[start:i])[-_LONGEST:]
                literal = next((lit for lit in _LITERALS if tail.endswith(lit)), None)
                if literal is not None:
                    body = self._held + s[start:i]
                    self._held = body[: -len(literal)]
                    self._malformed_body(events)
                    self._mode = _TEXT
                    if literal in STOP_TOKENS:
                        self._stop_seen = literal
                        self._ended = True
                    return i
            if quote:
                if escaped:
                    escaped = False
                elif c == "\\":
                    escaped = True
                elif c == quote:
                    quote = ""
                continue
            if c == '"' or (c == "'" and not json_body):
                quote = c
            elif c in "[{(":
                depth += 1
            elif c in "]})":
                depth -= 1
                if depth == 0:
                    self._held += s[start:i]
                    self._quote, self._escaped, self._depth = "", False, 0
                    self._body_done(events)
                    return i
        self._held += s[start:i]
        self._quote, self._escaped, self._depth = quote, escaped, depth
        return i

    def _body_done(self, events: list[ChatEvent]) -> None:
        body = self._held
        self._held = ""
        self._mode = _TEXT
        calls = self._read(body)
        if calls is None:
            self._malformed.append(body)
            self._emit_text(body, events)
            return
        if not calls:
            self._emit_text(body, events)  # JSON that is data, not a call
            return
        self._emit_calls(calls, events)

    def _malformed_body(self, events: list[ChatEvent]) -> None:
        body = self._held
        self._held = ""
        self._malformed.append(body)
        self._emit_text(body, events)

    # -- the end of the output ------------------------------------------------------------

    def _end(self, truncated: bool, events: list[ChatEvent]) -> None:
        """Settle whatever is held when the output ends."""
        while self._mode == _HEAD:
            head = self._held
            self._held = ""
            self._mode = _TEXT
            if truncated and _classify(head) is None and head[:1] in "[{":
                self._partial = head
                return
            self._emit_text(head[0], events)
            self._run_tail(head[1:], events)
        if self._mode == _BODY:
            self._mode = _TEXT
            if truncated:
                self._partial = self._held
                self._held = ""
            else:
                self._malformed_body(events)

    def _run_tail(self, text: str, events: list[ChatEvent]) -> None:
        ended = self._ended
        self._ended = False
        self._run(text, events)
        self._ended = ended or self._ended

    # -- what a body says ----------------------------------------------------------------

    def _read(self, body: str) -> list[ToolCall] | None:
        """The calls of a body; [] for JSON that is not a call; None when it is malformed."""
        if self._json:
            try:
                value = json.loads(body)
            except (ValueError, RecursionError):
                return None
            items = value if isinstance(value, list) else [value]
            calls = [self._json_call(item) for item in items]
            if not items or any(c is None for c in calls):
                return []
            return [c for c in calls if c is not None]
        listed = parse_call_list(body)
        if listed is None:
            return None
        return [self._py_call(c) for c in listed]

    def _json_call(self, value: Any) -> ToolCall | None:
        if not isinstance(value, dict):
            return None
        function = value.get("function")
        if isinstance(function, dict) and set(value) <= {"function", "type", "id"}:
            value = function
        name = value.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name) or not set(value) <= _CALL_FIELDS:
            return None
        if value.get("type", "function") != "function":
            return None
        if "parameters" in value:
            arguments = value["parameters"]
        elif "arguments" in value:
            arguments = value["arguments"]
        elif name in self._tools:
            arguments = {}
        else:
            return None  # {"name": "Ada"} is data, unless Ada is a tool
        if arguments is None:
            arguments = {}
        if isinstance(arguments, str):
            # OpenAI-style arguments: a JSON object encoded as a string.
            return self._make(name, raw=arguments)
        if isinstance(arguments, dict):
            return self._make(name, arguments)
        return self._make(name, raw=json.dumps(arguments, ensure_ascii=False))

    def _py_call(self, call: PyCall) -> ToolCall:
        arguments = dict(call.kwargs)
        if call.args:
            tool = self._tools.get(call.name)
            properties = list(tool.parameters.get("properties", {})) if tool else []
            names = [p for p in properties if p not in arguments]
            if len(call.args) > len(names):
                # Positional arguments nobody can name: keep the text, show the problem.
                return self._make(call.name, raw=call.raw_args)
            arguments = dict(zip(names, call.args, strict=False)) | arguments
        return self._make(call.name, arguments)

    def _make(
        self, name: str, arguments: Mapping[str, Any] | None = None, *, raw: str | None = None
    ) -> ToolCall:
        call_id = self._ids()
        if arguments is None:
            assert raw is not None
            return ToolCall.from_raw(call_id, name, raw)
        return ToolCall(
            call_id, name, arguments, raw_arguments=json.dumps(arguments, ensure_ascii=False)
        )

    # -- output ----------------------------------------------------------------------------

    def _emit_text(self, text: str, events: list[ChatEvent]) -> None:
        self._after_call = False
        if not self._started:
            text = text.lstrip()
            if not text:
                return
        core = text.rstrip()
        if not core:
            self._pending_ws += text
            return
        out = self._pending_ws + core
        self._pending_ws = text[len(core) :]
        self._started = True
        self._text.append(out)
        events.append(TextDelta(out))

    def _emit_calls(self, calls: Sequence[ToolCall], events: list[ChatEvent]) -> None:
        for call in calls:
            index = len(self._calls)
            self._calls.append(call)
            if (
                self._offered_known
                and call.name not in self._tools
                and call.name not in self._unknown
            ):
                self._unknown.append(call.name)
            events.append(ToolCallStarted(index, call.id, call.name))
            events.append(ToolCallDelta(index, call.raw_arguments))
            events.append(ToolCallDone(index, call))
        self._after_call = True


def _classify(head: str) -> bool | str | None:
    """What a held head is: None (maybe: read on), False (text), a literal (a stop token or
    a tag, complete), ``"json"`` or ``"py"`` (a call has certainly begun)."""
    first = head[0]
    if first == "<":
        for literal in _LITERALS:
            if literal == head:
                return literal
            if literal.startswith(head):
                return None
        return False
    if first == "{":
        return _object_head(head, 1)
    # "[": a pythonic list, or a JSON list of call objects.
    i = _skip_ws(head, 1)
    if i == len(head):
        return None
    if head[i] == "{":
        return _object_head(head, i + 1)
    if not _NAME_START.match(head[i]):
        return False
    j = i
    while j < len(head) and _NAME_CHAR.match(head[j]):
        j += 1
    j = _skip_ws(head, j)
    if j == len(head):
        return None
    return "py" if head[j] == "(" else False


def _object_head(head: str, i: int) -> bool | str | None:
    # `{` then whitespace then a quoted key that a call object starts with.
    i = _skip_ws(head, i)
    if i == len(head):
        return None
    if head[i] != '"':
        return False
    close = head.find('"', i + 1)
    if close < 0:
        key = head[i + 1 :]
        return None if any(k.startswith(key) for k in _CALL_KEYS) else False
    return "json" if head[i + 1 : close] in _CALL_KEYS else False


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t\r\n":
        i += 1
    return i


def parse_output(
    raw: str,
    *,
    tools: Sequence[Tool] | None = None,
    stop_sequence: str | None = None,
    truncated: bool = False,
    ids: Callable[[], str] | None = None,
) -> ParsedOutput:
    """Read a whole raw output (the same parser as streaming, fed at once)."""
    if not isinstance(raw, str):
        raise InputError(f"the parser reads text (str), got {type(raw).__name__}")
    return parse_whole(Llama4StreamParser(tools, ids=ids), raw, stop_sequence, truncated)
