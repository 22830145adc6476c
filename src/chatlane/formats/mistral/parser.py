"""Reading Mistral raw output: reasoning, text and tool calls, whole or as it streams.

One incremental parser does both jobs (`parse_output` feeds it the whole text at once), so a
streamed answer adds up to exactly what parsing it whole gives, for any split.

What it reads (every version, whichever the model was trained on):

- ``[TOOL_CALLS][{"name": ..., "arguments": {...}, "id": ...}, ...]`` (v3, v7): a JSON list
  (or one object) after the control token;
- ``[TOOL_CALLS]name[ARGS]{...}`` and ``[TOOL_CALLS]name[CALL_ID]id[ARGS]{...}`` (v11+), one
  ``[TOOL_CALLS]`` per call;
- ``[THINK]...[/THINK]`` (v13): reasoning, reported as `ReasoningDelta`, never as text;
- ``</s>`` ends the turn; what follows it is not part of it.

Plain text is released at once: only a possible control-token prefix (``[TOOL_C``, ``</``)
is held back, at most a dozen characters. A call is reported once its JSON is complete. A
call that proves malformed (bad JSON, a bad name, a missing ``[ARGS]``) never becomes a call:
its text is kept as text and `MistralParsedOutput.malformed_calls` says what was wrong; one
cut off by the token limit is kept as `ParsedOutput.partial_call`. Neither ends the stream.

Whitespace: the content has no leading or trailing whitespace; whitespace before a call is
kept only when text follows the call. Reasoning is kept as the model wrote it.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chatlane.errors import InputError
from chatlane.events import (
    ChatEvent,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStarted,
)
from chatlane.formats._scanner import ScanningParser, parse_whole
from chatlane.formats.base import ParsedOutput
from chatlane.formats.mistral._format import (
    ARGS,
    CALL_ID,
    END_OF_TEXT,
    THINK,
    THINK_END,
    TOOL_CALLS,
    is_valid_call_id,
    random_call_id,
)
from chatlane.messages import ToolCall

if TYPE_CHECKING:
    from chatlane.tools import Tool

__all__ = [
    "MalformedCall",
    "MistralParsedOutput",
    "MistralStreamParser",
    "parse_output",
    "sequential_ids",
]


@dataclass(frozen=True, slots=True)
class MalformedCall:
    """A call the model began that is not a call: its raw text (kept in the content too)
    and what is wrong with it."""

    raw: str
    reason: str


@dataclass(frozen=True, slots=True)
class MistralParsedOutput(ParsedOutput):
    """`ParsedOutput` with what is wrong with each malformed call (``malformed_calls`` has
    their raw text, in the same order)."""

    malformed: tuple[MalformedCall, ...] = ()


def sequential_ids(prefix: str = "call") -> Callable[[], str]:
    """Deterministic 9-character ids (``call00001``, ...) for tests and reproducible runs."""
    width = 9 - len(prefix)
    if width < 1 or not prefix.isalnum():
        raise InputError("the id prefix is 1-8 letters or digits")
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter):0{width}d}"


class _Mode(enum.Enum):
    TEXT = "text"
    THINK = "think"
    OPEN = "open"  # right after [TOOL_CALLS]: a JSON list or a name follows
    NAME = "name"
    ID = "id"
    ARGS = "args"  # after [ARGS]: the JSON object follows
    BODY = "body"


# A [/THINK] outside reasoning is kept as text: nothing the model wrote is dropped.
_TEXT_MARKERS = (TOOL_CALLS, THINK, END_OF_TEXT)
_THINK_MARKERS = (THINK_END, TOOL_CALLS, END_OF_TEXT)
_NAME_MARKERS = (ARGS, CALL_ID)
_ID_MARKERS = (ARGS,)
_CANDIDATE = re.compile(r"[\[<]")
_NAME_RUN = re.compile(r"[A-Za-z0-9_.\-]+")
_ID_RUN = re.compile(r"[A-Za-z0-9_\-]+")
_WS = re.compile(r"\s*")
_IN_STRING = re.compile(r'["\\]')
_OUTSIDE = re.compile(r'["\[\]{}<]')
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_MAX_NAME = 64


class MistralStreamParser(ScanningParser):
    """Raw Mistral output in, `ChatEvent`s out (the `StreamParser` protocol).

    Args:
        tools: the tools the request offered (calls to others are listed in
            `ParsedOutput.unknown_tools`), or None when that is not known.
        ids: where ids come from for calls that bring none (default: random 9-character
            ids, mistral-common's rule); `sequential_ids()` for deterministic ones.

    Every character is looked at a bounded number of times: the cost of a delta is its
    length, however long the output already is.
    """

    def __init__(
        self, tools: Sequence[Tool] | None = None, *, ids: Callable[[], str] | None = None
    ) -> None:
        super().__init__(ids or random_call_id)
        self._tools = {t.name for t in tools or ()}
        self._offered_known = tools is not None
        self._mode = _Mode.TEXT
        self._hold = ""
        self._raw: list[str] = []  # the current call's text so far
        self._name: list[str] = []
        self._call_id: list[str] = []
        self._json_list = False
        self._body: list[str] = []
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._started = False
        self._pending_ws = ""
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._problems: list[MalformedCall] = []

    # -- the protocol --------------------------------------------------------------------

    def _run(self, text: str, events: list[ChatEvent]) -> None:
        s = self._hold + text if self._hold else text
        self._hold = ""
        self._scan(s, events, final=False)

    def finish(
        self, stop_sequence: str | None = None, *, truncated: bool = False
    ) -> list[ChatEvent]:
        """The output ended (with that stop token, or cut off by the token limit); return
        the remaining events, ending with `Finished`."""
        if self._finished:
            raise RuntimeError("finish() was already called")
        events: list[ChatEvent] = []
        if not self._ended and self._hold:
            s, self._hold = self._hold, ""
            self._scan(s, events, final=True)
        self._truncated = truncated and self._stop_seen is None
        if self._mode not in (_Mode.TEXT, _Mode.THINK):
            raw = self._call_text()
            if self._truncated:
                self._partial = raw
                self._reset_call()
            else:
                self._malformed_call("the output ended inside the call", events)
        self._mode = _Mode.TEXT
        self._ended = self._finished = True
        self._stop = stop_sequence if stop_sequence is not None else self._stop_seen
        events.append(self._finished_event())
        return events

    def _content(self) -> str:
        return "".join(self._text)

    def _reasoning_text(self) -> str:
        return "".join(self._reasoning)

    def _malformed_raw(self) -> tuple[str, ...]:
        return tuple(p.raw for p in self._problems)

    def result(self) -> MistralParsedOutput:
        """Everything read so far (complete after `finish`)."""
        base = super().result()
        return MistralParsedOutput(
            **{f.name: getattr(base, f.name) for f in dataclasses.fields(base)},
            malformed=tuple(self._problems),
        )

    @property
    def partial_call(self) -> str | None:
        return self._partial

    # -- the scanner ---------------------------------------------------------------------

    def _marker(self, s: str, i: int, markers: Sequence[str], final: bool) -> str | None:
        """The marker at ``s[i]``; "" when ``s[i:]`` may still become one (held back)."""
        rest = len(s) - i
        maybe = False
        for marker in markers:
            if s.startswith(marker, i):
                return marker
            if not final and rest < len(marker) and marker.startswith(s[i:]):
                maybe = True
        return "" if maybe else None

    def _scan(self, s: str, events: list[ChatEvent], *, final: bool) -> None:
        i, n = 0, len(s)
        while i < n and not self._ended:
            mode = self._mode
            if mode is _Mode.TEXT or mode is _Mode.THINK:
                m = _CANDIDATE.search(s, i)
                j = m.start() if m else n
                if j > i:
                    self._out(s[i:j], events)
                    i = j
                    continue
                marker = self._marker(
                    s, i, _TEXT_MARKERS if mode is _Mode.TEXT else _THINK_MARKERS, final
                )
                if marker == "":
                    self._hold = s[i:]
                    return
                if marker is None:
                    self._out(s[i], events)
                    i += 1
                    continue
                i += len(marker)
                if marker == END_OF_TEXT:
                    self._stop_seen = END_OF_TEXT
                    self._ended = True
                elif marker == THINK:
                    self._mode = _Mode.THINK
                elif marker == THINK_END:  # only read in reasoning
                    self._mode = _Mode.TEXT
                else:  # [TOOL_CALLS]; in reasoning it ends the reasoning
                    self._mode = _Mode.OPEN
                    self._raw = [marker]
            elif mode is _Mode.OPEN or mode is _Mode.ARGS:
                j = _WS.match(s, i).end()  # type: ignore[union-attr]
                if j > i:
                    self._raw.append(s[i:j])
                    i = j
                    continue
                char = s[i]
                if char == "{" or (char == "[" and mode is _Mode.OPEN):
                    self._json_list = mode is _Mode.OPEN
                    self._mode = _Mode.BODY
                    self._body, self._depth = [], 0
                    self._in_string = self._escaped = False
                elif mode is _Mode.OPEN and _NAME_RUN.match(char):
                    self._mode = _Mode.NAME
                    self._name = []
                    self._call_id = []
                else:
                    what = "a JSON object" if mode is _Mode.ARGS else "a JSON list or a name"
                    self._malformed_call(f"{what} must follow, not {char!r}", events)
            elif mode is _Mode.NAME or mode is _Mode.ID:
                run = _NAME_RUN if mode is _Mode.NAME else _ID_RUN
                buffer = self._name if mode is _Mode.NAME else self._call_id
                m = run.match(s, i)
                if m is not None:
                    # Take no more than one character past the limit, so that where a too
                    # long name is cut does not depend on how the text was split.
                    taken = m.group()[: _MAX_NAME + 1 - sum(map(len, buffer))]
                    buffer.append(taken)
                    self._raw.append(taken)
                    i += len(taken)
                    if sum(map(len, buffer)) > _MAX_NAME:
                        self._malformed_call("the name or id is too long", events)
                    continue
                marker = self._marker(
                    s, i, _NAME_MARKERS if mode is _Mode.NAME else _ID_MARKERS, final
                )
                if marker == "":
                    self._hold = s[i:]
                    return
                if marker is None:
                    self._malformed_call(f"{ARGS} must follow the name", events)
                    continue
                self._raw.append(marker)
                i += len(marker)
                self._mode = _Mode.ID if marker == CALL_ID else _Mode.ARGS
            else:
                i = self._scan_body(s, i, events)

    def _scan_body(self, s: str, i: int, events: list[ChatEvent]) -> int:
        """Read JSON until its outer bracket closes; return where reading stopped."""
        n = len(s)
        body = self._body
        while i < n:
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                    body.append(s[i])
                    i += 1
                    continue
                m = _IN_STRING.search(s, i)
                if m is None:
                    body.append(s[i:])
                    return n
                k = m.end()
                body.append(s[i:k])
                i = k
                if m.group() == "\\":
                    self._escaped = True
                else:
                    self._in_string = False
                continue
            m = _OUTSIDE.search(s, i)
            if m is None:
                body.append(s[i:])
                return n
            k = m.start()
            char = m.group()
            if char == "<":
                # JSON has no '<' outside strings: likely a stop token; not a call.
                if k > i:
                    body.append(s[i:k])
                self._malformed_call("the call's JSON was interrupted", events)
                return k
            body.append(s[i : k + 1])
            i = k + 1
            if char == '"':
                self._in_string = True
            elif char in "[{":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth <= 0:
                    self._body_done(events)
                    return i
        return n

    # -- completed calls -------------------------------------------------------------------

    def _call_text(self) -> str:
        return (
            "".join(self._raw) + "".join(self._body)
            if self._mode is _Mode.BODY
            else "".join(self._raw)
        )

    def _reset_call(self) -> None:
        self._raw, self._body, self._name, self._call_id = [], [], [], []
        self._mode = _Mode.TEXT

    def _body_done(self, events: list[ChatEvent]) -> None:
        body = "".join(self._body)
        calls: list[ToolCall] | None
        if self._json_list:
            calls, reason = self._json_calls(body)
        else:
            calls, reason = self._named_call(body)
        if calls is None:
            self._malformed_call(reason, events)
            return
        self._reset_call()
        for call in calls:
            index = len(self._calls)
            self._calls.append(call)
            known = not self._offered_known or call.name in self._tools
            if not known and call.name not in self._unknown:
                self._unknown.append(call.name)
            events.append(ToolCallStarted(index, call.id, call.name))
            events.append(ToolCallDelta(index, call.raw_arguments))
            events.append(ToolCallDone(index, call))

    def _json_calls(self, body: str) -> tuple[list[ToolCall] | None, str]:
        try:
            value = json.loads(body)
        except (ValueError, RecursionError) as e:
            return None, f"the calls are not JSON: {e}"
        items = value if isinstance(value, list) else [value]
        if not items:
            return None, "the list of calls is empty"
        calls: list[ToolCall] = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                return None, "a call must be an object with a name"
            name = item["name"]
            if not _NAME.fullmatch(name):
                return None, f"{name!r} is not a tool name"
            arguments = item.get("arguments", item.get("parameters", {}))
            given = item.get("id")
            call_id = given if isinstance(given, str) and is_valid_call_id(given) else self._ids()
            if isinstance(arguments, str):
                calls.append(ToolCall.from_raw(call_id, name, arguments))
            elif isinstance(arguments, dict):
                calls.append(ToolCall(call_id, name, arguments))
            else:
                return None, "a call's arguments must be an object"
        return calls, ""

    def _named_call(self, body: str) -> tuple[list[ToolCall] | None, str]:
        name = "".join(self._name)
        if not _NAME.fullmatch(name):
            return None, f"{name!r} is not a tool name"
        try:
            arguments = json.loads(body)
        except (ValueError, RecursionError) as e:
            return None, f"the arguments are not JSON: {e}"
        if not isinstance(arguments, dict):
            return None, "the arguments must be a JSON object"
        given = "".join(self._call_id)
        call_id = given if is_valid_call_id(given) else self._ids()
        return [ToolCall(call_id, name, arguments, raw_arguments=body)], ""

    def _malformed_call(self, reason: str, events: list[ChatEvent]) -> None:
        raw = self._call_text()
        self._problems.append(MalformedCall(raw, reason))
        self._reset_call()
        self._emit_text(raw, events)

    # -- output ----------------------------------------------------------------------------

    def _out(self, text: str, events: list[ChatEvent]) -> None:
        if self._mode is _Mode.THINK:
            self._reasoning.append(text)
            events.append(ReasoningDelta(text))
        else:
            self._emit_text(text, events)

    def _emit_text(self, text: str, events: list[ChatEvent]) -> None:
        if not self._started:
            text = text.lstrip()
            if not text:
                return
        core = text.rstrip()
        if not core:
            self._pending_ws += text
            return
        out = self._pending_ws + core if self._pending_ws else core
        self._pending_ws = text[len(core) :]
        self._started = True
        self._text.append(out)
        events.append(TextDelta(out))


def parse_output(
    raw: str,
    *,
    tools: Sequence[Tool] | None = None,
    stop_sequence: str | None = None,
    truncated: bool = False,
    ids: Callable[[], str] | None = None,
) -> MistralParsedOutput:
    """Read a whole raw Mistral output (control tokens as text)."""
    return parse_whole(MistralStreamParser(tools, ids=ids), raw, stop_sequence, truncated)  # type: ignore[return-value]
