"""Reading Llama 3.x raw output: text and tool calls, whole or as it streams.

One incremental parser does both jobs: `parse_output` feeds it the whole text at once, and
the streaming backends feed it each piece as it arrives. So a streamed answer adds up to
exactly what parsing it whole gives, by construction (the property tests check it for any
split of the text).

What it reads (everything the Llama 3.1 / 3.2 / 3.3 models were seen to emit):

- ``<|python_tag|>`` followed by a built-in call (``brave_search.call(query="...")``), JSON
  calls, a pythonic list of calls, or Python code for ``code_interpreter``;
- JSON calls ``{"name": ..., "parameters" | "arguments": {...}}``, with or without
  ``"type": "function"``, wrapped in ``{"function": {...}}``, a JSON list of them, inside a
  markdown code fence, several separated by ``;``, ``,`` or newlines, with prose around them;
- pythonic lists ``[f(a=1, b="x, y"), g()]`` (Llama 3.2 / 3.3);
- ``<function=name>{...}</function>`` (Llama 3.1's custom-tool format);
- a built-in call without ``<|python_tag|>`` at the start of the output or right after a
  call, as llama-models' ``ChatFormat`` writes it (inside prose, ``obj.call(`` is text).

Plain text is released as soon as it can no longer start a call: only a possible call
prefix (``<|python_tag|>``, ``{``, ``[``, ``<function=``, a code fence, and a first word
that may become ``brave_search.call(``) is held back, until it either becomes a call or
proves to be text. A call is reported (``ToolCallStarted``, ``ToolCallDelta``,
``ToolCallDone`` together) once its text is complete: a call cut off by the token limit
must never turn into a made-up call, and an event cannot be taken back.

Whitespace: the content has no leading or trailing whitespace, and the separators right
after a call (whitespace, ``;``, ``,``) are dropped; the whitespace before a call is kept
only when more text follows the call. A stop token's text (``<|eom_id|>``, ``<|eot_id|>``,
``<|end_of_text|>``) in the output ends the turn: it is reported as ``stop_sequence`` and
whatever follows it is not part of the turn.

Nothing here runs model output: code for ``code_interpreter`` is only checked to be Python
with ``ast.parse``.
"""

from __future__ import annotations

import ast
import enum
import itertools
import json
import random
import re
import secrets
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from chatlane.errors import InputError
from chatlane.events import (
    ChatEvent,
    Finished,
    TextDelta,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStarted,
)
from chatlane.formats._pythonic import PyCall, parse_call, parse_call_list, read_call_list
from chatlane.formats.base import ParsedOutput
from chatlane.messages import ToolCall
from chatlane.response import FinishReason
from chatlane.tools import BUILTIN_TOOLS, Tool

__all__ = [
    "PYTHON_TAG",
    "STOP_TOKENS",
    "ToolCallStreamParser",
    "parse_output",
    "random_call_id",
    "sequential_ids",
]

PYTHON_TAG = "<|python_tag|>"
STOP_TOKENS = ("<|eom_id|>", "<|eot_id|>", "<|end_of_text|>")
"""The texts that end an assistant turn: eom (waits for a tool result), eot, end of text."""
_END_OF_MESSAGE = STOP_TOKENS[0]
_FUNCTION_OPEN = "<function="
_FUNCTION_CLOSE = "</function>"
_FENCE = "```"
_LITERALS = (PYTHON_TAG, _FUNCTION_OPEN, *STOP_TOKENS)
_LONGEST_STOP = max(len(t) for t in STOP_TOKENS)

# The keys a JSON call object may start with; any other first key means it is data, not a call.
_CALL_KEYS = ("name", "type", "function", "parameters", "arguments", "id")
_CALL_FIELDS = frozenset({"name", "type", "parameters", "arguments", "id"})
_SEPARATORS = frozenset(" \t\r\n;,")
_FENCE_SEPARATORS = " \t\r\n;,"
_SEPARATOR_RUN = re.compile(r"[ \t\r\n;,]*")
_WRAPPER_FIELDS = frozenset({"function", "type", "id"})
_NAME = re.compile(r"[A-Za-z_][\w.\-]*")
_NAME_START = re.compile(r"[A-Za-z_]")
# Where a call may start. A bracket whose next character already rules a call out
# (``{x``, ``[1``, ``<b``, a lone backtick) is skipped in the same regex search, so prose
# costs one C-level scan per piece: the same verdict `_classify_head` reaches on those two
# characters, without the character-by-character hold. At the end of a piece the next
# character is unknown, so the bracket is held as before.
_TRIGGER_HEADS = r'\{(?![^\s"])|\[(?![^\s{A-Za-z_])|<(?![^|f])|`(?![^`])'
_TRIGGER = re.compile(_TRIGGER_HEADS)
_TRIGGER_IN_TAG = re.compile(_TRIGGER_HEADS + r"|[A-Za-z_]")
_TRIGGER_FRESH = re.compile(r"[<{\[`A-Za-z_]")
_WHOLE_TRIGGER = re.compile(r"[<{\[`(]")
"""What may start a call in a whole output's prose (``(``: a bare built-in call)."""
_BARE_WORD = re.compile(r"[A-Za-z_][\w.\-]*\s*")
_JSON_SPECIAL = re.compile(r'["{}\[\]()]')
_PY_SPECIAL = re.compile(r"[\"'{}\[\]()]")
_STRING_SPECIAL = {'"': re.compile(r'["\\]'), "'": re.compile(r"['\\]")}
_TOKENS = (PYTHON_TAG, *STOP_TOKENS)
_FUNCTION_NAME = re.compile(r"[\w.\-]*")
_FENCE_LANG = re.compile(r"[\w+\-]*")
_MAX_HEAD = 200
"""A call's opening (up to the point where it is certain) is never longer than this."""


_UNREAD: Any = object()
"""A body's JSON value that was not decoded yet."""
_raw_decode: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[attr-defined]
"""``JSONDecoder().raw_decode`` without its Python frame: the value at an index and where it
ends; raises StopIteration (no value there) or ValueError."""


