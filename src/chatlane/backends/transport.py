"""`Transport`: the one place chatlane opens HTTP connections (on httpx).

It offers generic operations, each with a sync and an async twin, for every backend that talks
to a server (chat endpoints, raw completion endpoints):

- `post_json` / `apost_json`: post a JSON body, return the decoded JSON answer;
- `stream` / `astream`: post a JSON body and iterate what a decoder makes of the response body;
  `stream_sse` / `astream_sse` iterate Server-Sent Events, `stream_json` / `astream_json` the
  JSON payloads of those events up to ``[DONE]`` (what OpenAI-style streams carry).

What it owns, so that no backend has to:

- **Retries** on connect errors, on a connection lost before the response body, and on 408,
  409, 429, 500, 502, 503 and 504: exponential backoff with jitter, honouring ``Retry-After``
  (seconds or an HTTP date), ``retry-after-ms`` and ``x-should-retry``. A call is retried only
  while no byte of a successful response body has been consumed: once a stream has begun, a
  failure is raised, never silently repeated.
- **Timeouts** (`Timeouts`): connect; read (waiting for a non-streamed answer); idle (the longest
  wait for the next piece of a stream, so a stalled stream fails fast); and a total deadline
  covering the whole call with its retries and backoff sleeps.
- **Errors**: every failure lands in the `chatlane.errors` tree: `ConnectError`,
  `TimeoutException` (``kind`` says which limit), `TransportError`, and `APIStatusError`
  subclasses carrying the status, the body, the parsed ``{"error": ...}`` object and the
  request id.
- **Secrets**: the API key is sent in a header and never appears in a repr, a log record or an
  error message (a server echoing it back in an error body gets it masked).

Options (headers, query parameters, timeouts, retry policy) are set per transport and can be
overridden per call.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import threading
import time
from collections.abc import AsyncGenerator, Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

from chatlane._version import __version__
from chatlane.errors import (
    APIStatusError,
    ChatlaneError,
    ConnectError,
    InputError,
    ParseError,
    TimeoutException,
    TransportError,
    UnexpectedResponse,
    redact_error,
    status_error_class,
)

if TYPE_CHECKING:
    import httpx

    from chatlane.wire.sse import ServerSentEvent

__all__ = [
    "USER_AGENT",
    "Decoder",
    "RetryPolicy",
    "Timeouts",
    "Transport",
    "in_band_error",
    "reported_error",
    "retry_after",
    "status_error",
]

log = logging.getLogger("chatlane.transport")

USER_AGENT = f"chatlane/{__version__}"
"""The ``User-Agent`` every request carries."""

T = TypeVar("T")

# Headers servers use for the id of a request (OpenAI, vLLM, Azure, Aleph Alpha's gateway).
_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "apim-request-id", "x-trace-id")


class Decoder(Protocol[T]):
    """Turns a response body, fed piece by piece, into items (e.g. Server-Sent Events)."""

    def feed(self, data: bytes) -> list[T]:  # pragma: no cover - a protocol
        """The items completed by this piece of the body."""
        ...

    def finish(self) -> list[T]:  # pragma: no cover - a protocol
        """The items left once the body has ended."""
        ...


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long a call may wait, in seconds (``None``: no limit).

    The defaults suit LLM servers: a non-streamed answer may take minutes to generate, while a
    stream that goes quiet for a minute has most likely stalled.
    """

    connect: float | None = 10.0
    """Opening the connection (TCP and TLS)."""
    read: float | None = 600.0
    """Waiting for the answer of a non-streamed call (headers, then each piece of the body)."""
    idle: float | None = 60.0
    """Waiting for the next piece of a stream (and for its headers and first piece)."""
    total: float | None = None
    """The deadline for the whole call, including retries and the waits between them.

    It is checked before each attempt and after each piece of a stream, and no single wait
    (connect, answer, next piece) is allowed longer than the time left when the attempt was
    sent: a stream that stalls late in a call may overrun it by at most that much, and never
    by more than ``idle``."""

    def __post_init__(self) -> None:
        for name in ("connect", "read", "idle", "total"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | float) or value <= 0):
                raise InputError(
                    f"Timeouts.{name} must be a positive number or None, got {value!r}"
                )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how often a failed call is tried again.

    The wait before retry ``n`` (counting from 0) is ``initial_backoff * 2**n``, capped at
    ``max_backoff``, less a random share of up to ``jitter`` (so that many clients do not retry in
    step). A server's ``Retry-After`` / ``retry-after-ms`` wins when present; one asking for more
    than ``max_retry_after`` seconds is not retried at all (the error is raised at once).
    """

    max_retries: int = 2
    """Retries after the first attempt (0 turns retrying off)."""
    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    jitter: float = 0.25
    """The largest share (0..1) taken off a computed wait at random."""
    max_retry_after: float = 60.0
    """The longest server-requested wait that is honoured."""
    statuses: frozenset[int] = field(
        default_factory=lambda: frozenset({408, 409, 429, 500, 502, 503, 504})
    )
    """The HTTP statuses worth retrying."""
    resume: bool = False
    """Continue a stream that broke after text arrived, exactly, where the backend can: a raw
    completion backend (`CompletionChat`) renders the same prompt with the text so far as the
    start of the answer and goes on in one stream and one response (usage sums the attempts;
    `ChatResponse.resumed` and the log record it). Each resume counts against
    ``max_retries``. Where the backend cannot, the break raises `StreamInterrupted`."""

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise InputError(
                f"RetryPolicy.max_retries must be a non-negative int, got {self.max_retries!r}"
            )
        if not 0 <= self.jitter <= 1:
            raise InputError(f"RetryPolicy.jitter must be between 0 and 1, got {self.jitter!r}")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise InputError("RetryPolicy waits must not be negative")
        object.__setattr__(self, "statuses", frozenset(self.statuses))

    def backoff(self, retry: int) -> float:
        """The computed wait before retry number ``retry`` (0-based), jitter included."""
        wait = min(self.max_backoff, self.initial_backoff * 2.0 ** min(retry, 60))
        return wait * (1.0 - self.jitter * random.random())


def retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The wait a server asks for in ``retry-after-ms`` or ``Retry-After``, in seconds.

    ``Retry-After`` is either seconds or an HTTP date (RFC 9110, section 10.2.3); the
    ``retry-after-ms`` variant (milliseconds) is what OpenAI and Azure send.
    """
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            ms = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(ms) and ms >= 0:
                return ms / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        try:
            when = email.utils.mktime_tz(parsed)
        except (OverflowError, ValueError):
            return None
        return max(0.0, when - (time.time() if now is None else now))
    if not math.isfinite(seconds):
        return math.inf
    return max(0.0, seconds)


