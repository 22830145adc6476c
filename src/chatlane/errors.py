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
├── TokenizerNotFound (in chatlane.formats.llama3.tokenizer)  no Llama 3 tokenizer file was found
├── StoreError (in chatlane.store)        the conversation log cannot be read or written
├── TransportError                        the request did not complete
│   ├── ConnectError                      no connection could be made
│   ├── TimeoutError                      connect timeout, idle stream, or total deadline
│   └── StreamInterrupted                 a stream broke after delivering events; has .partial
└── APIStatusError                        the server answered with an HTTP error status
    ├── BadRequest                        400, 422
    ├── AuthenticationError               401, 403
    ├── NotFound                          404
    ├── RateLimited                       429
    └── ServerError                       5xx
```

Messages never contain API keys; errors that concern a response carry what was received
so that nothing is lost.
"""

from __future__ import annotations

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
    "ImageError",
    "InputError",
    "MessageError",
    "NotFound",
    "ParseError",
    "RateLimited",
    "SandboxUnavailable",
    "SchemaError",
    "ServerError",
    "StreamInterrupted",
    "StructuredOutputError",
    "TimeoutError",
    "ToolError",
    "TransportError",
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


class TransportError(ChatlaneError):
    """The request did not complete."""


class ConnectError(TransportError):
    """No connection could be made to the server."""


class TimeoutError(TransportError):
    """A connect timeout, an idle stream, or the total deadline ran out.

    Attributes:
        kind: "connect", "read", "idle" or "deadline".
    """

    def __init__(self, message: str, *, kind: str = "read") -> None:
        super().__init__(message)
        self.kind = kind


class StreamInterrupted(TransportError):
    """A stream broke after it had delivered events.

    Attributes:
        partial: everything received before the break (text, finished tool calls, usage),
            accumulated into a response whose finish reason is ``incomplete``.
    """

    def __init__(self, message: str, *, partial: ChatResponse) -> None:
        super().__init__(message)
        self.partial = partial


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


class ServerError(APIStatusError):
    """5xx: the server failed."""