def _make_json_encoder() -> Callable[[Any], str]:
    """``json.dumps(value, ensure_ascii=False)`` for JSON data (no cycles, nothing exotic),
    with the C encoder made once: `json.JSONEncoder.encode` makes a new one per call, which
    costs more than encoding a call's arguments."""
    from json import encoder

    make: Any = getattr(encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover (no C accelerator)
        return json.JSONEncoder(ensure_ascii=False).encode

    def default(value: Any) -> Any:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    chunks = make(None, default, encoder.encode_basestring, None, ": ", ", ", False, False, True)
    join = "".join
    return lambda value: join(chunks(value, 0))


_encode_json = _make_json_encoder()


def _make_tool_call() -> Callable[[str, str, dict[str, Any], str], ToolCall]:
    """``ToolCall(id, name, arguments, raw_arguments=raw)`` for arguments that are already
    a fresh dict and their JSON: made without ``__init__``'s checks and
    ``object.__setattr__`` calls, which cost a whole parse as much as reading the call.
    Falls back to the class if `ToolCall` ever changes its fields."""
    fields = ("id", "name", "arguments", "raw_arguments", "arguments_error")
    if ToolCall.__slots__ != fields:  # pragma: no cover
        return lambda id, name, arguments, raw: ToolCall(id, name, arguments, raw_arguments=raw)
    new: Any = ToolCall.__new__
    setters: list[Any] = [ToolCall.__dict__[f].__set__ for f in fields]
    set_id, set_name, set_arguments, set_raw, set_error = setters

    def tool_call(id: str, name: str, arguments: dict[str, Any], raw: str) -> ToolCall:
        call: ToolCall = new(ToolCall)
        set_id(call, id)
        set_name(call, name)
        set_arguments(call, arguments)
        set_raw(call, raw)
        set_error(call, None)
        return call

    return tool_call


_tool_call = _make_tool_call()


def _make_parsed_output() -> Callable[
    [str, tuple[ToolCall, ...], str | None, bool, str | None, tuple[str, ...]], ParsedOutput
]:
    """``ParsedOutput(...)`` with its fields in order, made as `_make_tool_call` makes calls
    (every parse makes one)."""
    fields = (
        "content",
        "tool_calls",
        "stop_sequence",
        "truncated",
        "partial_call",
        "unknown_tools",
        "reasoning",
        "malformed_calls",
    )
    if ParsedOutput.__slots__ != fields:  # pragma: no cover
        return lambda *values: ParsedOutput(*values)
    new: Any = ParsedOutput.__new__
    s_content, s_calls, s_stop, s_truncated, s_partial, s_unknown, s_reasoning, s_malformed = (
        ParsedOutput.__dict__[f].__set__ for f in fields
    )

    def parsed_output(
        content: str,
        tool_calls: tuple[ToolCall, ...],
        stop_sequence: str | None,
        truncated: bool,
        partial_call: str | None,
        unknown_tools: tuple[str, ...],
    ) -> ParsedOutput:
        out: ParsedOutput = new(ParsedOutput)
        s_content(out, content)
        s_calls(out, tool_calls)
        s_stop(out, stop_sequence)
        s_truncated(out, truncated)
        s_partial(out, partial_call)
        s_unknown(out, unknown_tools)
        s_reasoning(out, None)  # Llama 3 does not reason apart
        s_malformed(out, ())  # a call with bad arguments is a call (arguments_error says so)
        return out

    return parsed_output


_parsed_output = _make_parsed_output()

_last_tools: tuple[tuple[Tool, ...] | None, dict[str, Tool]] = (None, {})


def _tools_by_name(tools: Sequence[Tool] | None) -> dict[str, Tool]:
    """The offered tools by name. A request's tools are a tuple, the same one for every
    parse of its answers: the last one's table is kept (the parser never changes it)."""
    global _last_tools
    if tools is None:
        return {}
    if type(tools) is tuple:
        last, table = _last_tools
        if last is tools:
            return table
        table = {t.name: t for t in tools}
        _last_tools = (tools, table)
        return table
    return {t.name: t for t in tools}


def _make_text_delta() -> Callable[[str], TextDelta]:
    """``TextDelta(text)``, made without the frozen dataclass's ``__init__`` (which sets each
    field through ``object.__setattr__``): half the cost, on the one event every piece of
    prose makes. Falls back to the class if `TextDelta` ever gains a field."""
    if TextDelta.__slots__ != ("text", "choice"):  # pragma: no cover
        return TextDelta
    new: Any = TextDelta.__new__
    set_text: Any = TextDelta.__dict__["text"].__set__
    set_choice: Any = TextDelta.__dict__["choice"].__set__

    def text_delta(text: str) -> TextDelta:
        delta: TextDelta = new(TextDelta)
        set_text(delta, text)
        set_choice(delta, 0)
        return delta

    return text_delta


_text_delta = _make_text_delta()


_ID_BITS = random.Random(secrets.randbits(128)).getrandbits
"""96 random bits per id, from a generator of the parser's own (seeded from the system's
randomness once), so a user's ``random.seed`` cannot make ids repeat. An id only has to be
unique within a conversation; a system call per id would cost a whole parse a quarter of
its time."""


def random_call_id() -> str:
    """A fresh tool-call id such as ``call_3f9a...``: the Llama format has none of its own."""
    return f"call_{_ID_BITS(96):024x}"


def sequential_ids(prefix: str = "call_") -> Callable[[], str]:
    """An id source giving ``call_0``, ``call_1``, ...: deterministic ids for tests, so a
    streamed and a whole parse of the same output can be compared."""
    counter = itertools.count()
    return lambda: f"{prefix}{next(counter)}"


class _Mode(enum.Enum):
    TEXT = "text"
    HEAD = "head"  # a possible call prefix, not yet certain
    BODY = "body"  # a call's bracketed text, until its brackets balance
    TAIL = "tail"  # an optional closing marker after a body (a fence, </function>)
    CODE = "code"  # code after <|python_tag|>, held until the end


class _Kind(enum.Enum):
    JSON = "json"  # {"name": ..., "parameters": ...}
    JSON_LIST = "json_list"  # [{...}, {...}]
    PY_LIST = "py_list"  # [f(a=1), g()]
    PY_BARE = "py_bare"  # f(a=1) right after <|python_tag|>
    FUNCTION = "function"  # <function=name>{...}</function>


_PY_KINDS = (_Kind.PY_BARE, _Kind.PY_LIST)


class ToolCallStreamParser:
    """Raw Llama 3.x output in, `ChatEvent`s out (the `StreamParser` protocol).

    Args:
        tools: the tools the request offered. Calls to other tools are still reported as
            calls, and their names are listed in `ParsedOutput.unknown_tools` (a request that
            offered no tools makes every call unknown). ``None``, when the offered tools are
            not known, reports nothing as unknown.
        ids: where tool-call ids come from (default: `random_call_id`); pass
            `sequential_ids()` for deterministic ids.

    Feeding costs time linear in the text: every character is looked at a bounded number
    of times, and nothing is re-parsed from the start.
    """

    # The state a fresh parser starts in (class defaults: a whole parse makes one parser
    # per output, so the constructor sets only what is mutable).
    _mode = _Mode.TEXT
    _head = ""
    _kind = _Kind.JSON
    _fenced = False
    _fence_open = False  # inside a fence after a call, so the next call is fenced too
    _function_name = ""
    _body_start = 0
    _depth = 0
    _quote = ""
    _escaped = False
    _tail = ""
    _recent = ""  # the last few characters of a body or code, to spot a stop token
    _tag_fresh = False  # right after <|python_tag|>, before any call
    _in_tag = False  # after <|python_tag|>, while only calls followed
    # At the start and right after a call, a bare ``brave_search.call(...)`` is a call
    # (llama-models' ChatFormat writes built-in calls without <|python_tag|>).
    _bare_ok = True
    _after_call = False
    _started_content = False
    _partial: str | None = None
    _stop_seen: str | None = None
    _ended = False
    _finished = False
    _stop_sequence: str | None = None
    _truncated = False
    _quiet = False  # a whole parse: no events, only the result

    def __init__(
        self, tools: Sequence[Tool] | None = None, *, ids: Callable[[], str] | None = None
    ) -> None:
        self._tools: dict[str, Tool] = _tools_by_name(tools)
        self._offered_known = tools is not None
        self._ids = ids or random_call_id
        self._held: list[str] = []
        self._pending_calls: list[ToolCall] = []
        self._pending_ws: list[str] = []  # whitespace that is out only if text follows
        self._text: list[str] = []
        self._calls: list[ToolCall] = []
        self._unknown: list[str] = []

    # -- the StreamParser protocol ------------------------------------------------------

    def feed(self, text: str) -> list[ChatEvent]:
        """Take the next piece of raw output; return the events it completes."""
        if self._finished:
            raise RuntimeError("feed() after finish(): use a new parser for a new response")
        if not isinstance(text, str):
            raise InputError(f"the parser reads text (str), got {type(text).__name__}")
        if (
            self._mode is _Mode.TEXT
            and self._started_content
            and not (self._after_call or self._bare_ok or self._tag_fresh or self._fence_open)
            and not self._ended
            and _TRIGGER.search(text) is None
        ):
            # Prose that nothing in can start a call: out at once (`_emit_text`, inlined,
            # because this is what almost every piece of an answer costs).
            core = text.rstrip()
            if not core:
                if text:
                    self._pending_ws.append(text)
                return []
            if self._pending_ws:
                out = "".join(self._pending_ws) + core
                self._pending_ws = []
            else:
                out = core
            if len(core) != len(text):
                self._pending_ws.append(text[len(core) :])
            self._text.append(out)
            return [_text_delta(out)]
        events: list[ChatEvent] = []
        if text and not self._ended:
            self._run(text, events)
        return events

    def finish(
        self, stop_sequence: str | None = None, *, truncated: bool = False
    ) -> list[ChatEvent]:
        """The output ended; return the remaining events, ending with `Finished`.

        Args:
            stop_sequence: the stop token that ended the output, when the caller knows it
                (a stop token found in the text itself counts too).
            truncated: the output was cut off by the token limit; an unfinished call then
                becomes `ParsedOutput.partial_call`, never a call.
        """
        if self._finished:
            raise RuntimeError("finish() was already called")
        events: list[ChatEvent] = []
        stop = stop_sequence if stop_sequence is not None else self._stop_seen
        self._truncated = truncated and self._stop_seen is None
        if not self._ended:
            self._resolve_end(self._truncated, events, stop)
            self._ended = True
        self._finished = True
        self._stop_sequence = stop
        if not self._quiet:
            events.append(Finished(self._finish_reason(), stop_sequence=stop))
        return events

    def result(self) -> ParsedOutput:
        """Everything read so far, as a `ParsedOutput` (complete after `finish`)."""
        return _parsed_output(
            "".join(self._text),
            tuple(self._calls),
            self._stop_sequence if self._finished else self._stop_seen,
            self._truncated,
            self._partial,
            tuple(self._unknown),
        )

    @property
    def partial_call(self) -> str | None:
        """The raw text of a call the output was cut off in (after ``finish(truncated=True)``)."""
        return self._partial

    def _finish_reason(self) -> FinishReason:
        if self._truncated:
            return FinishReason.LENGTH
        if self._calls:
            return FinishReason.TOOL_CALLS
        return FinishReason.STOP

    # -- the scanner ----------------------------------------------------------------------

    def _run(self, text: str, events: list[ChatEvent]) -> None:
        if not text:
            return
        start = 0
        if (
            self._mode is _Mode.HEAD
            and len(self._head) == 1
            and not self._tag_fresh
            and _TRIGGER.match(self._head + text[0]) is None
        ):
            # A bracket held at the end of the last piece, that this piece's first character
            # shows is text (``{`` then ``x``): read on as text from the bracket.
            text = self._head + text
            self._head = ""
            self._mode = _Mode.TEXT
        if self._mode is _Mode.TEXT:
            # The common case, prose: one step reads the whole piece.
            start = self._step_text(text, 0, events)
            if start == len(text):
                return
        # Pieces to read, in order; a step that gives text back (a prefix that proved not to
        # be a call) puts it in front of the rest.
        work: deque[tuple[str, int]] = deque([(text, start)])
        while work and not self._ended:
            s, i = work.popleft()
            while i < len(s) and not self._ended:
                mode = self._mode
                if mode is _Mode.TEXT:
                    i = self._step_text(s, i, events)
                elif mode is _Mode.HEAD:
                    back = self._step_head(s[i], events)
                    i += 1
                    if back:
                        work.appendleft((s, i))
                        work.appendleft((back, 0))
                        break
                elif mode is _Mode.BODY:
                    i = self._step_body(s, i, events)
                elif mode is _Mode.TAIL:
                    back = self._step_tail(s[i], events)
                    i += 1
                    if back:
                        work.appendleft((s, i))
                        work.appendleft((back, 0))
                        break
                else:
                    i = self._step_code(s, i, events)

    def _step_text(self, s: str, i: int, events: list[ChatEvent]) -> int:
        n = len(s)
        if self._after_call or self._tag_fresh:
            while i < n and s[i] in _SEPARATORS:
                i += 1
            if i == n:
                return n
            self._after_call = False
            if self._tag_fresh and not _is_call_start(s[i]):
                self._start_code(s[i])
                return i + 1
        # Right after <|python_tag|> a prefix that is not a call is code, not text: every
        # trigger is held there.
        pattern = (
            _TRIGGER_FRESH if self._tag_fresh else _TRIGGER_IN_TAG if self._bare_ok else _TRIGGER
        )
        m = pattern.search(s, i)
        if m is None:
            self._emit_text(s[i:], events)
            return n
        j = m.start()
        if j > i:
            # Look again from the trigger: the text may have ended a tag region.
            self._emit_text(s[i:j], events)
            return j
        if s[j] == "<":
            # A special token whole in this piece: take it at once (the same outcome as
            # reading it character by character).
            for token in _TOKENS:
                if s.startswith(token, j):
                    self._special_token(token, events)
                    return j + len(token)
        fast = _fast_head(s, j, self._bare())
        if fast is not None:
            end, verdict = fast
            self._start_body(s[j:end], verdict)
            if verdict[0] is _Kind.JSON or verdict[0] is _Kind.JSON_LIST:
                # A JSON call whole in this piece: the C decoder finds where it closes (the
                # same place `_scan` would: valid JSON has brackets only where they count
                # and no stop token outside its strings) and reads it in the same pass.
                try:
                    value, close = _raw_decode(s, j)
                except (StopIteration, ValueError, RecursionError):
                    return end
                self._held = [s[j:close]]
                self._depth, self._quote, self._escaped = 0, "", False
                self._body_done(events, value)
                return close
            return end
        self._mode = _Mode.HEAD
        self._head = s[j]
        return j + 1

    def _step_head(self, char: str, events: list[ChatEvent]) -> str:
        """Take one more character of a possible call prefix; return text to read again."""
        head = self._head + char
        verdict = _classify_head(head, self._bare())
        if verdict is None:
            if len(head) > _MAX_HEAD:
                verdict = False
            else:
                self._head = head
                return ""
        if verdict is False:
            if self._tag_fresh:
                self._start_code(head)
                return ""
            self._mode = _Mode.TEXT
            if head[0] not in "{[<`" and len(head) > 1:
                # A word that is not a built-in call: out whole (once text is out, nothing
                # inside a word can start a call); only its last character is read again.
                self._emit_text(head[:-1], events)
                return head[-1]
            self._emit_text(head[0], events)
            return head[1:]
        if isinstance(verdict, str):
            self._mode = _Mode.TEXT
            self._head = ""
            self._special_token(verdict, events)
            return ""
        self._start_body(head, verdict)
        return ""

    def _start_body(self, head: str, verdict: tuple[_Kind, int, bool, str]) -> None:
        kind, start, fenced, name = verdict
        self._mode = _Mode.BODY
        self._kind = kind
        self._fenced = fenced or self._fence_open
        self._fence_open = False
        self._function_name = name
        self._body_start = start
        self._held = [head]
        self._head = ""
        self._depth = 0
        self._quote = ""
        self._escaped = False
        self._recent = ""
        self._scan(head, start, len(head))

    def _bare(self) -> str:
        if self._in_tag:
            return "any"
        return "builtin" if self._bare_ok else ""

    def _special_token(self, token: str, events: list[ChatEvent]) -> None:
        if token == PYTHON_TAG:
            self._tag_fresh = self._in_tag = self._bare_ok = True
        else:
            self._stop_seen = token
            self._resolve_end(False, events, token)
            self._ended = True

    def _scan(self, s: str, i: int, end: int) -> int:
        """Follow brackets and strings in ``s[i:end]``; return where the body closed, or -1.

        Jumps from one bracket, quote or backslash to the next with a regex, so long
        strings cost little per character.
        """
        python = self._kind is _Kind.PY_LIST or self._kind is _Kind.PY_BARE
        outside = _PY_SPECIAL if python else _JSON_SPECIAL
        depth, quote, escaped = self._depth, self._quote, self._escaped
        while i < end:
            if escaped:
                escaped = False
                i += 1
                continue
            if quote:
                m = _STRING_SPECIAL[quote].search(s, i, end)
                if m is None:
                    break
                i = m.start()
                if s[i] == "\\":
                    escaped = True
                else:
                    quote = ""
                i += 1
                continue
            m = outside.search(s, i, end)
            if m is None:
                break
            i = m.start()
            char = s[i]
            if char in "{[(":
                depth += 1
            elif char in "}])":
                depth -= 1
                if depth == 0:
                    self._depth, self._quote, self._escaped = depth, quote, escaped
                    return i
            else:
                quote = char
            i += 1
        self._depth, self._quote, self._escaped = depth, quote, escaped
        return -1

    def _step_body(self, s: str, i: int, events: list[ChatEvent]) -> int:
        # Read up to the next '>' at most, so that a stop token's text is noticed.
        gt = s.find(">", i)
        end = len(s) if gt < 0 else gt + 1
        closed = self._scan(s, i, end)
        if closed >= 0:
            self._held.append(s[i : closed + 1])
            self._body_done(events)
            return closed + 1
        piece = s[i:end]
        self._held.append(piece)
        self._recent = (self._recent + piece)[-_LONGEST_STOP:]
        if gt >= 0 and not self._quote:
            stop = _ends_with_stop(self._recent)
            if stop:
                held = "".join(self._held)
                self._held = [held[: -len(stop)]]
                self._stop_seen = stop
                self._resolve_end(False, events, stop)
                self._ended = True
        return end

    def _body_done(self, events: list[ChatEvent], value: Any = _UNREAD) -> None:
        held = "".join(self._held)
        body = held[self._body_start :]
        kind = self._kind
        if kind is _Kind.FUNCTION:
            self._tail = ""
            self._mode = _Mode.TAIL
            self._held = [held]
            return
        calls = self._read_body(kind, body, value)
        if calls is None:
            if kind is _Kind.PY_BARE and self._tag_fresh:
                self._start_code(held)
                return
            self._mode = _Mode.TEXT
            self._tag_fresh = False
            self._emit_text(held, events)
            return
        if self._fenced:
            self._held = [held]
            self._pending_calls = calls
            self._tail = ""
            self._mode = _Mode.TAIL
            return
        self._mode = _Mode.TEXT
        self._emit_calls(calls, events)

    def _step_tail(self, char: str, events: list[ChatEvent]) -> str:
        """An optional closing marker (``</function>``, a closing fence) after a call's body."""
        tail = self._tail + char
        fenced = self._fenced
        marker = _FENCE if fenced else _FUNCTION_CLOSE
        stripped = tail.lstrip(_FENCE_SEPARATORS) if fenced else tail.lstrip()
        if marker.startswith(stripped) and len(tail) <= _MAX_HEAD:
            if stripped == marker:
                self._finish_tail(events)
                return ""
            self._tail = tail
            return ""
        self._finish_tail(events)
        if fenced and stripped[0] in "{[":
            # Another call in the same fence: it is fenced too, and the closing fence
            # comes after the last of them.
            self._fence_open = True
            return stripped
        return tail

    def _finish_tail(self, events: list[ChatEvent]) -> None:
        self._mode = _Mode.TEXT
        self._tail = ""
        if self._kind is _Kind.FUNCTION:
            body = "".join(self._held)[self._body_start :]
            self._emit_calls([self._make_call(self._function_name, raw=body)], events)
        else:
            self._emit_calls(self._pending_calls, events)
            self._pending_calls = []

    def _start_code(self, text: str) -> None:
        self._mode = _Mode.CODE
        self._tag_fresh = False
        self._held = [text]
        self._recent = text[-_LONGEST_STOP:]

    def _step_code(self, s: str, i: int, events: list[ChatEvent]) -> int:
        gt = s.find(">", i)
        end = len(s) if gt < 0 else gt + 1
        piece = s[i:end]
        self._held.append(piece)
        self._recent = (self._recent + piece)[-_LONGEST_STOP:]
        if gt >= 0:
            stop = _ends_with_stop(self._recent)
            if stop:
                code = "".join(self._held)
                self._held = [code[: -len(stop)]]
                self._stop_seen = stop
                self._resolve_end(False, events, stop)
                self._ended = True
        return end

    # -- a whole output at once ------------------------------------------------------------

    def _read_whole(self, raw: str, stop_sequence: str | None, truncated: bool) -> bool:
        """Read the common whole outputs in one pass, with the same outcome as feeding
        them (the split property tests compare the two): prose, then calls (JSON, a
        pythonic list, or a built-in call after ``<|python_tag|>``), or code after the tag,
        up to a stop token. Anything else returns False before changing any state, and the
        output is fed to the scanner instead."""
        at = raw.find("<|")
        start, tag, stop_seen = 0, False, None
        if at >= 0 and raw.startswith(PYTHON_TAG, at) and (at == 0 or raw[:at].isspace()):
            tag, start = True, at + len(PYTHON_TAG)
            at = raw.find("<|", start)
        if at >= 0:
            for token in STOP_TOKENS:
                if raw.startswith(token, at):
                    stop_seen = token
                    break
            else:
                return False
            region = raw[start:at]
        else:
            region = raw[start:] if start else raw
        if truncated and stop_seen is None:
            return False
        # The stop token that decides what code is: the one in the text, else the caller's.
        stop = stop_seen if stop_seen is not None else stop_sequence
        if tag:
            region = region.lstrip(_FENCE_SEPARATORS)
            if not region:
                return False
            first = region[0]
            if first in "{[":
                if _FAST_JSON_HEAD.match(region) or _FAST_PY_LIST_HEAD.match(region):
                    done = self._whole_calls(region, 0, tag=True)
                else:
                    # Not a call's usual opening: decide as the scanner would, a character
                    # at a time (``[1, 2]`` is code).
                    verdict: _HeadVerdict = None
                    k = 0
                    while verdict is None and k < min(len(region), _MAX_HEAD):
                        k += 1
                        verdict = _classify_head(region[:k], "any")
                    if verdict is not False:
                        return False
                    done = self._whole_code(region, stop)
            elif first in "<`":
                return False
            elif _NAME_START.match(first) is None:
                done = self._whole_code(region, stop)
            else:
                word = _BARE_WORD.match(region)
                assert word is not None
                end = word.end()
                if end >= min(len(region), _MAX_HEAD):
                    return False
                if region[end] == "(":
                    done = self._whole_bare_call(region, stop)
                else:
                    done = self._whole_code(region, stop)
        else:
            m = _WHOLE_TRIGGER.search(region)
            if m is None:
                text = region.strip()
                if text:
                    self._text.append(text)
                done = True
            elif region[m.start()] in "{[":
                done = self._whole_calls(region, m.start(), tag=False)
            else:
                return False
        if done:
            self._stop_seen = stop_seen
            self._ended = True
        return done

    def _whole_calls(self, region: str, j: int, *, tag: bool) -> bool:
        """Prose ``region[:j]`` (free of anything that could start a call), then JSON calls
        or one pythonic list, separated by ``;``, ``,`` or whitespace, to the end."""
        n = len(region)
        found: list[tuple[str, Mapping[str, Any] | None, str | None]] = []
        listed: list[PyCall] | None = None
        at = j
        while True:
            head = _FAST_JSON_HEAD.match(region, at)
            if head is not None and head.end() - at <= _MAX_HEAD:
                try:
                    value, end = _raw_decode(region, at)
                except (StopIteration, ValueError, RecursionError):
                    if found:
                        return False
                    return self._whole_bad_json(region, at, tag=tag)
                items = value if isinstance(value, list) else [value]
                if not items:
                    return False
                for item in items:
                    parts = self._json_parts(item)
                    if parts is None:
                        return False
                    found.append(parts)
            elif not found and _short_match(_FAST_PY_LIST_HEAD, region, at):
                if '"""' in region or "'''" in region:
                    # The scanner does not know triple quotes: find the end as it does.
                    close = _close_of(region, at, python=True)
                    if close < 0:
                        return False
                    end = close + 1
                    listed = parse_call_list(region[at:end])
                else:
                    # Without triple quotes the reader ends a valid list exactly where the
                    # scanner's brackets balance (strings end alike, brackets nest).
                    read = read_call_list(region, at)
                    listed, end = (None, 0) if read is None else read
                if listed is None or region[end:].strip(_FENCE_SEPARATORS):
                    return False
                break
            else:
                return False
            end = _SEPARATOR_RUN.match(region, end).end()  # type: ignore[union-attr]
            if end == n:
                break
            at = end
        prose = region[:j].strip()
        if prose:
            self._text.append(prose)
        if listed is not None:
            self._emit_calls([self._py_call(c) for c in listed], [])
        else:
            self._emit_calls([self._make_call(n_, a, raw=r) for n_, a, r in found], [])
        return True

    def _whole_bad_json(self, region: str, at: int, *, tag: bool) -> bool:
        """A JSON call head whose object does not decode: text, when it closes and only
        whitespace follows."""
        close = _close_of(region, at, python=False)
        if close < 0 or region[close + 1 :].strip():
            return False
        text = region[: close + 1].strip()
        if text:
            self._text.append(text)
        return True

    def _whole_bare_call(self, region: str, stop: str | None) -> bool:
        """``f(...)`` right after the tag: a call when it is one, else code."""
        close = _close_of(region, region.index("("), python=True)
        if close < 0 or region[close + 1 :].strip(_FENCE_SEPARATORS):
            return False
        calls = self._read_body(_Kind.PY_BARE, region[: close + 1])
        if calls is None:
            return self._whole_code(region, stop)
        self._emit_calls(calls, [])
        return True

    def _whole_code(self, code: str, stop: str | None) -> bool:
        """What follows the tag when it is not a call (as `_resolve_end` reads CODE)."""
        if code.strip() and (stop == _END_OF_MESSAGE or _is_python(code)):
            self._emit_calls([self._make_call("code_interpreter", {"code": code.strip()})], [])
        else:
            text = code.strip()
            if text:
                self._text.append(text)
        return True

    # -- the end of the output -------------------------------------------------------------

    def _resolve_end(
        self, truncated: bool, events: list[ChatEvent], stop: str | None = None
    ) -> None:
        """Settle whatever is held when the output ends (with the stop token ``stop``)."""
        while self._mode is _Mode.HEAD:
            head = self._head
            self._head = ""
            if self._tag_fresh:
                self._start_code(head)
                break
            self._mode = _Mode.TEXT
            self._emit_text(head[0], events)
            self._run(head[1:], events)
        mode = self._mode
        self._mode = _Mode.TEXT
        if mode is _Mode.BODY:
            held = "".join(self._held)
            if truncated:
                self._partial = held
            elif self._tag_fresh and stop == _END_OF_MESSAGE and self._kind in _PY_KINDS:
                # Unclosed Python right after <|python_tag|>, and the model waits for a
                # result: code (see the CODE case below).
                self._emit_calls(
                    [self._make_call("code_interpreter", {"code": held.strip()})], events
                )
            else:
                self._emit_text(held, events)
        elif mode is _Mode.TAIL:
            self._finish_tail(events)
        elif mode is _Mode.CODE:
            code = "".join(self._held)
            if truncated:
                self._partial = code
            elif code.strip() and (stop == _END_OF_MESSAGE or _is_python(code)):
                # Ending at <|eom_id|>, the model waits for the code's result: what follows
                # <|python_tag|> is code for code_interpreter even when it does not parse,
                # as llama-models' ChatFormat reads it (decode_assistant_message_from_content).
                self._emit_calls(
                    [self._make_call("code_interpreter", {"code": code.strip()})], events
                )
            else:
                self._emit_text(code, events)
        self._held = []

    # -- what a body says ----------------------------------------------------------------

    def _read_body(self, kind: _Kind, body: str, value: Any = _UNREAD) -> list[ToolCall] | None:
        """The calls ``body`` makes, or None if it is not calls (``value``: the body's JSON
        when it was decoded already)."""
        if kind is _Kind.JSON or kind is _Kind.JSON_LIST:
            if value is _UNREAD:
                try:
                    value = json.loads(body)
                except (ValueError, RecursionError):
                    return None
            items = value if isinstance(value, list) else [value]
            if not items:
                return None
            json_calls: list[ToolCall] = []
            for item in items:
                call = self._json_call(item)
                if call is None:
                    return None
                json_calls.append(call)
            return json_calls
        if kind is _Kind.PY_LIST:
            listed = parse_call_list(body)
            if listed is None:
                return None
            return [self._py_call(c) for c in listed]
        bare = parse_call(body)
        if bare is None:
            return None
        name = _builtin_name(bare.name)
        if name is None and (bare.name not in self._tools or bare.name == "code_interpreter"):
            return None  # a plain Python call: code for code_interpreter
        return [self._py_call(bare)]

    def _json_call(self, value: Any) -> ToolCall | None:
        parts = self._json_parts(value)
        if parts is None:
            return None
        return self._make_call(*parts[:2], raw=parts[2])

    def _json_parts(self, value: Any) -> tuple[str, Mapping[str, Any] | None, str | None] | None:
        """The name, arguments and argument text of the JSON call ``value``, or None when it
        is not a call (no id is taken: a whole parse checks every call before making any)."""
        if not isinstance(value, dict):
            return None
        function = value.get("function")
        if isinstance(function, dict) and value.keys() <= _WRAPPER_FIELDS:
            value = function
        name = value.get("name")
        if (
            not isinstance(name, str)
            or not _NAME.fullmatch(name)
            or not value.keys() <= _CALL_FIELDS
        ):
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
            try:
                decoded = json.loads(arguments)
            except ValueError:
                return name, None, arguments
            if isinstance(decoded, dict):
                return name, decoded, arguments
            return name, None, arguments
        if isinstance(arguments, dict):
            return name, arguments, None
        return name, None, json.dumps(arguments, ensure_ascii=False)

    def _py_call(self, call: PyCall) -> ToolCall:
        name = _builtin_name(call.name) or call.name
        arguments = dict(call.kwargs)
        if call.args:
            tool = self._tools.get(name) or BUILTIN_TOOLS.get(name)
            properties = list(tool.parameters.get("properties", {})) if tool else []
            names = [p for p in properties if p not in arguments]
            if len(call.args) > len(names):
                # Positional arguments nobody can name: keep the text, show the problem.
                return self._make_call(name, raw=call.raw_args)
            arguments = dict(zip(names, call.args, strict=False)) | arguments
        return self._make_call(name, arguments)

    def _make_call(
        self, name: str, arguments: Mapping[str, Any] | None = None, *, raw: str | None = None
    ) -> ToolCall:
        call_id = self._ids()
        if arguments is None:
            assert raw is not None
            return ToolCall.from_raw(call_id, name, raw)
        if raw is None:
            raw = _encode_json(arguments)
        return _tool_call(call_id, name, dict(arguments), raw)

    # -- output ----------------------------------------------------------------------------

    def _emit_text(self, text: str, events: list[ChatEvent]) -> None:
        if not self._started_content:
            text = text.lstrip()
            if not text:
                return
            self._started_content = True
        core = text.rstrip()
        if not core:
            self._pending_ws.append(text)
            return
        if self._pending_ws:
            out = "".join(self._pending_ws) + core
            self._pending_ws = []
        else:
            out = core
        if len(core) != len(text):
            self._pending_ws.append(text[len(core) :])
        if self._bare_ok or self._tag_fresh or self._in_tag or self._fence_open:
            self._in_tag = self._tag_fresh = self._bare_ok = self._fence_open = False
        self._text.append(out)
        if not self._quiet:
            events.append(_text_delta(out))

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
            if not self._quiet:
                events.append(ToolCallStarted(index, call.id, call.name))
                events.append(ToolCallDelta(index, call.raw_arguments))
                events.append(ToolCallDone(index, call))
        self._after_call = True
        self._bare_ok = True
        self._tag_fresh = False
        self._held = []


# -- heads: is this still the start of a call? ---------------------------------------------

_HeadVerdict = None | Literal[False] | str | tuple[_Kind, int, bool, str]
"""None: maybe (read on); False: not a call; a str: a special token; a tuple: a call has
certainly begun (its kind, where its bracketed body starts, fenced, the <function=> name)."""


_KEYS = "|".join(_CALL_KEYS)
_FAST_HEADS: tuple[tuple[re.Pattern[str], _Kind, bool], ...] = (
    (re.compile(r'\{\s*"(?:' + _KEYS + ')"'), _Kind.JSON, False),
    (re.compile(r'\[\s*\{\s*"(?:' + _KEYS + ')"'), _Kind.JSON_LIST, False),
    (re.compile(r"\[\s*[A-Za-z_][\w.\-]*\s*\("), _Kind.PY_LIST, False),
    (re.compile(r"<function=([\w.\-]+)>\s*\{"), _Kind.FUNCTION, False),
    (re.compile(r"[A-Za-z_][\w.\-]*\s*\("), _Kind.PY_BARE, True),
)


_FAST_JSON_HEAD = re.compile(r'\{\s*"(?:' + _KEYS + r')"|\[\s*\{\s*"(?:' + _KEYS + ')"')
_FAST_PY_LIST_HEAD = _FAST_HEADS[2][0]


# A whole string (``"(?:[^"\\]|\\.)*"`` unrolled: a run of plain characters per step),
# a quote that opens a string that never ends, or a bracket.
_JSON_PIECES = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|"|[{}\[\]()]', re.DOTALL)
_PY_PIECES = re.compile(
    r'"[^"\\]*(?:\\.[^"\\]*)*"|\'[^\'\\]*(?:\\.[^\'\\]*)*\'|["\']|[{}\[\]()]',
    re.DOTALL,
)


def _close_of(text: str, start: int, python: bool) -> int:
    """Where the bracket at ``text[start]`` closes, as `ToolCallStreamParser._scan` finds it
    (strings skipped whole, any closing bracket counts), or -1; for a whole text, where one
    regex step takes a whole string."""
    depth = 0
    for m in (_PY_PIECES if python else _JSON_PIECES).finditer(text, start):
        piece = m.group()
        if len(piece) == 1:
            if piece in "{[(":
                depth += 1
            elif piece in "}])":
                depth -= 1
                if depth == 0:
                    return m.start()
            else:
                return -1  # a string that does not end
    return -1


def _short_match(pattern: re.Pattern[str], s: str, at: int) -> bool:
    m = pattern.match(s, at)
    return m is not None and m.end() - at <= _MAX_HEAD


def _fast_head(s: str, j: int, bare: str) -> tuple[int, tuple[_Kind, int, bool, str]] | None:
    """The common call openings, whole in ``s`` at ``j``: the same verdict `_classify_head`
    reaches character by character, in one step (the bench's whole-output rows)."""
    for pattern, kind, needs_tag in _FAST_HEADS:
        if needs_tag and not bare:
            continue
        m = pattern.match(s, j)
        if m is not None and m.end() - j <= _MAX_HEAD:
            if needs_tag and bare == "builtin" and not _is_builtin_call_head(m.group()):
                return None
            if kind is _Kind.FUNCTION:
                return m.end(), (kind, m.end() - 1 - j, False, m.group(1))
            return m.end(), (kind, 0, False, "")
    return None


def _is_builtin_call_head(text: str) -> bool:
    name = text.rstrip("(").rstrip()
    return _builtin_name(name) is not None


def _is_call_start(char: str) -> bool:
    return char in "{[<`" or _NAME_START.match(char) is not None


def _classify_head(head: str, bare: str) -> _HeadVerdict:
    """Where ``head`` stands; ``bare`` says which bare ``f(...)`` calls may start here:
    ``"any"`` (after <|python_tag|>), ``"builtin"`` (``x.call(...)`` only) or ``""``."""
    first = head[0]
    if first == "{":
        return _object_head(head, 0, _Kind.JSON)
    if first == "[":
        return _list_head(head, 0)
    if first == "<":
        return _angle_head(head)
    if first == "`":
        return _fence_head(head)
    if bare:
        return _bare_head(head, builtin_only=bare == "builtin")
    return False


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i].isspace():
        i += 1
    return i