def _check_options(
    headers: Mapping[str, str] | None,
    params: Mapping[str, str] | None,
    timeouts: Timeouts | None,
    retry: RetryPolicy | None,
) -> None:
    """Clear errors for options of the wrong kind (rather than a TypeError deep in httpx)."""
    for name, mapping in (("headers", headers), ("params", params)):
        if mapping is None:
            continue
        if not isinstance(mapping, Mapping):
            raise InputError(f"{name} must be a dict of strings, got {type(mapping).__name__}")
        for key, value in mapping.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise InputError(
                    f"{name} must map strings to strings; {key!r} maps to a {type(value).__name__}"
                )
    if timeouts is not None and not isinstance(timeouts, Timeouts):
        raise InputError(
            f"timeouts must be a chatlane Timeouts, e.g. Timeouts(idle=30), got {timeouts!r}"
        )
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise InputError(
            f"retry must be a chatlane RetryPolicy, e.g. RetryPolicy(max_retries=3), got {retry!r}"
        )


def _merge_headers(headers: dict[str, str], extra: Mapping[str, str]) -> None:
    """Add ``extra`` to ``headers`` in place; a name given in any case replaces the old one."""
    for name, value in extra.items():
        lower = name.lower()
        for old in [k for k in headers if k.lower() == lower]:
            del headers[old]
        headers[name] = value


def _seconds(value: float | None) -> str:
    return "no limit" if value is None else f"{value:g} s"


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text


def status_error(
    status: int,
    body: str,
    *,
    request_id: str | None = None,
    reason: str = "",
    secrets: tuple[str, ...] = (),
) -> APIStatusError:
    """The chatlane error for an HTTP error status and its body.

    The body is parsed when it is JSON: ``error`` holds its ``"error"`` member (OpenAI's shape,
    also vLLM's and llama.cpp's), or the whole parsed body when it has none; the message quotes
    the server's own message. Any of ``secrets`` found in the body is masked.
    """
    body = _redact(body, secrets)
    if request_id:
        request_id = _redact(request_id, secrets)
    error: Any = None
    detail = ""
    try:
        parsed = json.loads(body) if body.strip() else None
    except ValueError:
        parsed = None
        detail = body.strip()[:500]
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed)
        if isinstance(error, dict):
            detail = str(error.get("message") or error.get("detail") or error.get("error") or "")
        elif isinstance(error, str):
            detail = error
        if not detail and isinstance(parsed.get("detail"), str):
            detail = parsed["detail"]  # FastAPI's shape (Aleph Alpha, llama_cpp.server)
        if not detail and isinstance(parsed.get("message"), str):
            detail = parsed["message"]
    elif parsed is not None:
        error = parsed
    cls = status_error_class(status)
    message = f"HTTP {status}{' ' + reason if reason else ''}"
    if detail:
        message += f": {detail}"
    if request_id:
        message += f" (request id {request_id})"
    return cls(message, status_code=status, body=body, error=error, request_id=request_id)


