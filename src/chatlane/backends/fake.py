"""`Fake`: a scripted backend for tests, ours and our users'.

Each request takes the next item of the script:

- a ``str``: the assistant answers with that text;
- a `Message` (assistant): its text and tool calls;
- a `ChatResponse`: its message, finish reason and usage;
- a list of `ChatEvent`s: exactly those events; an exception at the end of the list is
  raised after the events (a stream that breaks midway);
- an exception: raised instead of answering;
- a callable taking the `ChatRequest` and returning any of the above.

Text and tool-call arguments are delivered in pieces of ``chunk_size`` characters, as a
real stream would. Every request is kept in ``fake.requests``.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeAlias

from chatlane.backends.base import Backend
from chatlane.errors import ChatlaneError
from chatlane.events import (
    ChatEvent,
    Finished,
    ResponseStarted,
    TextDelta,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStarted,
    UsageReported,
)
from chatlane.messages import Message, Role, ToolCall
from chatlane.request import ChatRequest
from chatlane.response import ChatResponse, FinishReason, Usage

__all__ = ["Fake", "ScriptItem"]

ScriptItem: TypeAlias = (
    str
    | Message
    | ChatResponse
    | Sequence[ChatEvent | BaseException]
    | BaseException
    | Callable[[ChatRequest], Any]
)


class Fake(Backend):
    """A backend that answers from a script (see the module docstring)."""

    def __init__(
        self,
        script: Iterable[Any] | ScriptItem = (),
        *,
        chunk_size: int = 4,
        model: str = "fake",
        usage: bool = True,
        delay: float = 0.0,
    ) -> None:
        if isinstance(script, str | Message | ChatResponse | BaseException) or callable(script):
            script = [script]
        self._script: Iterator[ScriptItem] = iter(list(script))  # type: ignore[arg-type]
        self.chunk_size = max(1, chunk_size)
        self.model = model
        self.usage = usage
        self.delay = delay
        """Seconds to wait before each event (async waits without blocking the loop)."""
        self.requests: list[ChatRequest] = []
        self._answered = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @staticmethod
    def call(
        name: str, arguments: dict[str, Any] | None = None, *, id: str | None = None
    ) -> ToolCall:
        """A tool call for a script (``id`` defaults to ``call_<name>``)."""
        return ToolCall(id or f"call_{name}", name, arguments or {})

    @staticmethod
    def calls(*calls: ToolCall, text: str = "") -> Message:
        """An assistant turn making these calls, for a script."""
        return Message(Role.ASSISTANT, text, calls)

    def add(self, *items: ScriptItem) -> None:
        """Append items to the script."""
        rest = list(self._script)
        self._script = iter([*rest, *items])

    def _next(self, request: ChatRequest) -> Any:
        with self._lock:
            self.requests.append(request)
            try:
                item: Any = next(self._script)
            except StopIteration:
                raise ChatlaneError(
                    f"the Fake backend's script is used up: it had {self._answered} answer(s) "
                    f"and got request {self._answered + 1}"
                ) from None
            self._answered += 1
        while callable(item) and not isinstance(item, BaseException):
            item = item(request)
        return item

    def _plan(self, request: ChatRequest) -> list[ChatEvent | BaseException]:
        item = self._next(request)
        if isinstance(item, BaseException):
            return [item]
        if isinstance(item, str):
            item = Message(Role.ASSISTANT, item)
        if isinstance(item, Message):
            finish = FinishReason.TOOL_CALLS if item.tool_calls else FinishReason.STOP
            item = ChatResponse(item, finish, self._usage(request, item) if self.usage else None)
        if isinstance(item, ChatResponse):
            return self._events_for(item)
        if isinstance(item, Sequence):
            return list(item)
        raise ChatlaneError(f"the Fake backend cannot answer with a {type(item).__name__}")

    def _usage(self, request: ChatRequest, message: Message) -> Usage:
        # Whitespace-separated words stand in for tokens: deterministic and easy to assert on.
        prompt = sum(len(m.text.split()) for m in request.messages)
        completion = len(message.text.split()) + sum(
            len(c.raw_arguments.split()) + 1 for c in message.tool_calls
        )
        return Usage(prompt, completion, prompt + completion)

    def _events_for(self, response: ChatResponse) -> list[ChatEvent | BaseException]:
        n = self.chunk_size
        events: list[ChatEvent | BaseException] = [
            ResponseStarted(
                id=response.id or f"fake-{next(self._ids)}", model=response.model or self.model
            )
        ]
        for choice in response.choices:
            message = choice.message
            if message.reasoning:
                from chatlane.events import ReasoningDelta

                events += [
                    ReasoningDelta(message.reasoning[i : i + n], choice.index)
                    for i in range(0, len(message.reasoning), n)
                ]
            text = message.text
            events += [TextDelta(text[i : i + n], choice.index) for i in range(0, len(text), n)]
            for index, call in enumerate(message.tool_calls):
                events.append(ToolCallStarted(index, call.id, call.name, choice.index))
                raw = call.raw_arguments
                events += [
                    ToolCallDelta(index, raw[i : i + n], choice.index)
                    for i in range(0, len(raw), n)
                ]
                events.append(ToolCallDone(index, call, choice.index))
            events.append(Finished(choice.finish_reason, choice.index, choice.stop_sequence))
        if response.usage is not None:
            events.append(UsageReported(response.usage))
        return events

    def _events(self, request: ChatRequest) -> Iterator[ChatEvent]:
        import time

        for item in self._plan(request):
            if self.delay:
                time.sleep(self.delay)
            if isinstance(item, BaseException):
                raise item
            yield item

    async def _aevents(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        for item in self._plan(request):
            await asyncio.sleep(self.delay)
            if isinstance(item, BaseException):
                raise item
            yield item

    def __repr__(self) -> str:
        return f"Fake(model={self.model!r}, answered={self._answered})"