def _object_head(head: str, start: int, kind: _Kind, fenced: bool = False) -> _HeadVerdict:
    i = _skip_ws(head, start + 1)
    if i == len(head):
        return None
    if head[i] != '"':
        return False
    close = head.find('"', i + 1)
    if close < 0:
        partial = head[i + 1 :]
        return None if any(k.startswith(partial) for k in _CALL_KEYS) else False
    if head[i + 1 : close] in _CALL_KEYS:
        return (kind, start, fenced, "")
    return False


def _list_head(head: str, start: int, fenced: bool = False) -> _HeadVerdict:
    i = _skip_ws(head, start + 1)
    if i == len(head):
        return None
    if head[i] == "{":
        verdict = _object_head(head, i, _Kind.JSON_LIST, fenced)
        if isinstance(verdict, tuple):
            return (_Kind.JSON_LIST, start, fenced, "")
        return verdict
    m = _NAME.match(head, i)
    if m is None:
        return False
    j = _skip_ws(head, m.end())
    if j == len(head):
        return None
    if head[j] == "(":
        return (_Kind.PY_LIST, start, fenced, "")
    return False


def _bare_head(head: str, builtin_only: bool) -> _HeadVerdict:
    m = _NAME.match(head)
    if m is None:
        return False
    if m.end() == len(head):
        return None
    if builtin_only and _builtin_name(m.group()) is None:
        return False
    j = _skip_ws(head, m.end())
    if j == len(head):
        return None
    if head[j] == "(":
        return (_Kind.PY_BARE, 0, False, "")
    return False


