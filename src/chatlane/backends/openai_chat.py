"""`OpenAIChat`: a backend for OpenAI-compatible ``/chat/completions`` endpoints.

OpenAI itself, vLLM, llama.cpp's server, the Aleph Alpha / PhariaAI inference API and others.
The wire codec (`chatlane.wire.openai`) writes each server's dialect and reads its answers;
the `Transport` owns connections, retries, deadlines and errors. A stream is decoded as it
arrives: Server-Sent Events, then chunk JSON, then `ChatEvent`s from the stream assembler.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from chatlane.backends.base import Backend
from chatlane.backends.transport import RetryPolicy, Timeouts, Transport
from chatlane.errors import InputError
from chatlane.events import ChatEvent
from chatlane.request import ChatRequest, StreamOptions
from chatlane.response import ChatResponse

if TYPE_CHECKING:
    import httpx

__all__ = ["OpenAIChat"]

_ENV_BASE_URL = ("CHATLANE_BASE_URL", "OPENAI_BASE_URL")
_ENV_API_KEY = ("CHATLANE_API_KEY", "OPENAI_API_KEY")


def _from_env(names: tuple[str, ...]) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


class OpenAIChat(Backend):
    """Chat with a model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    ```python
    llm = OpenAIChat("http://127.0.0.1:8080/v1", model="llama-3.1-8b")
    print(llm.chat("Hello!").message.text)
    for event in llm.stream("Tell me a story"):
        ...
    ```

    Args:
        base_url: the URL the endpoint path is joined to (``.../v1``). Defaults to
            ``CHATLANE_BASE_URL``, then ``OPENAI_BASE_URL``.
        api_key: sent as a bearer token. Defaults to ``CHATLANE_API_KEY``, then
            ``OPENAI_API_KEY``. It never appears in reprs, logs or errors.
        model: the model asked for when a request names none.
        dialect: ``"openai"``, ``"vllm"``, ``"llama.cpp"`` or ``"aleph-alpha"``: how requests
            are written for the server (see `chatlane.wire.openai`).
        headers: extra headers for every request.
        params: extra query parameters for every request.
        timeouts: connect, read, idle-stream and total-deadline limits (`Timeouts`).
        retry: when and how often to retry (`RetryPolicy`).
        include_usage: ask streamed responses to report token usage at their end.
        accept_incomplete: return a stream that ended or broke before the server said the
            answer was done as a response with finish reason ``incomplete``, instead of raising
            `StreamInterrupted` carrying it (the default).
        path: the endpoint path under ``base_url``.
        max_connections: the connection pool's limit.
        max_keepalive: idle connections kept for reuse.
        http_client: an ``httpx.Client`` to send sync requests with (you close it).
        async_http_client: an ``httpx.AsyncClient`` for async requests (you close it).

    Per-call options: `with_options` returns a backend sharing this one's connections with
    other headers, query parameters, timeouts or retry policy.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        dialect: str = "openai",
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        include_usage: bool = True,
        accept_incomplete: bool = False,
        path: str = "chat/completions",
        max_connections: int = 1000,
        max_keepalive: int = 100,
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
        max_event_bytes: int | None = None,
    ) -> None:
        from chatlane.wire.openai import DIALECTS

        if dialect not in DIALECTS:
            raise InputError(f"unknown dialect {dialect!r}; chatlane knows {', '.join(DIALECTS)}")
        base_url = base_url or _from_env(_ENV_BASE_URL)
        if base_url is None:
            raise InputError(
                "OpenAIChat needs a base_url: pass one, or set CHATLANE_BASE_URL "
                "(or OPENAI_BASE_URL), e.g. http://127.0.0.1:8080/v1"
            )
        self.transport = Transport(
            base_url,
            api_key=api_key if api_key is not None else _from_env(_ENV_API_KEY),
            headers=headers,
            params=params,
            timeouts=timeouts,
            retry=retry,
            max_connections=max_connections,
            max_keepalive=max_keepalive,
            http_client=http_client,
            async_http_client=async_http_client,
            max_event_bytes=max_event_bytes,
        )
        self.model = model
        self.dialect = dialect
        self.include_usage = include_usage
        self.accept_incomplete = accept_incomplete
        self.path = path

    @property
    def base_url(self) -> str:
        return self.transport.base_url

    def _secrets(self) -> tuple[str, ...]:
        return self.transport._secrets()

    def with_options(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        model: str | None = None,
    ) -> OpenAIChat:
        """A backend sharing this one's connections with some options replaced.

        ``headers`` and ``params`` are added to this backend's own. The copy does not own the
        connections: closing it leaves them open, closing this backend closes them.
        """
        copy = OpenAIChat.__new__(OpenAIChat)
        copy.transport = self.transport.with_options(
            headers=headers, params=params, timeouts=timeouts, retry=retry
        )
        copy.model = model if model is not None else self.model
        copy.dialect = self.dialect
        copy.include_usage = self.include_usage
        copy.accept_incomplete = self.accept_incomplete
        copy.path = self.path
        return copy

    def __repr__(self) -> str:
        key = "'***'" if self.transport.has_api_key else "None"
        return (
            f"OpenAIChat(base_url={self.base_url!r}, model={self.model!r}, "
            f"dialect={self.dialect!r}, api_key={key})"
        )

    # Requests

    def _body(self, request: ChatRequest, *, stream: bool) -> tuple[dict[str, Any], dict[str, str]]:
        from chatlane.wire.openai import encode_query, encode_request

        options: bool | StreamOptions = (
            StreamOptions(include_usage=self.include_usage) if stream else False
        )
        return encode_request(request, self.dialect, stream=options), encode_query(
            request, self.dialect
        )

    def _events(self, request: ChatRequest) -> Iterator[ChatEvent]:
        from chatlane.wire.openai import StreamAssembler

        body, query = self._body(request, stream=True)
        assembler = StreamAssembler(request.response_format)
        chunks = self.transport.stream_json(self.path, body, params=query)
        try:
            for chunk in chunks:
                yield from assembler.feed(chunk)
            yield from assembler.finish()
        finally:
            chunks.close()

    async def _aevents(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        from chatlane.wire.openai import StreamAssembler

        body, query = self._body(request, stream=True)
        assembler = StreamAssembler(request.response_format)
        chunks = self.transport.astream_json(self.path, body, params=query)
        try:
            async for chunk in chunks:
                for event in assembler.feed(chunk):
                    yield event
            for event in assembler.finish():
                yield event
        finally:
            await chunks.aclose()

    def _chat(self, request: ChatRequest) -> ChatResponse:
        body, query = self._body(request, stream=False)
        data = self.transport.post_json(self.path, body, params=query)
        return self._decode(request, data)

    async def _achat(self, request: ChatRequest) -> ChatResponse:
        body, query = self._body(request, stream=False)
        data = await self.transport.apost_json(self.path, body, params=query)
        return self._decode(request, data)

    def _decode(self, request: ChatRequest, data: Any) -> ChatResponse:
        from chatlane.wire.openai import decode_response

        # A 200 carrying an error object was raised by the transport already.
        return decode_response(data, response_format=request.response_format)

    # Connections

    def close(self) -> None:
        """Close the sync connections."""
        self.transport.close()

    async def aclose(self) -> None:
        """Close all connections."""
        await self.transport.aclose()