def reported_error(
    body: Any, *, request_id: str | None = None, secrets: tuple[str, ...] = ()
) -> APIStatusError:
    """The chatlane error for an error a server reports in a body it sent with status 200.

    Servers do that inside streams (vLLM and OpenAI send ``data: {"error": {...}}``) and some
    proxies in whole answers. The error's ``code``, when it is an HTTP status, picks the class;
    otherwise it is a `ServerError` with status 500.
    """
    if not isinstance(body, Mapping) or "error" not in body:
        body = {"error": body}
    error = body["error"]
    code = error.get("code") if isinstance(error, Mapping) else None
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    status = code if isinstance(code, int) and 400 <= code <= 599 else 500
    return status_error(
        status,
        json.dumps(body, ensure_ascii=False, default=str),
        request_id=request_id,
        secrets=secrets,
    )


class _JSONEvents:
    """A decoder: Server-Sent Events in, the JSON of each event's data out.

    Events without data are skipped; ``[DONE]`` ends the stream (anything after it is read, so
    the connection can be reused, and ignored); an ``error`` event raises its mapped error.
    """

    __slots__ = ("_done", "_secrets", "_sse")

    def __init__(self, secrets: tuple[str, ...], max_event_bytes: int | None) -> None:
        from chatlane.wire.sse import SSEDecoder

        self._sse = SSEDecoder(max_event_bytes)
        self._done = False
        self._secrets = secrets

    def feed(self, data: bytes) -> list[Any]:
        return self._values(self._sse.feed(data))

    def finish(self) -> list[Any]:
        return self._values(self._sse.finish())

    def _values(self, events: list[ServerSentEvent]) -> list[Any]:
        values = []
        for event in events:
            data = event.data
            if self._done or not data:
                continue
            if data == "[DONE]":
                self._done = True
                continue
            value = event.json()
            if event.event == "error" or in_band_error(value):
                raise reported_error(value, secrets=self._secrets)
            values.append(value)
        return values


def in_band_error(value: Any) -> bool:
    """Whether a JSON answer (or a stream's event) is an error the server sent with status 200.

    vLLM and OpenAI report failures mid-stream as ``data: {"error": {...}}``, llama.cpp's
    ``/completion`` the same, and some proxies answer whole requests like that; a chunk that
    carries choices is an answer, whatever else it has. This is the one place such errors are
    recognised (`stream_json` and `post_json` raise them through `reported_error`).
    """
    return type(value) is dict and value.get("error") is not None and not value.get("choices")


def _request_id(headers: Mapping[str, str]) -> str | None:
    for name in _REQUEST_ID_HEADERS:
        value = headers.get(name)
        if value:
            return value
    return None


def _feed(decoder: Decoder[T], chunk: bytes | None, attempt: _Attempt) -> list[T]:
    """The decoder's items for a piece (``None``: the end), its errors with the key masked."""
    try:
        return decoder.feed(chunk) if chunk is not None else decoder.finish()
    except ChatlaneError as e:
        redact_error(e, attempt.transport._secrets())
        raise


