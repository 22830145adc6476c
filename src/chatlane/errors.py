"""Every failure chatlane raises, in one tree.

```
ChatlaneError
├── InputError (also a ValueError)        the caller handed in something unusable
│   ├── MessageError                      a role that is not one, bad content, bad message order
│   ├── ImageError                        an image that cannot be read or has an unknown type
│   └── SchemaError                       a tool or response schema that cannot be used
├── ParseError (also a ValueError)        what a server or model produced cannot be read
│   └── StructuredOutputError             the output does not validate against response_format
├── ToolError                             running a tool failed (the agent loop)
│   └── SandboxUnavailable                the host cannot isolate code_interpreter's code
├── AgentError (in chatlane.agent)        a run of the agent loop could not go on; has .result
├── EngineError                           the embedded engine cannot load or run a model
├── TokenizerNotFound                     a format's tokenizer or vocabulary file was not found
├── StoreError (in chatlane.store)        the conversation log cannot be read or written
├── TransportError                        the request did not complete
│   ├── ConnectError                      no connection could be made
│   ├── TimeoutException                  connect timeout, idle stream, or total deadline
│   ├── StreamInterrupted                 a stream ended or broke before it said it was done;
│   │                                     has .partial
│   └── UnexpectedResponse (also a ParseError)  a 200 that is not the answer asked for (an HTML
│                                         page, a stream closed right after its headers)
└── APIStatusError                        the server answered with an HTTP error status
    ├── BadRequest                        400, 422
    ├── AuthenticationError               401, 403
    ├── PaymentRequired                   402: quota used up, or payment needed
    ├── NotFound                          404
    ├── RequestTimeout                    408 (and 504, below)
    ├── RateLimited                       429
    └── ServerError                       5xx
        ├── Overloaded                    503
        └── GatewayTimeout (also a RequestTimeout)  504
```

`STATUS_ERRORS` is the one table from status to class (`status_error_class` reads it);
`chatlane.backends.transport` builds every status error, in-band ones too, from it.

`TimeoutError` is the old name of `TimeoutException` (it shadowed the builtin); it stays as
a deprecated alias for one release and warns when used.

Messages never contain API keys (`redact_error` masks them in everything an error carries);
errors that concern a response carry what was received so that nothing is lost.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chatlane.response import ChatResponse

__all__ = [
    "APIStatusError",
    "AuthenticationError",
    "BadRequest",
    "ChatlaneError",
    "ConnectError",
    "EngineError",
    "GatewayTimeout",
    "ImageError",
    "InputError",
    "MessageError",
    "NotFound",
    "Overloaded",
    "ParseError",
    "PaymentRequired",
    "RateLimited",
    "RequestTimeout",
    "SandboxUnavailable",
    "SchemaError",
    "ServerError",
    "StreamInterrupted",
    "StructuredOutputError",
    "TimeoutException",
    "ToolError",
    "TransportError",
    "UnexpectedResponse",
]


class ChatlaneError(Exception):
    """The base of every error chatlane raises."""


class InputError(ChatlaneError, ValueError):
    """The caller handed in something chatlane cannot use."""


class MessageError(InputError):
    """A message is malformed: an unknown role, unusable content, or a bad message order."""


class ImageError(InputError):
    """An image cannot be read, or its media type is not one chatlane knows."""


class SchemaError(InputError):
    """A tool's parameters or a response format is not a usable JSON schema."""


class ParseError(ChatlaneError, ValueError):
    """What a server or a model produced cannot be read.

    Attributes:
        text: the text that could not be read, kept whole.
    """

    def __init__(self, message: str, *, text: str | None = None) -> None:
        super().__init__(message)
        self.text = text


class StructuredOutputError(ParseError):
    """The model's output does not parse or validate against the requested response format.

    Attributes:
        text: the model's output, kept whole.
        errors: the validation errors, as pydantic reports them (or a one-item list).
    """

    def __init__(
        self, message: str, *, text: str | None = None, errors: list[Any] | None = None
    ) -> None:
        super().__init__(message, text=text)
        self.errors: list[Any] = errors or []


class ToolError(ChatlaneError):
    """Running a tool failed."""


class SandboxUnavailable(ToolError):
    """The host cannot give the code sandbox the isolation asked for; says what is missing."""


class EngineError(ChatlaneError):
    """The embedded engine cannot load or run a model (missing, corrupt or unknown GGUF)."""


class TokenizerNotFound(ChatlaneError):
    """A prompt format's tokenizer or vocabulary file was not found (the message says where
    chatlane looked and how to point it at one)."""


class TransportError(ChatlaneError):
    """The request did not complete."""


class ConnectError(TransportError):
    """No connection could be made to the server."""


class TimeoutException(TransportError):
    """A connect timeout, an idle stream, or the total deadline ran out.

    Attributes:
        kind: "connect", "read", "idle" or "deadline".
    """

    def __init__(self, message: str, *, kind: str = "read") -> None:
        super().__init__(message)
        self.kind = kind


