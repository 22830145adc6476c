"""The backend protocol every backend follows, and the stream objects they return.

A backend implements two generators, `_events` and `_aevents` (one request in, `ChatEvent`s
out); everything a user calls (`chat`, `stream`, `achat`, `astream`) is built once, here.
Backends that get a whole response in one piece may override `_chat` / `_achat`.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Iterator, Sequence
from types import TracebackType
from typing import Any, Self

from chatlane.errors import APIStatusError, ParseError, StreamInterrupted, TransportError
from chatlane.events import Accumulator, ChatEvent, TextDelta
from chatlane.messages import Message
from chatlane.request import ChatRequest, ResponseFormat
from chatlane.response import ChatResponse

__all__ = ["AsyncChatStream", "Backend", "ChatStream", "RequestLike"]

RequestLike = ChatRequest | Sequence[Message] | str
"""What `chat` and friends accept: a request, a list of messages, or a user's text."""

# Failures that, once events were delivered, become StreamInterrupted with the partial response.
_INTERRUPTIONS = (TransportError, APIStatusError, ParseError)


def _interrupted(error: Exception, acc: Accumulator) -> StreamInterrupted:
    return StreamInterrupted(
        f"the stream broke after it had started: {error}", partial=acc.response()
    )


class ChatStream:
    """A streamed response: iterate it for `ChatEvent`s; `.response` is the whole response.

    Use it as a context manager (or call `close`) to stop early: closing ends the request
    (the connection is closed, the engine stops generating).
    """

    def __init__(
        self, events: Iterator[ChatEvent], response_format: ResponseFormat | None = None
    ) -> None:
        self._events = events
        self._acc = Accumulator(response_format)
        self._delivered = False
        self._finished = False

    def __iter__(self) -> Iterator[ChatEvent]:
        return self

    def __next__(self) -> ChatEvent:
        try:
            event = next(self._events)
        except StopIteration:
            self._finished = True
            raise
        except StreamInterrupted:
            self._finished = True
            raise
        except _INTERRUPTIONS as e:
            self._finished = True
            if self._delivered:
                raise _interrupted(e, self._acc) from e
            raise
        self._acc.add(event)
        self._delivered = True
        return event

    def text_stream(self) -> Iterator[str]:
        """Only the text, piece by piece."""
        for event in self:
            if isinstance(event, TextDelta) and event.choice == 0:
                yield event.text

    @property
    def response(self) -> ChatResponse:
        """The whole response (reads the rest of the stream first if needed)."""
        if not self._finished:
            for _ in self:
                pass
        return self._acc.response()

    def partial(self) -> ChatResponse:
        """What was received so far, without reading further."""
        return self._acc.response()

    def close(self) -> None:
        """Stop the stream and release what it holds."""
        self._finished = True
        close = getattr(self._events, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncChatStream:
    """The async twin of `ChatStream`: ``async for event in stream``; ``await stream.get_response()``."""

    def __init__(
        self, events: AsyncIterator[ChatEvent], response_format: ResponseFormat | None = None
    ) -> None:
        self._events = events
        self._acc = Accumulator(response_format)
        self._delivered = False
        self._finished = False

    def __aiter__(self) -> AsyncIterator[ChatEvent]:
        return self

    async def __anext__(self) -> ChatEvent:
        try:
            event = await self._events.__anext__()
        except StopAsyncIteration:
            self._finished = True
            raise
        except StreamInterrupted:
            self._finished = True
            raise
        except _INTERRUPTIONS as e:
            self._finished = True
            if self._delivered:
                raise _interrupted(e, self._acc) from e
            raise
        self._acc.add(event)
        self._delivered = True
        return event

    async def text_stream(self) -> AsyncIterator[str]:
        """Only the text, piece by piece."""
        async for event in self:
            if isinstance(event, TextDelta) and event.choice == 0:
                yield event.text

    async def get_response(self) -> ChatResponse:
        """The whole response (reads the rest of the stream first if needed)."""
        if not self._finished:
            async for _ in self:
                pass
        return self._acc.response()

    @property
    def response(self) -> ChatResponse:
        """The response once the stream has been read to its end."""
        if not self._finished:
            raise RuntimeError("read the stream to its end first, or await get_response()")
        return self._acc.response()

    def partial(self) -> ChatResponse:
        """What was received so far, without reading further."""
        return self._acc.response()

    async def aclose(self) -> None:
        """Stop the stream and release what it holds."""
        self._finished = True
        aclose = getattr(self._events, "aclose", None)
        if aclose is not None:
            await aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Backend(abc.ABC):
    """What every backend offers: `chat`, `stream`, `achat`, `astream`, with the same signatures.

    Each takes a `ChatRequest`, a list of messages, or a user's text, plus request fields as
    keyword arguments (``model=``, ``tools=``, ``temperature=``, ...).
    """

    #: The model this backend talks to, when it knows it.
    model: str | None = None

    def request(self, request: RequestLike, /, **params: Any) -> ChatRequest:
        """The request a call with these arguments sends (with this backend's defaults)."""
        req = ChatRequest.coerce(request, **params)
        if req.model is None and self.model is not None:
            req = ChatRequest.coerce(req, model=self.model)
        return req

    def chat(self, request: RequestLike, /, **params: Any) -> ChatResponse:
        """Send a request and return the whole response."""
        return self._chat(self.request(request, **params))

    def stream(self, request: RequestLike, /, **params: Any) -> ChatStream:
        """Send a request and stream its events."""
        req = self.request(request, **params)
        return ChatStream(self._events(req), req.response_format)

    async def achat(self, request: RequestLike, /, **params: Any) -> ChatResponse:
        """The async twin of `chat`."""
        return await self._achat(self.request(request, **params))

    def astream(self, request: RequestLike, /, **params: Any) -> AsyncChatStream:
        """The async twin of `stream` (use ``async for`` or ``async with``)."""
        req = self.request(request, **params)
        return AsyncChatStream(self._aevents(req), req.response_format)

    # What a backend implements.

    @abc.abstractmethod
    def _events(self, request: ChatRequest) -> Iterator[ChatEvent]:
        """The events answering one request."""

    @abc.abstractmethod
    def _aevents(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        """The async twin of `_events`."""

    def _chat(self, request: ChatRequest) -> ChatResponse:
        return ChatStream(self._events(request), request.response_format).response

    async def _achat(self, request: ChatRequest) -> ChatResponse:
        return await AsyncChatStream(self._aevents(request), request.response_format).get_response()

    def close(self) -> None:  # noqa: B027 - backends without resources need not override it
        """Release connections or the loaded model."""

    async def aclose(self) -> None:
        """The async twin of `close`."""
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
