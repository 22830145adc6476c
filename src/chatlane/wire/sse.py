"""A Server-Sent-Events decoder that follows the WHATWG specification.

Bytes go in as they arrive from the network (split anywhere, even inside a UTF-8 character or
between the CR and LF of a line end); complete events come out. What the decoder follows
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):

- lines end with CR, LF or CRLF; a leading byte-order mark is dropped;
- a line starting with ``:`` is a comment; ``field:value`` drops one space after the colon, so
  ``data:x`` and ``data: x`` are the same; a line without a colon is a field with an empty value;
- ``data`` lines of one event are joined with ``\\n``; a blank line ends the event; an event
  without data is not dispatched;
- ``event`` sets the event's type (``message`` when absent); ``id`` sets the last event id and ``retry``
  the reconnection time, both carried over to later events (ids containing NUL and retries that
  are not all digits are ignored);
- unknown fields are ignored.

One deliberate leniency: the specification drops an event that the stream ends without a blank
line after. Servers that close the connection right after their last ``data:`` line exist, and
dropping their last event would lose data, so `SSEDecoder.finish` delivers it.

OpenAI-compatible servers end a stream with ``data: [DONE]``; the decoder passes it on as an
ordinary event, and `ServerSentEvent.done` tells it apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chatlane.errors import ParseError

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "SSEDecoder", "ServerSentEvent"]

_LINE_ENDS = (b"\n", b"\r")

DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024
"""The largest event (its lines together) a decoder accepts by default: 16 MiB."""


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One event of a Server-Sent-Events stream."""

    event: str = "message"
    """The event type (``message`` unless the server named one with ``event:``)."""
    data: str = ""
    """The event's data: its ``data:`` lines joined with newlines."""
    id: str | None = None
    """The last event id the stream set, if any."""
    retry: int | None = None
    """The reconnection time in milliseconds the stream last asked for with ``retry:``."""

    @property
    def done(self) -> bool:
        """Whether this is the ``[DONE]`` sentinel that ends an OpenAI-compatible stream."""
        return self.data == "[DONE]"

    def json(self) -> Any:
        """The event's data parsed as JSON; a `ParseError` that keeps the data when it is not."""
        try:
            return json.loads(self.data)
        except ValueError as e:
            raise ParseError(
                f"a server-sent event's data is not JSON ({e}): {self.data[:200]!r}",
                text=self.data,
            ) from e


class SSEDecoder:
    """Turns a byte stream into `ServerSentEvent`s: `feed` bytes as they come, then `finish`.

    A line that arrives in many pieces is kept as a list of pieces and joined once, when its end
    arrives (linear time, however it is split). ``max_event_bytes`` caps one event (its lines
    together): a server sending more raises `ParseError` rather than filling memory.
    """

    __slots__ = (
        "_data",
        "_event",
        "_event_bytes",
        "_has_data",
        "_last_id",
        "_max",
        "_pending",
        "_pending_bytes",
        "_retry",
        "_skip_lf",
        "_started",
    )

    def __init__(self, max_event_bytes: int | None = DEFAULT_MAX_EVENT_BYTES) -> None:
        if max_event_bytes is not None and (
            not isinstance(max_event_bytes, int) or max_event_bytes <= 0
        ):
            from chatlane.errors import InputError

            raise InputError(
                f"max_event_bytes must be a positive int or None, got {max_event_bytes!r}"
            )
        self._max = max_event_bytes
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._event_bytes = 0
        self._skip_lf = False
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self._has_data = False
        self._last_id: str | None = None
        self._retry: int | None = None

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Decode the next bytes; return the events they complete (often none or one)."""
        if not data:
            return []
        if self._skip_lf:
            # The previous piece ended with CR: an LF now is the second half of a CRLF.
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
                if not data:
                    return []
        if b"\n" not in data and b"\r" not in data:
            # No line ends here: keep the piece for later (joined once, at the line's end).
            self._pending.append(data)
            self._pending_bytes += len(data)
            self._check_size(self._pending_bytes)
            return []
        if self._pending:
            self._pending.append(data)
            data = b"".join(self._pending)
            self._pending = []
            self._pending_bytes = 0
        lines = data.splitlines(keepends=True)
        last = lines[-1]
        if last.endswith(_LINE_ENDS):
            self._skip_lf = last.endswith(b"\r")
        else:
            tail = lines.pop()
            self._pending = [tail]
            self._pending_bytes = len(tail)
        events: list[ServerSentEvent] = []
        for line in lines:
            line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def finish(self) -> list[ServerSentEvent]:
        """The end of the stream: deliver what is left (see the module docstring)."""
        events: list[ServerSentEvent] = []
        if self._pending:
            line = b"".join(self._pending)
            self._pending = []
            self._pending_bytes = 0
            event = self._line(line)
            if event is not None:
                events.append(event)
        event = self._line(b"")
        if event is not None:
            events.append(event)
        self._skip_lf = False
        return events

    def _check_size(self, size: int) -> None:
        if self._max is not None and self._event_bytes + size > self._max:
            self._pending = []
            self._pending_bytes = 0
            raise ParseError(
                f"a server-sent event is larger than the limit of {self._max} bytes "
                "(max_event_bytes); the stream was stopped there"
            )

    def _line(self, raw: bytes) -> ServerSentEvent | None:
        if not raw:
            self._event_bytes = 0
            return self._dispatch()
        self._check_size(len(raw))
        self._event_bytes += len(raw)
        # Bytes split inside a UTF-8 character were joined in the buffer; CR and LF never
        # occur inside a multi-byte UTF-8 sequence, so a whole line decodes cleanly.
        line = raw.decode("utf-8", errors="replace")
        if not self._started:
            self._started = True
            if line.startswith("\ufeff"):
                line = line[1:]
                if not line:
                    return None
        if line.startswith("data:"):
            # The common case first: OpenAI-compatible streams are nearly all data lines.
            value = line[6:] if line.startswith("data: ") else line[5:]
            self._data.append(value)
            self._has_data = True
            return None
        if line[0] == ":":
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        self._started = True
        if not self._has_data:
            self._event = ""
            return None
        data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
        event = ServerSentEvent(self._event or "message", data, self._last_id, self._retry)
        self._data = []
        self._has_data = False
        self._event = ""
        return event