class StreamInterrupted(TransportError):
    """A stream ended before the server said the answer was done: the connection broke after
    events arrived, or the body ended with no finish reason (a cut-off answer is never passed
    off as a complete one; ``accept_incomplete=True`` returns it instead of raising).

    Attributes:
        partial: everything received before the break (text, finished tool calls, usage),
            accumulated into a response whose finish reason is ``incomplete``.
    """

    def __init__(self, message: str, *, partial: ChatResponse) -> None:
        super().__init__(message)
        self.partial = partial


class UnexpectedResponse(TransportError, ParseError):
    """The server answered 200 with something that is not the answer asked for: an HTML page
    (a proxy's login or error page), or a stream that closed right after its headers.

    Attributes:
        content_type: the response's ``Content-Type`` (``""`` when it sent none).
        head: the first bytes of the body, as text (``""`` when there were none).
    """

    def __init__(self, message: str, *, content_type: str = "", head: str = "") -> None:
        ParseError.__init__(self, message, text=head)
        self.content_type = content_type
        self.head = head


class APIStatusError(ChatlaneError):
    """The server answered with an HTTP error status.

    Attributes:
        status_code: the HTTP status.
        body: the response body as text.
        error: the parsed ``{"error": ...}`` object (or the parsed body) when it was JSON.
        request_id: the server's request id header, when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: str = "",
        error: Any = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body
        self.error = error
        self.request_id = request_id


class BadRequest(APIStatusError):
    """400 or 422: the server rejected the request."""


class AuthenticationError(APIStatusError):
    """401 or 403: the credentials are missing, wrong, or not allowed."""


class NotFound(APIStatusError):
    """404: no such endpoint or model."""


class RateLimited(APIStatusError):
    """429: too many requests."""


class PaymentRequired(APIStatusError):
    """402: the account's quota is used up, or the request needs payment."""


class RequestTimeout(APIStatusError):
    """408 (the server gave up waiting for the request) or 504 (a gateway gave up waiting for
    the server)."""


class ServerError(APIStatusError):
    """5xx: the server failed."""


class Overloaded(ServerError):
    """503: the server is overloaded or down for maintenance; retrying later may work."""


class GatewayTimeout(ServerError, RequestTimeout):
    """504: a gateway in front of the model server gave up waiting for it."""


STATUS_ERRORS: Mapping[int, type[APIStatusError]] = {
    400: BadRequest,
    401: AuthenticationError,
    402: PaymentRequired,
    403: AuthenticationError,
    404: NotFound,
    408: RequestTimeout,
    422: BadRequest,
    429: RateLimited,
    503: Overloaded,
    504: GatewayTimeout,
}
"""The one table from an HTTP status to its error class (other 5xx: `ServerError`; other
statuses: `APIStatusError`)."""


def status_error_class(status: int) -> type[APIStatusError]:
    """The error class for an HTTP error status, from `STATUS_ERRORS`."""
    cls = STATUS_ERRORS.get(status)
    if cls is not None:
        return cls
    return ServerError if status >= 500 else APIStatusError


def _redact_value(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret and secret in value:
                value = value.replace(secret, "***")
        return value
    if isinstance(value, Mapping):
        return {_redact_value(k, secrets): _redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v, secrets) for v in value)
    return value


def redact_error(error: BaseException, secrets: tuple[str, ...]) -> BaseException:
    """Mask each of ``secrets`` in everything ``error`` carries (its message, ``.body``,
    ``.error``, ``.text``, ``.head``, ``.request_id``, and its cause's message); returns it.

    A server may echo the API key back anywhere (an error body, an in-band error event, a
    proxy's page), so every error chatlane raises from a call passes through here.
    """
    if not any(secrets):
        return error
    error.args = tuple(_redact_value(a, secrets) for a in error.args)
    for name in ("body", "error", "text", "head", "request_id"):
        if hasattr(error, name):
            value = getattr(error, name)
            redacted = _redact_value(value, secrets)
            if redacted is not value:
                setattr(error, name, redacted)
    notes = getattr(error, "__notes__", None)
    if notes:
        error.__notes__ = [_redact_value(n, secrets) for n in notes]
    cause = error.__cause__ or error.__context__
    if cause is not None and cause is not error and isinstance(cause, ChatlaneError):
        redact_error(cause, secrets)
    return error


def __getattr__(name: str) -> Any:
    if name == "TimeoutError":
        warnings.warn(
            "chatlane.errors.TimeoutError is deprecated (it shadows the builtin); use "
            "chatlane.TimeoutException",
            DeprecationWarning,
            stacklevel=2,
        )
        return TimeoutException
    raise AttributeError(f"module 'chatlane.errors' has no attribute {name!r}")
