"""`CompletionChat`: chat over raw completion endpoints, with chatlane rendering the prompt.

The server only continues text. chatlane renders the whole conversation with a prompt format
(special tokens, tool definitions, tool calls and results), sends it with the format's stop
sequences, and reads the raw output back through the format's incremental parser, so tool calls
come out of the text the same way whether the answer was streamed or not.

Dialects (see `chatlane.wire.completions`): ``openai`` (``/v1/completions`` of vLLM and
llama-cpp-python's server), ``llama.cpp`` (the native ``/completion``) and ``aleph-alpha``
(``/complete``).

How the prompt travels (``prompt_as``): as token ids where the endpoint takes them, the
rendered ids reach the model exactly and user text can never become a control token. As
text, the server tokenizes it and reads special-token text as control tokens; that is what the
structure needs, but a user who typed an end-of-turn token's text would inject one (the
format's `misread_text` finds such text). chatlane checks: text that
the server would misread is never sent as text (``auto`` sends token ids then, ``text`` raises).
Servers that tokenize a text prompt add the begin-of-text token themselves, so it is left out
of the text for them (``server_adds_bos``).

Structured output: llama.cpp's ``/completion`` constrains the output to the
``response_format`` schema (its ``json_schema`` field); the other endpoints have no portable
way to, so there the format's prompt asks for it and `ChatResponse.parsed` validates it.
``tool_choice`` is expressed in the rendered prompt, as the format defines it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from chatlane.backends.base import Backend
from chatlane.errors import (
    APIStatusError,
    ChatlaneError,
    InputError,
    TimeoutException,
    TransportError,
    UnexpectedResponse,
)
from chatlane.events import ChatEvent, Finished, ResponseStarted, StreamResumed, UsageReported
from chatlane.messages import Message, Role
from chatlane.request import ChatRequest
from chatlane.response import ChatResponse, FinishReason, Usage
from chatlane.wire.completions import (
    CompletionDialect,
    CompletionPiece,
    decode_chunk,
    decode_response,
    encode_query,
    encode_request,
    endpoint_path,
    parse_dialect,
)

if TYPE_CHECKING:
    import httpx

    from chatlane.backends.transport import RetryPolicy, Timeouts, Transport
    from chatlane.formats.base import Prompt, PromptFormat, StreamParser

__all__ = ["CompletionChat", "CompletionDecoder", "PromptAs"]

log = logging.getLogger("chatlane.completion")

PromptAs = Literal["auto", "text", "tokens"]
"""How the rendered prompt is sent: ``auto``, always ``text``, or always ``tokens``."""

# Whether "auto" sends token ids even when the text is safe. Every dialect's endpoint takes ids
# (vLLM's /v1/completions a list of ints, llama.cpp's /completion a mixed list, Aleph Alpha a
# token_ids item), but llama-cpp-python's /v1/completions only takes text, and Aleph Alpha
# documents text items; those two send text unless it would be misread.
_TOKENS_FIRST: dict[CompletionDialect, bool] = {
    "openai": False,
    "llama.cpp": True,
    "aleph-alpha": False,
}

# Servers that tokenize a text prompt add the model's begin-of-text token themselves: vLLM
# (add_special_tokens defaults to true on /v1/completions), llama-cpp-python (Llama._create_completion
# prepends BOS when the model's add_bos_token is set) and llama.cpp's /completion (it tokenizes
# with add_special). A rendered prompt that starts with the format's begin text would get it twice.
# Aleph Alpha's /complete takes the prompt as written (pharia-skill sends it with BOS).
# Token-id prompts are taken as they are everywhere.
_SERVER_ADDS_BOS: dict[CompletionDialect, bool] = {
    "openai": True,
    "llama.cpp": True,
    "aleph-alpha": False,
}


class CompletionDecoder:
    """Raw completion pieces in, `ChatEvent`s out: one per response, one parser per choice.

    Cuts the text at the first of the format's stop sequences (servers that return special
    tokens return the stop token's text too), remembers which one ended the output, and passes
    the rest through the format's `StreamParser`.
    """

    def __init__(
        self,
        format: PromptFormat,
        request: ChatRequest,
        stop_sequences: Sequence[str],
        *,
        stop_token_text: Mapping[int, str] | None = None,
    ) -> None:
        self._format = format
        self._request = request
        self._stops = tuple(s for s in stop_sequences if s)
        self._stop_token_text = dict(stop_token_text or {})
        self._choices: dict[int, _ChoiceDecoder] = {}
        self._started = False

    def _choice(self, index: int) -> _ChoiceDecoder:
        state = self._choices.get(index)
        if state is None:
            state = self._choices[index] = _ChoiceDecoder(
                self._format.stream_parser(self._request), self._stops, index
            )
        return state

    def feed(self, piece: CompletionPiece) -> list[ChatEvent]:
        """The events one piece of the response completes."""
        events: list[ChatEvent] = []
        if not self._started and (piece.id or piece.model or piece.created is not None):
            self._started = True
            events.append(ResponseStarted(id=piece.id, model=piece.model, created=piece.created))
        if piece.text or piece.finish_reason is not None:
            state = self._choice(piece.choice)
            events += state.feed(piece.text)
            if piece.finish_reason is not None:
                stop = piece.stop_sequence
                if stop is None and piece.stop_token is not None:
                    stop = self._stop_token_text.get(piece.stop_token)
                events += state.finish(piece.finish_reason, stop)
        if piece.usage is not None:
            events.append(UsageReported(piece.usage))
        return events

    def finish(self) -> list[ChatEvent]:
        """The response ended: flush every choice that the server did not finish.

        Their text and calls are delivered; their finish reason is ``incomplete``.
        """
        events: list[ChatEvent] = []
        if not self._choices:
            self._choice(0)
        for state in self._choices.values():
            if not state.done:
                events += state.finish(FinishReason.INCOMPLETE, None)
        return events


class _ChoiceDecoder:
    """One choice: the stop-sequence cut, then the format's parser."""

    __slots__ = ("_firsts", "_held", "_index", "_longest", "_parser", "_stop_hit", "_stops", "done")

    def __init__(self, parser: StreamParser, stops: tuple[str, ...], index: int) -> None:
        self._parser = parser
        self._stops = stops
        self._firsts = frozenset(s[0] for s in stops)
        self._longest = max((len(s) for s in stops), default=0)
        self._index = index
        self._held = ""
        self._stop_hit: str | None = None
        self.done = False

    def _tag(self, events: Iterable[ChatEvent]) -> list[ChatEvent]:
        if self._index == 0:
            return events if isinstance(events, list) else list(events)
        index = self._index
        return [
            e if isinstance(e, UsageReported | ResponseStarted) else _with_choice(e, index)
            for e in events
        ]

    def feed(self, text: str) -> list[ChatEvent]:
        if self.done or self._stop_hit is not None or not text:
            return []
        text = self._held + text
        self._held = ""
        cut = len(text)
        for stop in self._stops:
            at = text.find(stop)
            if at != -1 and at < cut:
                cut, self._stop_hit = at, stop
        if self._stop_hit is not None:
            text = text[:cut]
        else:
            # Hold back a tail that may be the start of a stop sequence split across pieces:
            # the longest suffix that some stop sequence begins with. Only positions holding a
            # stop's first character can start one, which makes plain text cheap.
            start = max(0, len(text) - self._longest + 1)
            found = [at for at in (text.find(c, start) for c in self._firsts) if at != -1]
            if found:
                for at in range(min(found), len(text)):
                    if text[at] in self._firsts:
                        tail = text[at:]
                        if any(stop.startswith(tail) for stop in self._stops):
                            text, self._held = text[:at], tail
                            break
        return self._tag(self._parser.feed(text)) if text else []

    def finish(self, reason: FinishReason, stop_sequence: str | None) -> list[ChatEvent]:
        if self.done:
            return []
        events: list[ChatEvent] = []
        if self._held and self._stop_hit is None:
            events += self._parser.feed(self._held)
        self._held = ""
        self.done = True
        stop = self._stop_hit or stop_sequence
        truncated = reason == FinishReason.LENGTH and self._stop_hit is None
        for event in self._parser.finish(stop, truncated=truncated):
            if isinstance(event, Finished):
                event = _server_reason(event, reason, stop)
            events.append(event)
        return self._tag(events)