def _angle_head(head: str) -> _HeadVerdict:
    for literal in _LITERALS:
        if literal == head and literal != _FUNCTION_OPEN:
            return literal
    if not head.startswith(_FUNCTION_OPEN):
        if any(literal.startswith(head) for literal in _LITERALS):
            return None
        return False
    rest_start = len(_FUNCTION_OPEN)
    m = _FUNCTION_NAME.match(head, rest_start)
    assert m is not None
    if m.end() == len(head):
        return None
    if head[m.end()] != ">" or m.end() == rest_start:
        return False
    i = _skip_ws(head, m.end() + 1)
    if i == len(head):
        return None
    if head[i] == "{":
        return (_Kind.FUNCTION, i, False, m.group())
    return False


def _fence_head(head: str) -> _HeadVerdict:
    if len(head) <= len(_FENCE):
        return None if _FENCE.startswith(head) else False
    if not head.startswith(_FENCE):
        return False
    m = _FENCE_LANG.match(head, len(_FENCE))
    assert m is not None
    i = m.end()
    if i == len(head):
        return None
    if i == len(_FENCE) and head[i] in "{[":
        # An inline fence, ```{"name": ...}```: held until the object shows what it is.
        if head[i] == "{":
            return _object_head(head, i, _Kind.JSON, fenced=True)
        return _list_head(head, i, fenced=True)
    if not head[i].isspace():
        return False
    i = _skip_ws(head, i)
    if i == len(head):
        return None
    if head[i] == "{":
        return _object_head(head, i, _Kind.JSON, fenced=True)
    if head[i] == "[":
        return _list_head(head, i, fenced=True)
    return False


