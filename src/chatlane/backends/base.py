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

from chatlane.errors import (
    APIStatusError,
    ChatlaneError,
    ParseError,
    StreamInterrupted,
    TransportError,
    redact_error,
)
from chatlane.events import Accumulator, ChatEvent, TextDelta
from chatlane.messages import Message
from chatlane.request import ChatRequest, ResponseFormat
from chatlane.response import ChatResponse, FinishReason

__all__ = ["AsyncChatStream", "Backend", "ChatStream", "RequestLike"]

RequestLike = ChatRequest | Sequence[Message] | str
"""What `chat` and friends accept: a request, a list of messages, or a user's text."""

# Failures that, once events were delivered, become StreamInterrupted with the partial response.
_INTERRUPTIONS = (TransportError, APIStatusError, ParseError)


def _interrupted(error: Exception, acc: Accumulator) -> StreamInterrupted:
    return StreamInterrupted(
        f"the stream broke after it had started: {error}", partial=acc.response()
    )


def _unfinished(acc: Accumulator) -> StreamInterrupted | None:
    """The error for a stream whose body ended without the server saying the answer was done
    (no finish reason), or None when every choice finished."""
    response = acc.response()
    if all(c.finish_reason != FinishReason.INCOMPLETE for c in response.choices):
        return None
    return StreamInterrupted(
        "the stream ended before the server said the answer was done (no finish reason), so "
        "the answer may be cut off",
        partial=response,
    )


class _StreamState:
    """What `ChatStream` and `AsyncChatStream` share: the accumulator and the rules that turn
    a stream's end or failure into a response or an error (the one place for both twins)."""

    __slots__ = ("acc", "accept_incomplete", "delivered", "finished", "secrets")

    def __init__(
        self,
        response_format: ResponseFormat | None,
        accept_incomplete: bool,
        secrets: tuple[str, ...],
    ) -> None:
        self.acc = Accumulator(response_format)
        self.accept_incomplete = accept_incomplete
        self.secrets = secrets
        self.delivered = False
        self.finished = False

    def ended(self) -> None:
        """The events ran out: raise `StreamInterrupted` for an unfinished answer."""
        self.finished = True
        if not self.accept_incomplete:
            error = _unfinished(self.acc)
            if error is not None:
                raise error

    def failed(self, error: Exception) -> Exception | None:
        """The error to raise for a failure while streaming (None: end the stream quietly,
        keeping the partial answer, when ``accept_incomplete`` is set)."""
        self.finished = True
        if isinstance(error, ChatlaneError):
            redact_error(error, self.secrets)
        if isinstance(error, StreamInterrupted):
            return None if self.accept_incomplete else error
        if isinstance(error, _INTERRUPTIONS) and self.delivered:
            if self.accept_incomplete:
                return None
            interrupted = _interrupted(error, self.acc)
            redact_error(interrupted, self.secrets)
            return interrupted
        return error


class ChatStream:
    """A streamed response: iterate it for `ChatEvent`s; `.response` is the whole response.

    Use it as a context manager (or call `close`) to stop early: closing ends the request
    (the connection is closed, the engine stops generating).
    """

    def __init__(
        self,
        events: Iterator[ChatEvent],
        response_format: ResponseFormat | None = None,
        *,
        accept_incomplete: bool = False,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self._events = events
        self._state = _StreamState(response_format, accept_incomplete, secrets)
        self._acc = self._state.acc

    @property
    def _finished(self) -> bool:
        return self._state.finished

    def __iter__(self) -> Iterator[ChatEvent]:
        return self

    def __next__(self) -> ChatEvent:
        if self._state.finished:
            raise StopIteration
        try:
            event = next(self._events)
        except StopIteration:
            self._state.ended()
            raise
        except Exception as e:
            error = self._state.failed(e)
            if error is None:
                raise StopIteration from None
            if error is e:
                raise
            raise error from e
        self._acc.add(event)
        self._state.delivered = True
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
        self._state.finished = True
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
        self,
        events: AsyncIterator[ChatEvent],
        response_format: ResponseFormat | None = None,
        *,
        accept_incomplete: bool = False,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self._events = events
        self._state = _StreamState(response_format, accept_incomplete, secrets)
        self._acc = self._state.acc

    @property
    def _finished(self) -> bool:
        return self._state.finished

    def __aiter__(self) -> AsyncIterator[ChatEvent]:
        return self

    async def __anext__(self) -> ChatEvent:
        if self._state.finished:
            raise StopAsyncIteration
        try:
            event = await self._events.__anext__()
        except StopAsyncIteration:
            self._state.ended()
            raise
        except Exception as e:
            error = self._state.failed(e)
            if error is None:
                raise StopAsyncIteration from None
            if error is e:
                raise
            raise error from e
        self._acc.add(event)
        self._state.delivered = True
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
        self._state.finished = True
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

    #: Whether a stream that ends or breaks before the server said the answer was done is
    #: returned as a response with finish reason ``incomplete`` (True) instead of raising
    #: `StreamInterrupted` carrying it (False, the default: a cut-off answer is never passed
    #: off as a complete one). Set it per backend (``OpenAIChat(..., accept_incomplete=True)``).
    accept_incomplete: bool = False

    def _secrets(self) -> tuple[str, ...]:
        """The configured secrets (API keys) masked in every error this backend raises."""
        return ()

    def request(self, request: RequestLike, /, **params: Any) -> ChatRequest:
        """The request a call with these arguments sends (with this backend's defaults)."""
        req = ChatRequest.coerce(request, **params)
        if req.model is None and self.model is not None:
            req = ChatRequest.coerce(req, model=self.model)
        return req

    def chat(self, request: RequestLike, /, **params: Any) -> ChatResponse:
        """Send a request and return the whole response."""
        req = self.request(request, **params)
        try:
            return self._chat(req)
        except ChatlaneError as e:
            redact_error(e, self._secrets())
            raise

    def stream(self, request: RequestLike, /, **params: Any) -> ChatStream:
        """Send a request and stream its events."""
        req = self.request(request, **params)
        return self._chat_stream(self._events(req), req)

    async def achat(self, request: RequestLike, /, **params: Any) -> ChatResponse:
        """The async twin of `chat`."""
        req = self.request(request, **params)
        try:
            return await self._achat(req)
        except ChatlaneError as e:
            redact_error(e, self._secrets())
            raise

    def astream(self, request: RequestLike, /, **params: Any) -> AsyncChatStream:
        """The async twin of `stream` (use ``async for`` or ``async with``)."""
        req = self.request(request, **params)
        return self._achat_stream(self._aevents(req), req)

    def _chat_stream(self, events: Iterator[ChatEvent], request: ChatRequest) -> ChatStream:
        return ChatStream(
            events,
            request.response_format,
            accept_incomplete=self.accept_incomplete,
            secrets=self._secrets(),
        )

    def _achat_stream(
        self, events: AsyncIterator[ChatEvent], request: ChatRequest
    ) -> AsyncChatStream:
        return AsyncChatStream(
            events,
            request.response_format,
            accept_incomplete=self.accept_incomplete,
            secrets=self._secrets(),
        )

    # What a backend implements.

    @abc.abstractmethod
    def _events(self, request: ChatRequest) -> Iterator[ChatEvent]:
        """The events answering one request."""

    @abc.abstractmethod
    def _aevents(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        """The async twin of `_events`."""

    def _chat(self, request: ChatRequest) -> ChatResponse:
        return self._chat_stream(self._events(request), request).response

    async def _achat(self, request: ChatRequest) -> ChatResponse:
        return await self._achat_stream(self._aevents(request), request).get_response()

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
