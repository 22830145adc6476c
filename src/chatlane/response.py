"""A chat response: the assistant's message, why it stopped, and what it cost."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from chatlane.messages import Message, Role

if TYPE_CHECKING:
    from chatlane.request import ResponseFormat

__all__ = ["ChatResponse", "Choice", "FinishReason", "Usage"]


@dataclass(frozen=True, slots=True)
class FinishReason:
    """Why generation stopped. The known reasons are class attributes; anything a server
    invents is kept as `FinishReason.other(value)` rather than failing.

    Compares equal to its string value: ``response.finish_reason == "stop"``.
    """

    value: str

    STOP: ClassVar[FinishReason]
    """The model finished its answer (or hit a stop sequence)."""
    LENGTH: ClassVar[FinishReason]
    """The token limit cut the answer off."""
    TOOL_CALLS: ClassVar[FinishReason]
    """The model called tools and waits for their results."""
    CONTENT_FILTER: ClassVar[FinishReason]
    """The server's content filter stopped the answer."""
    INCOMPLETE: ClassVar[FinishReason]
    """The stream ended without saying why: the answer may be cut."""

    @classmethod
    def other(cls, value: str) -> FinishReason:
        """A reason chatlane does not know, kept as the server sent it."""
        return cls(value)

    @classmethod
    def parse(cls, value: str | FinishReason | None) -> FinishReason:
        if isinstance(value, FinishReason):
            return value
        if value is None:
            return cls.INCOMPLETE
        return _KNOWN.get(value) or cls(str(value))

    @property
    def known(self) -> bool:
        return self.value in _KNOWN

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FinishReason):
            return self.value == other.value
        if isinstance(other, str):
            return self.value == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.value)

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        name = self.value.upper()
        if self.value in _KNOWN:
            return f"FinishReason.{name}"
        return f"FinishReason.other({self.value!r})"


FinishReason.STOP = FinishReason("stop")
FinishReason.LENGTH = FinishReason("length")
FinishReason.TOOL_CALLS = FinishReason("tool_calls")
FinishReason.CONTENT_FILTER = FinishReason("content_filter")
FinishReason.INCOMPLETE = FinishReason("incomplete")
_KNOWN: dict[str, FinishReason] = {
    r.value: r
    for r in (
        FinishReason.STOP,
        FinishReason.LENGTH,
        FinishReason.TOOL_CALLS,
        FinishReason.CONTENT_FILTER,
        FinishReason.INCOMPLETE,
    )
}


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one response (or a sum of several, with ``+``)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int | None = None
    """Prompt tokens served from the server's cache, when reported."""
    reasoning_tokens: int | None = None
    """Completion tokens spent on reasoning, when reported."""

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
            _add_optional(self.cached_tokens, other.cached_tokens),
            _add_optional(self.reasoning_tokens, other.reasoning_tokens),
        )


def _add_optional(a: int | None, b: int | None) -> int | None:
    if a is None and b is None:
        return None
    return (a or 0) + (b or 0)


@dataclass(frozen=True, slots=True)
class Choice:
    """One of several generated alternatives (``n > 1``)."""

    index: int
    message: Message
    finish_reason: FinishReason
    stop_sequence: str | None = None
    malformed_calls: tuple[str, ...] = ()
    """The raw text of calls that could not be read (see `ChatResponse.malformed_calls`)."""


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """The result of one model call.

    ``message`` and ``finish_reason`` are those of the first choice; ``choices`` holds all of
    them when the server generated several.
    """

    message: Message
    finish_reason: FinishReason = FinishReason.STOP
    usage: Usage | None = None
    model: str | None = None
    id: str | None = None
    stop_sequence: str | None = None
    """The stop sequence or stop token that ended generation, when known (a format may end
    a turn differently when the model waits for a tool result than when its turn is over)."""
    choices: tuple[Choice, ...] = ()
    created: int | None = None
    system_fingerprint: str | None = None
    response_format: ResponseFormat | None = field(default=None, compare=False, repr=False)
    """The format that was asked for; `parsed` validates against it."""
    raw: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    """The server's response body, where there was one."""
    resumed: tuple[str, ...] = ()
    """Why the stream broke, once for each time the backend resumed it (`RetryPolicy.resume`);
    empty for an answer that arrived in one piece."""
    malformed_calls: tuple[str, ...] = ()
    """The raw text of every call the model began that could not be read (where chatlane
    parsed the raw output itself): it is kept in the text, never made into a call, and this
    says it happened."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "finish_reason", FinishReason.parse(self.finish_reason))
        if not self.choices:
            object.__setattr__(
                self,
                "choices",
                (
                    Choice(
                        0,
                        self.message,
                        self.finish_reason,
                        self.stop_sequence,
                        self.malformed_calls,
                    ),
                ),
            )

    @property
    def text(self) -> str:
        """The assistant's text."""
        return self.message.text

    @property
    def tool_calls(self) -> tuple[Any, ...]:
        """The tool calls the assistant made."""
        return self.message.tool_calls

    @property
    def parsed(self) -> Any:
        """The output parsed and validated against the requested response format: the
        Pydantic object when a model class was asked for, else the JSON value.

        Raises `StructuredOutputError` (with the text kept) when the output does not fit, and
        `InputError` when no response format was requested.
        """
        if self.response_format is None:
            from chatlane.errors import InputError

            raise InputError("this response was not asked for a response_format; nothing to parse")
        return self.response_format.parse(self.message.text)

    def parse_as(self, model: type[Any]) -> Any:
        """The output validated as ``model`` (a Pydantic model class)."""
        from chatlane.request import ResponseFormat

        return ResponseFormat.from_model(model).parse(self.message.text)


def empty_assistant() -> Message:
    return Message(Role.ASSISTANT, "")
