"""The one stream of events every backend produces, and its accumulation into a response.

A stream for one choice reads, in order: `ResponseStarted` (optional), then any mix of
`TextDelta`, `ReasoningDelta` and tool calls (`ToolCallStarted`, `ToolCallDelta`...,
`ToolCallDone`), then `Finished`; `UsageReported` may come anywhere (the last one counts).
Events of several choices (``n > 1``) are told apart by ``choice``.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, TypeAlias

from chatlane.messages import Message, Role, ToolCall
from chatlane.response import ChatResponse, Choice, FinishReason, Usage

if TYPE_CHECKING:
    from chatlane.request import ResponseFormat

__all__ = [
    "Accumulator",
    "ChatEvent",
    "Finished",
    "ReasoningDelta",
    "ResponseStarted",
    "StreamResumed",
    "TextDelta",
    "ToolCallDelta",
    "ToolCallDone",
    "ToolCallStarted",
    "UsageReported",
    "aaccumulate",
    "accumulate",
]


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    """What the server says about the response before any content: its id and model."""

    id: str | None = None
    model: str | None = None
    created: int | None = None
    system_fingerprint: str | None = None
    kind: ClassVar[Literal["response_started"]] = "response_started"


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the assistant's text."""

    text: str
    choice: int = 0
    kind: ClassVar[Literal["text_delta"]] = "text_delta"


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of the assistant's reasoning, where the server reports it apart from the text."""

    text: str
    choice: int = 0
    kind: ClassVar[Literal["reasoning_delta"]] = "reasoning_delta"


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    """A tool call begins: its position among this turn's calls, its id and its name."""

    index: int
    id: str
    name: str
    choice: int = 0
    kind: ClassVar[Literal["tool_call_started"]] = "tool_call_started"


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call's argument text."""

    index: int
    arguments: str
    choice: int = 0
    kind: ClassVar[Literal["tool_call_delta"]] = "tool_call_delta"


@dataclass(frozen=True, slots=True)
class ToolCallDone:
    """A tool call is complete; ``call`` holds it whole (parsed and raw arguments)."""

    index: int
    call: ToolCall
    choice: int = 0
    kind: ClassVar[Literal["tool_call_done"]] = "tool_call_done"


@dataclass(frozen=True, slots=True)
class Finished:
    """A choice is complete, and why."""

    finish_reason: FinishReason
    choice: int = 0
    stop_sequence: str | None = None
    """The stop sequence or token that ended it, where known."""
    malformed_calls: tuple[str, ...] = ()
    """The raw text of calls the model began that could not be read; they stayed in the text
    (a prompt format's parser reports them here, and `ChatResponse.malformed_calls` keeps them)."""
    kind: ClassVar[Literal["finished"]] = "finished"


@dataclass(frozen=True, slots=True)
class UsageReported:
    """Token usage of the whole response."""

    usage: Usage
    kind: ClassVar[Literal["usage_reported"]] = "usage_reported"


@dataclass(frozen=True, slots=True)
class StreamResumed:
    """The connection broke mid-answer and the backend continued it in a new request
    (`RetryPolicy.resume`): the text so far was sent back as the start of the answer, so the
    events go on where they stopped; the response records each resume in ``resumed``."""

    attempt: int
    """Which resume this is (1 for the first)."""
    kept: int
    """How many characters of the answer's raw text were kept and sent back."""
    reason: str
    """Why the stream broke (the error's message, without secrets)."""
    kind: ClassVar[Literal["stream_resumed"]] = "stream_resumed"


ChatEvent: TypeAlias = (
    ResponseStarted
    | TextDelta
    | ReasoningDelta
    | ToolCallStarted
    | ToolCallDelta
    | ToolCallDone
    | Finished
    | UsageReported
    | StreamResumed
)


@dataclass(slots=True)
class _ChoiceState:
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    started: dict[int, ToolCallStarted] = field(default_factory=dict)
    arguments: dict[int, list[str]] = field(default_factory=dict)
    done: dict[int, ToolCall] = field(default_factory=dict)
    finish: Finished | None = None