class _Attempt:
    """One call's plan: what to send, its limits, and its retry bookkeeping (sync and async)."""

    __slots__ = ("body", "deadline", "headers", "method", "params", "retries", "retry", "stream",
                 "timeouts", "transport", "url")  # fmt: skip

    def __init__(
        self,
        transport: Transport,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        *,
        stream: bool,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
        timeouts: Timeouts | None,
        retry: RetryPolicy | None,
    ) -> None:
        _check_options(headers, params, timeouts, retry)
        self.transport = transport
        self.method = method
        self.url = transport.url(path)
        self.stream = stream
        self.timeouts = timeouts or transport.timeouts
        self.retry = retry or transport.retry
        self.retries = 0
        hdrs = transport._base_headers(stream)
        if headers:
            _merge_headers(hdrs, headers)
        self.headers = hdrs
        merged = dict(transport.params)
        if params:
            merged.update(params)
        self.params = merged
        try:
            self.body = (
                None
                if body is None
                else json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
            )
        except (TypeError, ValueError) as e:
            raise InputError(f"the request body cannot be sent as JSON: {e}") from e
        total = self.timeouts.total
        self.deadline = None if total is None else time.monotonic() + total

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def httpx_timeout(self) -> httpx.Timeout:
        import httpx

        t = self.timeouts
        read = t.idle if self.stream else t.read
        remaining = self.remaining()
        if remaining is not None:
            remaining = max(remaining, 0.001)
            read = remaining if read is None else min(read, remaining)
        connect = t.connect
        if remaining is not None:
            connect = remaining if connect is None else min(connect, remaining)
        return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)

    def build(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        return client.build_request(
            self.method,
            self.url,
            content=self.body,
            headers=self.headers,
            params=self.params or None,
            timeout=self.httpx_timeout(),
        )

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise self.deadline_error()

    def deadline_error(self) -> TimeoutException:
        return TimeoutException(
            f"{self.method} {self.transport.url_for_messages(self.url)}: the total deadline of "
            f"{_seconds(self.timeouts.total)} ran out"
            + (
                f" after {self.retries} retr{'y' if self.retries == 1 else 'ies'}"
                if self.retries
                else ""
            ),
            kind="deadline",
        )

    def map_exception(self, exc: Exception, *, during_body: bool) -> Exception:
        """The chatlane error for an httpx failure."""
        import httpx

        where = f"{self.method} {self.transport.url_for_messages(self.url)}"
        if isinstance(exc, httpx.TimeoutException):
            if self.deadline is not None and time.monotonic() >= self.deadline - 0.005:
                return self.deadline_error()
            if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
                return TimeoutException(
                    f"{where}: no connection within {_seconds(self.timeouts.connect)}",
                    kind="connect",
                )
            if self.stream:
                return TimeoutException(
                    f"{where}: the stream was idle for more than {_seconds(self.timeouts.idle)}",
                    kind="idle",
                )
            return TimeoutException(
                f"{where}: no answer within {_seconds(self.timeouts.read)}", kind="read"
            )
        if isinstance(exc, httpx.ConnectError):
            return ConnectError(
                f"{where}: cannot connect: {_redact(str(exc), self.transport._secrets())}"
            )
        detail = _redact(str(exc) or type(exc).__name__, self.transport._secrets())
        if during_body:
            return TransportError(
                f"{where}: the connection broke while reading the response: {detail}"
            )
        return TransportError(f"{where}: the connection broke before the response: {detail}")

    def wait_for(self, error: Exception, headers: Mapping[str, str] | None) -> float | None:
        """How long to wait before retrying after ``error``, or None to give up."""
        policy = self.retry
        if self.retries >= policy.max_retries:
            return None
        if isinstance(error, APIStatusError):
            should = (headers or {}).get("x-should-retry")
            if should == "false":
                return None
            if should != "true" and error.status_code not in policy.statuses:
                return None
        elif isinstance(error, TimeoutException):
            # A server that is slow to answer is most likely working on the request: asking
            # again would pile up work (and cost), so only connect timeouts are retried.
            if error.kind != "connect":
                return None
        elif not isinstance(error, TransportError):
            return None
        asked = retry_after(headers) if headers is not None else None
        if asked is not None:
            if asked > policy.max_retry_after:
                return None
            wait = asked
        else:
            wait = policy.backoff(self.retries)
        remaining = self.remaining()
        if remaining is not None and wait >= remaining:
            return None
        return wait

    def note_retry(self, error: Exception, wait: float) -> None:
        self.retries += 1
        log.info(
            "retrying %s %s in %.2f s (retry %d of %d) after: %s",
            self.method,
            self.transport.url_for_messages(self.url),
            wait,
            self.retries,
            self.retry.max_retries,
            error,
        )

    def error_for(self, response: httpx.Response, body: bytes) -> APIStatusError:
        return status_error(
            response.status_code,
            body.decode("utf-8", "replace"),
            request_id=_request_id(response.headers),
            reason=response.reason_phrase,
            secrets=self.transport._secrets(),
        )

    def decode_json(self, response: httpx.Response, body: bytes) -> Any:
        """The JSON answer; an `UnexpectedResponse` for one that is not JSON, the mapped error
        for an error object sent with status 200."""
        secrets = self.transport._secrets()
        try:
            value = json.loads(body)
        except ValueError as e:
            raise self.unexpected(response, body, f"the answer is not JSON ({e})") from e
        if in_band_error(value):
            raise reported_error(value, request_id=_request_id(response.headers), secrets=secrets)
        return value

    def unexpected(self, response: httpx.Response, head: bytes, why: str) -> UnexpectedResponse:
        """The error for a 200 whose body is not what was asked for, naming its content type
        and first bytes."""
        secrets = self.transport._secrets()
        ctype = str(response.headers.get("content-type", ""))
        text = _redact(head[:_HEAD].decode("utf-8", "replace"), secrets)
        starts = f"it starts with {text!r}" if text else "its body was empty"
        return UnexpectedResponse(
            f"{self.method} {self.transport.url_for_messages(self.url)}: {why}; content type "
            f"{ctype or '(none)'}, {starts}",
            content_type=ctype,
            head=text,
        )

    def idle_error(self) -> TimeoutException:
        where = f"{self.method} {self.transport.url_for_messages(self.url)}"
        return TimeoutException(
            f"{where}: the stream sent no data for more than {_seconds(self.timeouts.idle)}",
            kind="idle",
        )

    def not_a_stream(self, response: httpx.Response, body: bytes) -> Exception:
        """The error for a stream call answered with one JSON document (often an error)."""
        text = body.decode("utf-8", "replace")
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and "error" in parsed:
            return reported_error(
                parsed, request_id=_request_id(response.headers), secrets=self.transport._secrets()
            )
        return ParseError(
            f"{self.method} {self.transport.url_for_messages(self.url)}: expected a stream, got "
            f"{response.headers.get('content-type', 'no content type')}: {text[:200]!r}",
            text=_redact(text, self.transport._secrets()),
        )


def _is_json_response(response: httpx.Response) -> bool:
    return _media_type(response) == "application/json"


def _media_type(response: httpx.Response) -> str:
    ctype = str(response.headers.get("content-type", ""))
    return ctype.split(";", 1)[0].strip().lower()


# How many bytes of an unexpected body an error quotes.
_HEAD = 200


class _StreamWatch:
    """A stream's bookkeeping: its first bytes (for errors), whether any data arrived, and the
    idle limit counted from the last piece that carried data.

    httpx's read timeout restarts on every byte, so a server sending SSE comments
    (``: keep-alive``) but no data would never trip it; this counts only pieces that the decoder
    turned into items.
    """

    __slots__ = ("attempt", "delivered", "head", "last_data")

    def __init__(self, attempt: _Attempt) -> None:
        self.attempt = attempt
        self.head = b""
        self.delivered = False
        self.last_data = time.monotonic()

    def seen(self, chunk: bytes) -> None:
        if len(self.head) < _HEAD:
            self.head += chunk[: _HEAD - len(self.head)]

    def fed(self, items: list[Any]) -> None:
        """After each piece (and after the consumer took its items)."""
        now = time.monotonic()
        if items:
            self.delivered = True
            self.last_data = now
        else:
            idle = self.attempt.timeouts.idle
            if idle is not None and now - self.last_data > idle:
                raise self.attempt.idle_error()
        self.attempt.check_deadline()

    def broke(self, response: httpx.Response, error: Exception) -> Exception:
        """The error for a connection lost while reading the stream: one closed right after its
        headers is an `UnexpectedResponse` (it sent nothing at all)."""
        if not self.head and type(error) is TransportError:
            return self.attempt.unexpected(
                response, b"", f"the stream closed right after its headers ({error})"
            )
        return error

    def ended(self, response: httpx.Response) -> None:
        if not self.delivered:
            raise self.attempt.unexpected(
                response, self.head, "the stream ended before any event arrived"
            )


class Transport:
    """A connection pool to one server, with retries, deadlines and error mapping.

    Args:
        base_url: the server's URL prefix (e.g. ``http://127.0.0.1:8080/v1``); call paths are
            joined to it.
        api_key: sent as ``Authorization: Bearer <key>`` (see ``auth_header``); never shown.
        headers: extra headers for every call (a call's own headers win).
        params: query parameters for every call (a call's own parameters win).
        timeouts: the default `Timeouts`.
        retry: the default `RetryPolicy`.
        max_connections: the pool's connection limit (per sync client and per event loop).
        max_keepalive: idle connections kept open for reuse.
        auth_header: the header the key goes in (Azure uses ``api-key``).
        auth_scheme: the prefix before the key (``"Bearer"``; ``""`` for none).
        http_client: an httpx.Client to use for sync calls (proxies, TLS settings, a mock
            transport); the caller keeps ownership and closes it.
        async_http_client: the same for async calls.
        max_event_bytes: the largest server-sent event accepted (by default 16 MiB); a
            larger one raises `ParseError`.

    Async connections belong to the event loop that opened them, so each event loop gets its
    own pool (e.g. each ``asyncio.run``); `aclose` closes the pool of the running loop.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        max_connections: int = 1000,
        max_keepalive: int = 100,
        auth_header: str = "Authorization",
        auth_scheme: str = "Bearer",
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
        max_event_bytes: int | None = None,
    ) -> None:
        from chatlane.wire.sse import DEFAULT_MAX_EVENT_BYTES, SSEDecoder

        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise InputError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        if api_key is not None and not isinstance(api_key, str):
            raise InputError(f"api_key must be a str, got {type(api_key).__name__}")
        _check_options(headers, params, timeouts, retry)
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key or None
        self.headers: dict[str, str] = dict(headers or {})
        self.params: dict[str, str] = dict(params or {})
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.max_connections = max_connections
        self.max_keepalive = max_keepalive
        self.auth_header = auth_header
        self.auth_scheme = auth_scheme
        self._client = http_client
        self._owns_client = http_client is None
        self._aclient = async_http_client
        self._owns_aclient = async_http_client is None
        self._aclient_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._parent: Transport | None = None
        self.max_event_bytes = (
            DEFAULT_MAX_EVENT_BYTES if max_event_bytes is None else max_event_bytes
        )
        SSEDecoder(self.max_event_bytes)  # checks the value

    # Configuration

    @property
    def has_api_key(self) -> bool:
        """Whether an API key is configured (the key itself is never exposed)."""
        return self._api_key is not None

    def with_options(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
    ) -> Transport:
        """A transport sharing this one's connections, with options replaced or added to.

        ``headers`` and ``params`` are added to this transport's own; closing the copy does
        not close the shared connections.
        """
        _check_options(headers, params, timeouts, retry)
        copy = Transport.__new__(Transport)
        for name in (
            "base_url", "_api_key", "max_connections", "max_keepalive", "auth_header",
            "auth_scheme", "_lock", "max_event_bytes",
        ):  # fmt: skip
            setattr(copy, name, getattr(self, name))
        copy.headers = {**self.headers, **(headers or {})}
        copy.params = {**self.params, **(params or {})}
        copy.timeouts = timeouts or self.timeouts
        copy.retry = retry or self.retry
        copy._client = None
        copy._aclient = None
        copy._owns_client = copy._owns_aclient = False
        copy._aclient_loop = None
        copy._parent = self._parent or self
        return copy

    def url(self, path: str) -> str:
        """The full URL of a call path (an absolute URL is kept as it is)."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def url_for_messages(self, url: str) -> str:
        return _redact(url, self._secrets())

    def _secrets(self) -> tuple[str, ...]:
        return (self._api_key,) if self._api_key else ()

    def _base_headers(self, stream: bool) -> dict[str, str]:
        headers = {
            "User-Agent": USER_AGENT,
            "Accept": "text/event-stream" if stream else "application/json",
            "Content-Type": "application/json",
        }
        if self._api_key:
            headers[self.auth_header] = (
                f"{self.auth_scheme} {self._api_key}" if self.auth_scheme else self._api_key
            )
        _merge_headers(headers, self.headers)
        return headers

    def __repr__(self) -> str:
        key = "'***'" if self._api_key else "None"
        return f"Transport(base_url={self.base_url!r}, api_key={key})"

    # Clients

    def _limits(self) -> httpx.Limits:
        import httpx

        return httpx.Limits(
            max_connections=self.max_connections, max_keepalive_connections=self.max_keepalive
        )

    def _sync_client(self) -> httpx.Client:
        if self._parent is not None:
            return self._parent._sync_client()
        client = self._client
        if client is None:
            import httpx

            with self._lock:
                client = self._client
                if client is None:
                    client = self._client = httpx.Client(limits=self._limits(), timeout=None)
        return client

    def _async_client(self) -> httpx.AsyncClient:
        if self._parent is not None:
            return self._parent._async_client()
        loop = asyncio.get_running_loop()
        client = self._aclient
        if client is not None and (not self._owns_aclient or self._aclient_loop is loop):
            return client
        import httpx

        # An httpx.AsyncClient's connections belong to the event loop that opened them, so
        # each loop (e.g. each asyncio.run) gets its own pool.
        client = httpx.AsyncClient(limits=self._limits(), timeout=None)
        self._aclient = client
        self._aclient_loop = loop
        return client

    def close(self) -> None:
        """Close the sync connections (async ones need `aclose`).

        The transport stays usable: a later call opens new connections.
        """
        if self._parent is not None:
            return
        client = self._client
        if client is not None and self._owns_client:
            self._client = None
            client.close()

    async def aclose(self) -> None:
        """Close the sync connections and those of the running event loop.

        The transport stays usable: a later call opens new connections. Async connections
        belong to the event loop that opened them, so close the transport (or use
        ``async with``) inside each event loop you used it in, e.g. in each ``asyncio.run``.
        """
        if self._parent is not None:
            return
        self.close()
        client = self._aclient
        if client is not None and self._owns_aclient:
            self._aclient = None
            if self._aclient_loop is asyncio.get_running_loop():
                await client.aclose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # Sync operations

    def post_json(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """Post ``body`` as JSON to ``path`` and return the decoded JSON answer.

        Raises:
            APIStatusError: the server answered with an error status (after any retries).
            TransportError: no connection, a broken connection, or a timeout.
            ParseError: the answer is not JSON.
        """
        return self._json("POST", path, body, headers, params, timeouts, retry)

    def get_json(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """GET ``path`` and return the decoded JSON answer (``/v1/models``); raises as
        `post_json` does."""
        return self._json("GET", path, None, headers, params, timeouts, retry)

    def _json(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
        timeouts: Timeouts | None,
        retry: RetryPolicy | None,
    ) -> Any:
        attempt = _Attempt(
            self, method, path, body, stream=False, headers=headers, params=params,
            timeouts=timeouts, retry=retry,
        )  # fmt: skip
        response = self._send(attempt)
        try:
            data = response.read()
        except Exception as e:
            raise self._body_error(attempt, e) from e
        finally:
            response.close()
        return attempt.decode_json(response, data)

    def stream(
        self,
        path: str,
        body: Mapping[str, Any],
        decoder: Decoder[T],
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
    ) -> Generator[T, None, None]:
        """Post ``body`` as JSON and iterate what ``decoder`` makes of the streamed answer.

        The request is sent when iteration starts; closing the iterator closes the connection.
        Failures before the body are retried; failures while it streams are raised (as
        `TransportError`, `TimeoutException` with kind ``idle`` or ``deadline``).
        """
        attempt = _Attempt(
            self, "POST", path, body, stream=True, headers=headers, params=params,
            timeouts=timeouts, retry=retry,
        )  # fmt: skip
        return self._stream(attempt, decoder)

    def stream_sse(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
    ) -> Generator[ServerSentEvent, None, None]:
        """`stream` with a Server-Sent-Events decoder: post JSON, iterate the events."""
        from chatlane.wire.sse import SSEDecoder

        return self.stream(
            path, body, SSEDecoder(self.max_event_bytes), headers=headers, params=params,
            timeouts=timeouts, retry=retry,
        )  # fmt: skip

    def stream_json(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
    ) -> Generator[Any, None, None]:
        """Post JSON and iterate the JSON payloads of the Server-Sent Events that answer.

        The stream ends at ``data: [DONE]`` (or at the end of the body); events without data are
        skipped; an ``event: error`` raises its mapped `APIStatusError`; data that is not JSON
        raises `ParseError` keeping the text.
        """
        return self.stream(
            path, body, _JSONEvents(self._secrets(), self.max_event_bytes), headers=headers,
            params=params, timeouts=timeouts, retry=retry,
        )  # fmt: skip

    def _stream(self, attempt: _Attempt, decoder: Decoder[T]) -> Generator[T, None, None]:
        response = self._send(attempt)
        try:
            if _is_json_response(response):
                try:
                    data = response.read()
                except Exception as e:
                    raise self._body_error(attempt, e) from e
                raise attempt.not_a_stream(response, data)
            watch = _StreamWatch(attempt)
            chunks = response.iter_bytes()
            if _media_type(response) == "text/html":
                head = b""
                for chunk in chunks:
                    head += chunk
                    if len(head) >= _HEAD:
                        break
                raise attempt.unexpected(response, head, "expected a stream, got a page")
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except Exception as e:
                    raise watch.broke(response, self._body_error(attempt, e)) from e
                watch.seen(chunk)
                items = _feed(decoder, chunk, attempt)
                if items:
                    yield from items
                watch.fed(items)
            items = _feed(decoder, None, attempt)
            if items:
                watch.delivered = True
                yield from items
            watch.ended(response)
        finally:
            response.close()

    def _send(self, attempt: _Attempt) -> httpx.Response:
        """Send until a success status arrives (headers only; the body is not read yet)."""
        client = self._sync_client()
        while True:
            attempt.check_deadline()
            headers: Mapping[str, str] | None = None
            try:
                response = client.send(attempt.build(client), stream=True)
            except Exception as e:
                error = self._send_error(attempt, e)
            else:
                if response.status_code < 400:
                    return response
                try:
                    body = response.read()
                except Exception:
                    body = b""
                finally:
                    response.close()
                error = attempt.error_for(response, body)
                headers = response.headers
            wait = attempt.wait_for(error, headers)
            if wait is None:
                raise error
            attempt.note_retry(error, wait)
            time.sleep(wait)

    @staticmethod
    def _send_error(attempt: _Attempt, e: Exception) -> Exception:
        import httpx

        if isinstance(e, httpx.InvalidURL | httpx.UnsupportedProtocol):
            return InputError(
                f"cannot request {attempt.transport.url_for_messages(attempt.url)}: {e}"
            )
        if isinstance(e, httpx.HTTPError):
            return attempt.map_exception(e, during_body=False)
        raise e

    @staticmethod
    def _body_error(attempt: _Attempt, e: Exception) -> Exception:
        import httpx

        if isinstance(e, httpx.HTTPError):
            return attempt.map_exception(e, during_body=True)
        return e

    # Async operations

    async def apost_json(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """The async twin of `post_json`."""
        attempt = _Attempt(
            self, "POST", path, body, stream=False, headers=headers, params=params,
            timeouts=timeouts, retry=retry,
        )  # fmt: skip
        response = await self._asend(attempt)
        try:
            data = await response.aread()
        except Exception as e:
            raise self._body_error(attempt, e) from e
        finally:
            await response.aclose()
        return attempt.decode_json(response, data)

    def astream(
        self,
        path: str,
        body: Mapping[str, Any],
        decoder: Decoder[T],
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
    ) -> AsyncGenerator[T, None]:
        """The async twin of `stream`; cancelling or closing it closes the connection."""
        attempt = _Attempt(
            self, "POST", path, body, stream=True, headers=headers, params=params,
            timeouts=timeouts, retry=retry,
        )  # fmt: skip
        return self._astream(attempt, decoder)

    def astream_sse(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
    ) -> AsyncGenerator[ServerSentEvent, None]:
        """The async twin of `stream_sse`."""
        from chatlane.wire.sse import SSEDecoder

        return self.astream(
            path, body, SSEDecoder(self.max_event_bytes), headers=headers, params=params,
            timeouts=timeouts, retry=retry,
        )  # fmt: skip

    def astream_json(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
    ) -> AsyncGenerator[Any, None]:
        """The async twin of `stream_json`."""
        return self.astream(
            path, body, _JSONEvents(self._secrets(), self.max_event_bytes), headers=headers,
            params=params, timeouts=timeouts, retry=retry,
        )  # fmt: skip

    async def _astream(self, attempt: _Attempt, decoder: Decoder[T]) -> AsyncGenerator[T, None]:
        response = await self._asend(attempt)
        try:
            if _is_json_response(response):
                try:
                    data = await response.aread()
                except Exception as e:
                    raise self._body_error(attempt, e) from e
                raise attempt.not_a_stream(response, data)
            watch = _StreamWatch(attempt)
            chunks = response.aiter_bytes()
            if _media_type(response) == "text/html":
                head = b""
                async for chunk in chunks:
                    head += chunk
                    if len(head) >= _HEAD:
                        break
                raise attempt.unexpected(response, head, "expected a stream, got a page")
            while True:
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as e:
                    raise watch.broke(response, self._body_error(attempt, e)) from e
                watch.seen(chunk)
                items = _feed(decoder, chunk, attempt)
                for item in items:
                    yield item
                watch.fed(items)
            items = _feed(decoder, None, attempt)
            if items:
                watch.delivered = True
            for item in items:
                yield item
            watch.ended(response)
        finally:
            await response.aclose()

    async def _asend(self, attempt: _Attempt) -> httpx.Response:
        client = self._async_client()
        while True:
            attempt.check_deadline()
            headers: Mapping[str, str] | None = None
            try:
                response = await client.send(attempt.build(client), stream=True)
            except Exception as e:
                error = self._send_error(attempt, e)
            else:
                if response.status_code < 400:
                    return response
                try:
                    body = await response.aread()
                except Exception:
                    body = b""
                finally:
                    await response.aclose()
                error = attempt.error_for(response, body)
                headers = response.headers
            wait = attempt.wait_for(error, headers)
            if wait is None:
                raise error
            attempt.note_retry(error, wait)
            await asyncio.sleep(wait)
