"""What every family's incremental output parser does around its own scanner.

A family's stream parser subclasses `ScanningParser` and writes only its syntax: `_run`
(scan one piece of output into events), `_end` (the output ended: settle what is held),
`_content` and, for a family that reasons apart, `_reasoning_text`. The bookkeeping the
`StreamParser` protocol asks for is here, once: feeding after the end is refused, a cut-off
output is told apart from one the model ended, calls the model began but that could not be
read are reported on `Finished` (and so on the `ChatResponse`), and `result` is the whole
parse, so that streaming equals parsing the whole output.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from chatlane.errors import InputError
from chatlane.events import ChatEvent, Finished
from chatlane.formats.base import ParsedOutput
from chatlane.response import FinishReason

if TYPE_CHECKING:
    from chatlane.messages import ToolCall

__all__ = ["ScanningParser", "parse_whole", "random_call_id", "sequential_ids"]


def random_call_id() -> str:
    """A fresh tool-call id (``call_`` and 24 hex digits), for formats whose calls carry
    none."""
    return "call_" + secrets.token_hex(12)


def sequential_ids(prefix: str = "call_") -> Callable[[], str]:
    """Ids ``call_0``, ``call_1``, ...: deterministic ids, so parses can be compared."""
    counter = itertools.count()
    return lambda: f"{prefix}{next(counter)}"


class ScanningParser:
    """The shared part of a family's stream parser (see the module docstring)."""

    def __init__(self, ids: Callable[[], str] | None) -> None:
        self._ids = ids or random_call_id
        self._calls: list[ToolCall] = []
        self._unknown: list[str] = []
        self._malformed: list[str] = []
        self._partial: str | None = None
        self._stop_seen: str | None = None
        """A stop token seen in the output itself (servers that return special tokens)."""
        self._stop: str | None = None
        self._ended = False
        self._finished = False
        self._truncated = False

    # -- the scanner's hooks -------------------------------------------------------------

    def _run(self, text: str, events: list[ChatEvent]) -> None:
        """Scan one piece of output, appending the events it completes."""
        raise NotImplementedError

    def _end(self, truncated: bool, events: list[ChatEvent]) -> None:
        """The output ended (cut off when ``truncated``): settle whatever is held."""
        raise NotImplementedError

    def _content(self) -> str:
        """The text read so far."""
        raise NotImplementedError

    def _reasoning_text(self) -> str:
        """The reasoning read so far ("" for a family that does not reason apart)."""
        return ""

    def _malformed_raw(self) -> tuple[str, ...]:
        """The raw text of each call that could not be read."""
        return tuple(self._malformed)

    # -- the StreamParser protocol -------------------------------------------------------

    def feed(self, text: str) -> list[ChatEvent]:
        """Take the next piece of raw output; return the events it completes."""
        if self._finished:
            raise RuntimeError("feed() after finish(): use a new parser for a new response")
        if not isinstance(text, str):
            raise InputError(f"the parser reads text (str), got {type(text).__name__}")
        events: list[ChatEvent] = []
        if text and not self._ended:
            self._run(text, events)
        return events

    def finish(
        self, stop_sequence: str | None = None, *, truncated: bool = False
    ) -> list[ChatEvent]:
        """The output ended (with that stop token, or cut off); return the remaining events,
        ending with `Finished`."""
        if self._finished:
            raise RuntimeError("finish() was already called")
        events: list[ChatEvent] = []
        self._truncated = truncated and self._stop_seen is None
        if not self._ended:
            self._end(self._truncated, events)
            self._ended = True
        self._finished = True
        self._stop = stop_sequence if stop_sequence is not None else self._stop_seen
        events.append(self._finished_event())
        return events

    def _finished_event(self) -> Finished:
        return Finished(
            self._finish_reason(), stop_sequence=self._stop, malformed_calls=self._malformed_raw()
        )

    def _finish_reason(self) -> FinishReason:
        if self._truncated:
            return FinishReason.LENGTH
        return FinishReason.TOOL_CALLS if self._calls else FinishReason.STOP

    def result(self) -> ParsedOutput:
        """Everything read so far (complete after `finish`)."""
        return ParsedOutput(
            content=self._content(),
            tool_calls=tuple(self._calls),
            stop_sequence=self._stop if self._finished else self._stop_seen,
            truncated=self._truncated,
            partial_call=self._partial,
            unknown_tools=tuple(self._unknown),
            reasoning=self._reasoning_text() or None,
            malformed_calls=self._malformed_raw(),
        )


def parse_whole(
    parser: ScanningParser, raw: str, stop_sequence: str | None, truncated: bool
) -> ParsedOutput:
    """A whole output read through ``parser``: the same code as streaming, fed at once."""
    parser.feed(raw)
    parser.finish(stop_sequence, truncated=truncated)
    return parser.result()