class Accumulator:
    """Collects events into a `ChatResponse`; usable at any point (a partial response)."""

    __slots__ = ("_choices", "_info", "_resumed", "_usage", "response_format")

    def __init__(self, response_format: ResponseFormat | None = None) -> None:
        self._choices: dict[int, _ChoiceState] = {}
        self._resumed: list[str] = []
        self._info = ResponseStarted()
        self._usage: Usage | None = None
        self.response_format = response_format

    def _state(self, choice: int) -> _ChoiceState:
        state = self._choices.get(choice)
        if state is None:
            state = self._choices[choice] = _ChoiceState()
        return state

    def add(self, event: ChatEvent) -> None:
        """Take one event into account."""
        if isinstance(event, TextDelta):
            self._state(event.choice).text.append(event.text)
        elif isinstance(event, ToolCallDelta):
            self._state(event.choice).arguments.setdefault(event.index, []).append(event.arguments)
        elif isinstance(event, ToolCallStarted):
            self._state(event.choice).started[event.index] = event
        elif isinstance(event, ToolCallDone):
            self._state(event.choice).done[event.index] = event.call
        elif isinstance(event, ReasoningDelta):
            self._state(event.choice).reasoning.append(event.text)
        elif isinstance(event, Finished):
            self._state(event.choice).finish = event
        elif isinstance(event, UsageReported):
            self._usage = event.usage
        elif isinstance(event, StreamResumed):
            self._resumed.append(event.reason)
        elif isinstance(event, ResponseStarted):
            info = self._info
            self._info = ResponseStarted(
                event.id or info.id,
                event.model or info.model,
                event.created if event.created is not None else info.created,
                event.system_fingerprint or info.system_fingerprint,
            )

    def response(self) -> ChatResponse:
        """The response so far. Calls that started but did not finish are included with the
        argument text received; a choice that did not finish has reason ``incomplete``."""
        choices: list[Choice] = []
        for index in sorted(self._choices) or [0]:
            state = self._choices.get(index) or _ChoiceState()
            calls: list[ToolCall] = []
            for i in sorted(set(state.started) | set(state.done)):
                if i in state.done:
                    calls.append(state.done[i])
                else:
                    started = state.started[i]
                    raw = "".join(state.arguments.get(i, []))
                    calls.append(ToolCall.from_raw(started.id, started.name, raw))
            reasoning = "".join(state.reasoning) if state.reasoning else None
            message = Message(
                Role.ASSISTANT, "".join(state.text), tuple(calls), reasoning=reasoning
            )
            finish = state.finish
            choices.append(
                Choice(
                    index,
                    message,
                    finish.finish_reason if finish else FinishReason.INCOMPLETE,
                    finish.stop_sequence if finish else None,
                    finish.malformed_calls if finish else (),
                )
            )
        first = choices[0]
        return ChatResponse(
            message=first.message,
            finish_reason=first.finish_reason,
            usage=self._usage,
            model=self._info.model,
            id=self._info.id,
            stop_sequence=first.stop_sequence,
            choices=tuple(choices),
            created=self._info.created,
            system_fingerprint=self._info.system_fingerprint,
            response_format=self.response_format,
            resumed=tuple(self._resumed),
            malformed_calls=first.malformed_calls,
        )


def accumulate(
    events: Iterable[ChatEvent], *, response_format: ResponseFormat | None = None
) -> ChatResponse:
    """The response a stream of events adds up to."""
    acc = Accumulator(response_format)
    for event in events:
        acc.add(event)
    return acc.response()


async def aaccumulate(
    events: AsyncIterable[ChatEvent], *, response_format: ResponseFormat | None = None
) -> ChatResponse:
    """The response an async stream of events adds up to."""
    acc = Accumulator(response_format)
    async for event in events:
        acc.add(event)
    return acc.response()