# -- small helpers ---------------------------------------------------------------------------


def _builtin_name(name: str) -> str | None:
    """``brave_search.call`` -> ``brave_search``: the way Llama 3.1 calls built-in tools."""
    if name.endswith(".call") and len(name) > len(".call"):
        return name[: -len(".call")]
    return None


def _ends_with_stop(text: str) -> str | None:
    for token in STOP_TOKENS:
        if text.endswith(token):
            return token
    return None


def _is_python(code: str) -> bool:
    """Whether ``code`` parses as Python (it is parsed, never run)."""
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def parse_output(
    raw: str,
    *,
    tools: Sequence[Tool] | None = None,
    stop_sequence: str | None = None,
    truncated: bool = False,
    ids: Callable[[], str] | None = None,
) -> ParsedOutput:
    """Read a whole raw Llama 3.x output: its text, its tool calls and how it ended.

    Args:
        raw: the model's text, special tokens included as text (``<|python_tag|>``, and a
            final ``<|eom_id|>`` / ``<|eot_id|>`` or not).
        tools: the tools the request offered (calls to others are listed as unknown), or
            None when that is not known.
        stop_sequence: the stop token that ended the output, when the caller knows it.
        truncated: the output was cut off by the token limit.
        ids: where tool-call ids come from (see `sequential_ids`).
    """
    parser = ToolCallStreamParser(tools, ids=ids)
    parser._quiet = True
    if not isinstance(raw, str):
        raise InputError(f"the parser reads text (str), got {type(raw).__name__}")
    if not parser._read_whole(raw, stop_sequence, truncated):
        parser.feed(raw)
    parser.finish(stop_sequence, truncated=truncated)
    return parser.result()