def _with_choice(event: Any, index: int) -> ChatEvent:
    result: ChatEvent = dataclasses.replace(event, choice=index)
    return result


def _server_reason(event: Finished, server: FinishReason, stop: str | None) -> Finished:
    """The parser knows tool calls, stops and truncation; the server may know more (a content
    filter, an ending it invented, or that it never said how the output ended)."""
    reason = event.finish_reason
    if server not in (FinishReason.STOP, FinishReason.LENGTH) and reason != FinishReason.TOOL_CALLS:
        reason = server
    if stop is not None and event.stop_sequence is None:
        return dataclasses.replace(event, finish_reason=reason, stop_sequence=stop)
    if reason is event.finish_reason:
        return event
    return dataclasses.replace(event, finish_reason=reason)


class CompletionChat(Backend):
    """Chat over a raw completion endpoint; chatlane renders and parses the prompt format.

    Args:
        base_url: the server's base URL (for ``openai``, the one ending in ``/v1``).
        format: the prompt format, or a registered format's name (`chatlane.formats.names`); when not
            given, `chatlane.formats.detect` picks it from ``model``, and
            `chatlane.formats.DEFAULT` is used when that names no known model.
        dialect: ``openai``, ``llama.cpp`` or ``aleph-alpha``.
        api_key: sent as a bearer token; never shown in reprs, logs or errors.
        model: the model name sent with each request (Aleph Alpha and vLLM need one).
        prompt_as: ``auto`` (token ids where the dialect prefers them or where text would be
            misread), ``text`` (never token ids; refuses text the server would misread) or
            ``tokens`` (always token ids).
        server_adds_bos: whether the server puts the begin-of-text token before a text
            prompt itself (then chatlane leaves it out of the text); by default true for
            ``openai`` and ``llama.cpp``, false for ``aleph-alpha``.
        path: the endpoint's path under ``base_url``, when a proxy moved it.
        accept_incomplete: return a stream that ended or broke before the server said the
            answer was done as a response with finish reason ``incomplete``, instead of raising
            `StreamInterrupted` carrying it (the default).
        headers, params, timeouts, retry, max_connections, max_keepalive, http_client,
            async_http_client: the `Transport`'s options (see there).
        transport: an existing `Transport` to share (instead of ``base_url`` and the options).
    """

    def __init__(
        self,
        base_url: str | None = None,
        format: PromptFormat | str | None = None,
        *,
        dialect: CompletionDialect | str = "openai",
        api_key: str | None = None,
        model: str | None = None,
        prompt_as: PromptAs = "auto",
        server_adds_bos: bool | None = None,
        path: str | None = None,
        accept_incomplete: bool = False,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        max_connections: int = 1000,
        max_keepalive: int = 100,
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
        max_event_bytes: int | None = None,
        transport: Transport | None = None,
    ) -> None:
        from chatlane.backends.transport import Transport

        self.dialect: CompletionDialect = parse_dialect(dialect)
        if prompt_as not in ("auto", "text", "tokens"):
            raise InputError(f"prompt_as must be 'auto', 'text' or 'tokens', got {prompt_as!r}")
        self.prompt_as: PromptAs = prompt_as
        self.server_adds_bos = (
            _SERVER_ADDS_BOS[self.dialect] if server_adds_bos is None else server_adds_bos
        )
        self.format: PromptFormat = _pick_format(format, model)
        self.model = model
        self.path = path or endpoint_path(self.dialect)
        self.accept_incomplete = accept_incomplete
        if transport is not None:
            if base_url is not None or api_key is not None:
                raise InputError("give either a transport or a base_url and api_key, not both")
            if not isinstance(transport, Transport):
                raise InputError(f"transport must be a Transport, got {type(transport).__name__}")
            self.transport = transport
            return
        if base_url is None:
            example = {
                "openai": "http://127.0.0.1:8000/v1",
                "llama.cpp": "http://127.0.0.1:8080",
                "aleph-alpha": "https://inference-api.example.com",
            }[self.dialect]
            raise InputError(f"CompletionChat needs a base_url, e.g. {example!r}")
        self.transport = Transport(
            base_url,
            api_key=api_key,
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
    ) -> CompletionChat:
        """A backend sharing this one's connections and format, with some options replaced
        (``headers`` and ``params`` are added to this backend's own)."""
        return CompletionChat(
            format=self.format,
            dialect=self.dialect,
            model=model if model is not None else self.model,
            prompt_as=self.prompt_as,
            server_adds_bos=self.server_adds_bos,
            path=self.path,
            accept_incomplete=self.accept_incomplete,
            transport=self.transport.with_options(
                headers=headers, params=params, timeouts=timeouts, retry=retry
            ),
        )

    def __repr__(self) -> str:
        return (
            f"CompletionChat(base_url={self.base_url!r}, dialect={self.dialect!r}, "
            f"format={self.format.name!r}, model={self.model!r})"
        )

    # Building the request.

    def render(self, request: ChatRequest) -> Prompt:
        """The prompt ``request`` renders to (what the server continues)."""
        return self.format.render(request)

    def body(self, request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
        """The JSON body a request sends."""
        rendered = self.render(request)
        prompt: str | Sequence[int] = rendered.text
        if self._send_tokens(rendered):
            prompt = rendered.tokens
        elif self.server_adds_bos:
            bos = self.format.begin_text
            if bos and rendered.text.startswith(bos):
                prompt = rendered.text[len(bos) :]
        return encode_request(
            prompt,
            request,
            self.dialect,
            stop=self.format.stop_sequences,
            stream=stream,
            model=request.model or self.model,
        )

    def _send_tokens(self, prompt: Prompt) -> bool:
        if self.prompt_as == "tokens":
            if not prompt.tokens:
                raise InputError(
                    f"prompt_as='tokens' needs token ids, and the {self.format.name} format "
                    "rendered none"
                )
            return True
        if self.prompt_as == "auto" and prompt.tokens and _TOKENS_FIRST[self.dialect]:
            return True
        misread = self.format.misread_text(prompt)
        if self.prompt_as == "text" or not prompt.tokens:
            if misread:
                raise InputError(
                    f"the conversation contains text that the server would read as the control "
                    f"token {misread!r}; send the prompt as token ids (prompt_as='tokens' or "
                    "'auto') or remove that text"
                )
            return False
        return misread is not None

    def _decoder(self, request: ChatRequest) -> CompletionDecoder:
        return CompletionDecoder(
            self.format,
            request,
            self.format.stop_sequences,
            stop_token_text=_stop_token_text(self.format),
        )

    # The Backend protocol.

    def _events(self, request: ChatRequest) -> Iterator[ChatEvent]:
        run = _StreamRun(self, request)
        while True:
            stream = self.transport.stream_json(
                self.path, run.body(), params=encode_query(request, self.dialect)
            )
            try:
                for chunk in stream:
                    yield from run.feed(chunk)
                yield from run.decoder.finish()
                return
            except ChatlaneError as e:
                resumed = run.resume(e)
                if resumed is None:
                    yield from run.flush()
                    raise
                yield resumed
            finally:
                stream.close()

    async def _aevents(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        run = _StreamRun(self, request)
        while True:
            stream = self.transport.astream_json(
                self.path, run.body(), params=encode_query(request, self.dialect)
            )
            try:
                async for chunk in stream:
                    for event in run.feed(chunk):
                        yield event
                for event in run.decoder.finish():
                    yield event
                return
            except ChatlaneError as e:
                resumed = run.resume(e)
                if resumed is None:
                    for event in run.flush():
                        yield event
                    raise
                yield resumed
            finally:
                await stream.aclose()

    def _chat(self, request: ChatRequest) -> ChatResponse:
        raw = self.transport.post_json(
            self.path, self.body(request), params=encode_query(request, self.dialect)
        )
        return self._whole(request, raw)

    async def _achat(self, request: ChatRequest) -> ChatResponse:
        raw = await self.transport.apost_json(
            self.path, self.body(request), params=encode_query(request, self.dialect)
        )
        return self._whole(request, raw)

    def _whole(self, request: ChatRequest, raw: Any) -> ChatResponse:
        """A whole response, read through the same decoder as a stream."""
        from chatlane.events import Accumulator

        decoder = self._decoder(request)
        acc = Accumulator(request.response_format)
        for piece in decode_response(raw, self.dialect):
            for event in decoder.feed(piece):
                acc.add(event)
        for event in decoder.finish():
            acc.add(event)
        return dataclasses.replace(acc.response(), raw=raw)

    def close(self) -> None:
        self.transport.close()

    async def aclose(self) -> None:
        await self.transport.aclose()


class _StreamRun:
    """One streamed call across its attempts: the decoder (one for the whole answer), the raw
    text of the answer so far, and the usage of attempts that broke.

    A resume (`RetryPolicy.resume`) renders the same conversation with the raw text so far as
    a prefilled assistant message: the format leaves that message open, so the server goes on
    from exactly where the answer stopped, and its pieces feed the same decoder.
    """

    __slots__ = ("attempt_prompt", "backend", "decoder", "fed", "request", "resumes", "text",
                 "usage")  # fmt: skip

    def __init__(self, backend: CompletionChat, request: ChatRequest) -> None:
        self.backend = backend
        self.request = request
        self.decoder = backend._decoder(request)
        self.text = ""
        self.fed = False
        self.resumes = 0
        self.usage: Usage | None = None
        self.attempt_prompt: Prompt | None = None

    def body(self) -> dict[str, Any]:
        request = self.request
        if self.text:
            request = dataclasses.replace(
                request, messages=(*request.messages, Message(Role.ASSISTANT, self.text))
            )
        self.attempt_prompt = self.backend.render(request)
        return self.backend.body(request, stream=True)

    def feed(self, chunk: Any) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        for piece in decode_chunk(chunk, self.backend.dialect):
            if piece.text:
                self.fed = True
                if piece.choice == 0:
                    self.text += piece.text
            if piece.usage is not None and self.usage is not None:
                piece = dataclasses.replace(piece, usage=self.usage + piece.usage)
            events += self.decoder.feed(piece)
        return events

    def flush(self) -> list[ChatEvent]:
        """The text the decoder held back (a possible stop sequence or call start), so that a
        broken stream's partial answer keeps everything that arrived."""
        return self.decoder.finish() if self.fed else []

    def resume(self, error: ChatlaneError) -> StreamResumed | None:
        """Prepare the next attempt after ``error``, or None when the stream cannot be resumed
        (not asked for, no text yet, several choices, retries spent, or an error that asking
        again would not cure)."""
        policy = self.backend.transport.retry
        if not policy.resume or not self.text or self.resumes >= policy.max_retries:
            return None
        if (self.request.n or 1) != 1 or not _resumable(error, policy.statuses):
            return None
        # Text that a server tokenizing the prompt would read as a control token (a call's
        # start tag, say) would not be continued exactly as text; such answers are not resumed.
        prefilled = dataclasses.replace(
            self.request,
            messages=(*self.request.messages, Message(Role.ASSISTANT, self.text)),
        )
        if self.backend.format.misread_text(self.backend.render(prefilled)) is not None:
            return None
        self.usage = _sum(self.usage, self._spent())
        self.resumes += 1
        reason = str(error)
        log.info("resuming a broken stream (resume %d) after: %s", self.resumes, reason)
        return StreamResumed(self.resumes, len(self.text), reason)

    def _spent(self) -> Usage | None:
        """The tokens the broken attempt used: the server did not report them, so they are
        counted with the format's tokenizer (the prompt it was sent, the text it produced)."""
        tokenizer = self.backend.format.tokenizer
        prompt = self.attempt_prompt
        if tokenizer is None or prompt is None:
            return None
        prompt_tokens = len(prompt.tokens) if prompt.tokens else len(tokenizer.encode(prompt.text))
        previous = self.usage.completion_tokens if self.usage is not None else 0
        completion = max(0, len(tokenizer.encode(self.text)) - previous)
        return Usage(prompt_tokens, completion, prompt_tokens + completion)


def _sum(a: Usage | None, b: Usage | None) -> Usage | None:
    if a is None:
        return b
    return a if b is None else a + b


def _resumable(error: ChatlaneError, statuses: frozenset[int]) -> bool:
    if isinstance(error, TimeoutException):
        return error.kind == "idle"
    if isinstance(error, APIStatusError):
        return error.status_code in statuses
    return isinstance(error, TransportError) and not isinstance(error, UnexpectedResponse)


def _pick_format(format: PromptFormat | str | None, model: str | None) -> PromptFormat:
    from chatlane import formats
    from chatlane.formats.base import ModelInfo, PromptFormat

    if isinstance(format, str):
        return formats.get(format)
    if format is None:
        found = formats.detect(ModelInfo(model_id=model)) if model else None
        return found if found is not None else formats.get(formats.DEFAULT)
    if not isinstance(format, PromptFormat):
        raise InputError(
            "format must be a prompt format (chatlane.formats.get(name)) or a format's name, "
            f"got {type(format).__name__}"
        )
    return format


def _stop_token_text(format: PromptFormat) -> dict[int, str]:
    """The ids of the format's stop tokens (servers such as vLLM report the id that ended the
    output)."""
    tokenizer = format.tokenizer
    if tokenizer is None:
        return {}
    specials = tokenizer.special_tokens
    return {specials[stop]: stop for stop in format.stop_sequences if stop in specials}
