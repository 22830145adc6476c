"""``chatlane serve``: an OpenAI-compatible HTTP gateway in front of any chatlane backend.

Any OpenAI client (openai-python, LangChain, coding agents) talks to the gateway; the gateway
talks to the backend: a raw completion endpoint (chatlane renders the model's own prompt and
parses its raw output, so tool calls and reasoning come out right), the embedded engine, a chat
endpoint passed through, or a backend from Python code.

Routes: ``POST /v1/chat/completions`` (streamed as Server-Sent Events, or whole),
``GET /v1/models``, ``GET /health``. A request body is read with
`chatlane.wire.openai.decode_request` and answers are written by the same codec's inverse
(`encode_response`, `StreamEncoder`): there is no second model of the protocol here.

The gateway keeps no state between requests, so any number of them can run behind a load
balancer; a configured session-affinity header is passed on to the upstream (see
docs/serve.md). Errors are OpenAI-shaped ``{"error": {...}}`` bodies with the status that fits;
a client that disconnects cancels its upstream generation.

Built on Starlette and uvicorn (the ``chatlane[serve]`` extra): Starlette is the small ASGI
toolkit FastAPI itself is built on; FastAPI's request models and OpenAPI schema would be a
second model of the protocol, which the wire codec already is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chatlane.errors import (
    APIStatusError,
    AuthenticationError,
    BadRequest,
    ChatlaneError,
    ConnectError,
    EngineError,
    InputError,
    NotFound,
    ParseError,
    RateLimited,
    SchemaError,
    StreamInterrupted,
    StructuredOutputError,
    TimeoutException,
    TransportError,
)
from chatlane.events import ChatEvent, ToolCallDelta, ToolCallDone, ToolCallStarted

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.types import Message, Receive, Scope, Send

    from chatlane.backends.base import Backend
    from chatlane.request import ChatRequest
    from chatlane.response import ChatResponse
    from chatlane.store import Store

__all__ = ["Gateway", "ServeOptions", "ServedModel", "keys_from_env", "load_models"]

log = logging.getLogger("chatlane.serve")

KEYS_ENV = "CHATLANE_SERVE_KEYS"
"""The environment variable with the client keys, separated by commas."""


def keys_from_env() -> tuple[str, ...]:
    """The client keys ``CHATLANE_SERVE_KEYS`` holds (comma-separated)."""
    raw = os.environ.get(KEYS_ENV, "")
    return tuple(k.strip() for k in raw.split(",") if k.strip())


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A model the gateway serves: the name clients ask for, its backend, a label for the log."""

    name: str
    backend: Backend
    label: str


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """How the gateway guards itself. Keys are kept out of the repr."""

    api_keys: tuple[str, ...] = field(default=(), repr=False)
    """Bearer keys clients must send; none means no key is asked for."""
    max_body_bytes: int = 8 * 1024 * 1024
    """The largest request body accepted (413 above it)."""
    max_concurrency: int = 256
    """Requests handled at once; more are answered 429 with ``Retry-After``."""
    retry_after: int = 1
    """The seconds a 429 asks the client to wait."""
    affinity_header: str | None = None
    """A request header passed on to the upstream, so a load balancer in front of a server
    fleet sends one session's requests to one server (its prefix cache stays warm)."""
    store: Store | None = None
    """The conversation log every request goes to; None turns logging off."""

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise InputError(f"max_body_bytes must be at least 1, got {self.max_body_bytes}")
        if self.max_concurrency < 1:
            raise InputError(f"max_concurrency must be at least 1, got {self.max_concurrency}")


# ---------------------------------------------------------------- the models a config names


def load_models(path: str) -> list[tuple[str, Any]]:
    """The models a TOML file names: ``[models.NAME]`` tables with backend settings
    (``completion_url``, ``format``, ``base_url``, ``gguf``, ``backend``, ``model``,
    ``dialect``, ``profile``; ``api_key_env`` names the variable holding an upstream key).

    Returns (served name, `BackendSettings`) pairs in file order.
    """
    import tomllib

    from chatlane._config import BackendSettings, UsageError

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise UsageError(f"cannot read the models file {path!r}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"the models file {path!r} is not valid TOML: {e}") from e
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise UsageError(f"the models file {path!r} needs [models.NAME] tables")
    known = {f.name for f in dataclasses.fields(BackendSettings)} - {"source", "api_key"}
    result: list[tuple[str, Any]] = []
    for name, table in models.items():
        if not isinstance(table, dict):
            raise UsageError(f"{path!r}: models.{name} must be a table")
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key == "api_key_env":
                if not isinstance(value, str):
                    raise UsageError(f"{path!r}: models.{name}.api_key_env must be a string")
                values["api_key"] = os.environ.get(value) or None
                continue
            if key not in known:
                raise UsageError(
                    f"{path!r}: models.{name} has unknown setting {key!r}; "
                    f"known: {', '.join(sorted(known | {'api_key_env'}))}"
                )
            if not isinstance(value, str):
                raise UsageError(f"{path!r}: models.{name}.{key} must be a string")
            values[key] = value
        result.append((name, BackendSettings(**values, source=path)))
    return result


# ---------------------------------------------------------------- errors


@dataclass(slots=True)
class _Failure(Exception):
    """An answer with an error status (raised inside a handler, written by the endpoint)."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def _failure_for(error: BaseException, retry_after: int) -> _Failure:
    """The status and body for an exception a backend raised (one table, one place)."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, _Failure):
        return error
    if isinstance(error, SchemaError):
        return _Failure(400, text, code="invalid_schema")
    if isinstance(error, InputError):
        return _Failure(400, text)
    if isinstance(error, RateLimited):
        headers = {"Retry-After": str(retry_after)}
        return _Failure(
            429, f"the upstream is rate limited: {text}", "rate_limit_error", headers=headers
        )
    if isinstance(error, BadRequest):
        return _Failure(400, f"the upstream rejected the request: {text}", code="upstream_rejected")
    if isinstance(error, AuthenticationError | NotFound | APIStatusError):
        return _Failure(502, f"the upstream failed: {text}", "upstream_error", "upstream_error")
    if isinstance(error, TimeoutException):
        return _Failure(
            504, f"the upstream timed out: {text}", "upstream_error", "upstream_timeout"
        )
    if isinstance(error, ConnectError | TransportError | ParseError):
        return _Failure(502, f"the upstream failed: {text}", "upstream_error", "upstream_error")
    if isinstance(error, EngineError):
        return _Failure(500, f"the engine failed: {text}", "server_error", "engine_error")
    if isinstance(error, ChatlaneError):
        return _Failure(500, text, "server_error")
    log.exception("internal error", exc_info=error)
    return _Failure(500, f"internal error: {type(error).__name__}", "server_error")


# ---------------------------------------------------------------- the log


class _LogWriter:
    """Writes log records on a thread of its own, so no request waits for SQLite."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="chatlane-serve-log", daemon=True)
        self._thread.start()

    def put(self, *record: Any) -> None:
        self._queue.put(record)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            request, response, error, label, duration, first = item
            try:
                self._store.log_call(
                    None,
                    request,
                    response,
                    error=error,
                    backend=label,
                    duration=duration,
                    first_token=first,
                )
            except Exception:
                log.exception("cannot write to the conversation log")

    def close(self) -> None:
        """Write what is queued, then stop."""
        self._queue.put(None)
        self._thread.join()


# ---------------------------------------------------------------- the gateway


class Gateway:
    """The ASGI application (see the module docstring): ``uvicorn.run(Gateway(...).app)``."""

    def __init__(self, models: Sequence[ServedModel], options: ServeOptions | None = None) -> None:
        if not models:
            raise InputError("a gateway needs at least one model to serve")
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise InputError(f"two served models share a name: {names}")
        self.models = {m.name: m for m in models}
        self.default = models[0]
        self.options = options or ServeOptions()
        self._keys = tuple(k.encode() for k in self.options.api_keys)
        self._inflight = 0
        self._writer = _LogWriter(self.options.store) if self.options.store is not None else None
        self.created = int(time.time())
        self.app: Starlette = self._build()

    def __repr__(self) -> str:
        keys = "***" if self._keys else "none"
        return f"Gateway(models={list(self.models)!r}, keys={keys})"

    def _build(self) -> Starlette:
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route

        async def http_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, HTTPException)
            kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
            message = f"{request.method} {request.url.path}: {exc.detail}"
            failure = _Failure(exc.status_code, message, kind)
            return JSONResponse(failure.body(), exc.status_code, headers=exc.headers)

        routes = [
            Route("/v1/chat/completions", _Endpoint(self._chat), methods=["POST"]),
            Route("/chat/completions", _Endpoint(self._chat), methods=["POST"]),
            Route("/v1/models", _Endpoint(self._list_models), methods=["GET"]),
            Route("/v1/models/{name:path}", _Endpoint(self._one_model), methods=["GET"]),
            Route("/health", _Endpoint(self._health), methods=["GET"]),
        ]

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            await self.aclose()

        return Starlette(
            routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan
        )

    async def aclose(self) -> None:
        """Close the backends and write the log records still queued."""
        for model in self.models.values():
            try:
                await model.backend.aclose()
            except Exception:
                log.exception("closing %s failed", model.label)
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ---- guards

    def _authorize(self, scope: Scope) -> None:
        if not self._keys:
            return
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = token.strip()
        # Compared in constant time against every key (no early exit tells which is close).
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(given, key)
        if not ok:
            message = "a valid API key is needed: send it as 'Authorization: Bearer KEY'"
            if given:
                message = "the API key is not valid"
            raise _Failure(
                401,
                message,
                "authentication_error",
                "invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.options.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise _Failure(413, f"the request body is over {limit} bytes", code="too_large")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _Failure(413, f"the request body is over {limit} bytes", code="too_large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    # ---- routes

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send_json(send, 200, {"status": "ok", "models": list(self.models)})

    def _model_entry(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.created, "owned_by": "chatlane"}

    async def _list_models(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._authorize(scope)
        data = [self._model_entry(name) for name in self.models]
        await _send_json(send, 200, {"object": "list", "data": data})

    async def _one_model(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._authorize(scope)
        name = scope["path_params"]["name"]
        if name not in self.models:
            raise self._unknown_model(name)
        await _send_json(send, 200, self._model_entry(name))

    def _unknown_model(self, name: str) -> _Failure:
        return _Failure(
            404,
            f"the model {name!r} is not served here; models: {', '.join(self.models)}",
            code="model_not_found",
            param="model",
        )

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._authorize(scope)
        if self._inflight >= self.options.max_concurrency:
            raise _Failure(
                429,
                f"the gateway is at its limit of {self.options.max_concurrency} requests at once",
                "rate_limit_error",
                "too_many_requests",
                headers={"Retry-After": str(self.options.retry_after)},
            )
        self._inflight += 1
        try:
            await self._chat_guarded(scope, receive, send)
        finally:
            self._inflight -= 1

    async def _chat_guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        from chatlane.wire.openai import decode_request

        raw = await self._read_body(scope, receive)
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise _Failure(
                400, f"the request body is not valid JSON: {e}", code="invalid_json"
            ) from e
        if not isinstance(body, dict):
            raise _Failure(400, "the request body must be a JSON object", code="invalid_json")
        name = body.get("model")
        if name is None or name == "":
            served = self.default
        elif not isinstance(name, str):
            raise _Failure(400, "'model' must be a string", param="model")
        elif name in self.models:
            served = self.models[name]
        else:
            raise self._unknown_model(name)
        try:
            request = decode_request(body)
        except InputError as e:
            raise _failure_for(e, self.options.retry_after) from e
        backend = self._backend_for(served, scope)
        # The client names the served model; the backend asks its upstream for its own.
        request = backend.request(dataclasses.replace(request, model=None))
        stream = body.get("stream") is True
        options = body.get("stream_options")
        include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
        call = _Call(self, served, request, backend)
        if stream:
            await call.stream(receive, send, include_usage)
        else:
            await call.whole(receive, send)

    def _backend_for(self, served: ServedModel, scope: Scope) -> Backend:
        header = self.options.affinity_header
        if header is None:
            return served.backend
        wanted = header.lower().encode()
        for name, value in scope["headers"]:
            if name == wanted:
                with_options = getattr(served.backend, "with_options", None)
                if callable(with_options):
                    backend: Backend = with_options(headers={header: value.decode("latin-1")})
                    return backend
        return served.backend

    def _log(
        self,
        request: ChatRequest,
        response: ChatResponse | None,
        error: BaseException | str | None,
        label: str,
        duration: float,
        first: float | None,
    ) -> None:
        if self._writer is not None:
            self._writer.put(request, response, error, label, duration, first)


class _Disconnected(Exception):
    """The client went away."""


class _Endpoint:
    """A raw ASGI endpoint that answers a `_Failure` with its OpenAI-shaped body."""

    def __init__(self, handler: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.handler(scope, receive, send)
        except _Failure as failure:
            await _send_json(send, failure.status, failure.body(), failure.headers)
        except _Disconnected:
            return


async def _send_json(
    send: Send, status: int, body: Any, headers: Mapping[str, str] | None = None
) -> None:
    data = json.dumps(body, ensure_ascii=False).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
    ]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
]
_DONE = b"data: [DONE]\n\n"


def _sse(chunks: list[dict[str, Any]]) -> bytes:
    from chatlane.wire.openai import sse_event

    return b"".join(sse_event(c) for c in chunks)


class _Call:
    """One chat completion: run it on the backend, answer the client, log it."""

    def __init__(
        self, gateway: Gateway, served: ServedModel, request: ChatRequest, backend: Backend
    ) -> None:
        self.gateway = gateway
        self.served = served
        self.request = request
        self.backend = backend
        self.started = time.monotonic()
        self.first: float | None = None
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        # Without parallel calls the client gets the first call only (the log keeps them all).
        self.single_call = request.parallel_tool_calls is False and bool(request.tools)

    def _log(self, response: ChatResponse | None, error: BaseException | str | None) -> None:
        self.gateway._log(
            self.request,
            response,
            error,
            self.served.label,
            time.monotonic() - self.started,
            self.first,
        )

    def _report(self, response: ChatResponse) -> dict[str, Any] | None:
        """What chatlane adds to an answer: whether it fits the requested response format."""
        if response.response_format is None:
            return None
        try:
            response.parsed  # noqa: B018 - validates
        except StructuredOutputError as e:
            errors = [str(x.get("msg", x)) if isinstance(x, dict) else str(x) for x in e.errors]
            return {"response_format": {"valid": False, "error": str(e), "errors": errors}}
        return {"response_format": {"valid": True}}

    def _visible(self, response: ChatResponse) -> ChatResponse:
        if not self.single_call or len(response.message.tool_calls) <= 1:
            return response
        message = dataclasses.replace(response.message, tool_calls=response.message.tool_calls[:1])
        choices = tuple(
            dataclasses.replace(c, message=message) if c.index == 0 else c for c in response.choices
        )
        return dataclasses.replace(response, message=message, choices=choices)

    # ---- whole

    async def whole(self, receive: Receive, send: Send) -> None:
        from chatlane.wire.openai import encode_response

        try:
            response = await _until_disconnect(receive, self.backend.achat(self.request))
        except _Disconnected:
            self._log(None, "the client disconnected")
            raise
        except Exception as e:
            self._log(None, e)
            raise _failure_for(e, self.gateway.options.retry_after) from e
        self.first = time.monotonic() - self.started
        self._log(response, None)
        body = encode_response(
            self._visible(response), id=self.id, model=self.served.name, created=self.created
        )
        report = self._report(response)
        if report is not None:
            body["chatlane"] = report
        await _send_json(send, 200, body)

    # ---- streamed

    async def stream(self, receive: Receive, send: Send, include_usage: bool) -> None:
        import asyncio

        import anyio
        import anyio.abc

        from chatlane.events import Accumulator
        from chatlane.wire.openai import StreamEncoder

        encoder = StreamEncoder(
            id=self.id, model=self.served.name, created=self.created, include_usage=include_usage
        )
        events = self.backend.astream(self.request)
        acc = Accumulator(self.request.response_format)
        disconnected = False
        headers_sent = False
        error: BaseException | None = None

        # Chunks wait in `out` for the writer, which sends all that are there in one write:
        # an upstream that delivers faster than the socket takes them costs one write per
        # burst rather than one per chunk (on loopback a write costs more than a chunk's
        # decoding), while a paced one still gets each chunk sent the moment it is ready.
        out: list[bytes] = []
        wake = asyncio.Event()
        written = asyncio.Event()
        closing = False

        async def writer() -> None:
            while True:
                await wake.wait()
                wake.clear()
                if out:
                    data = b"".join(out)
                    out.clear()
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                if closing:
                    written.set()
                    return

        async def pump(group: anyio.abc.TaskGroup) -> None:
            nonlocal headers_sent, error, closing
            iterator = aiter(events)
            try:
                # The first event decides the status: an upstream that fails at once gets an
                # error status, not a 200 with an error inside.
                event: ChatEvent | None = await anext(iterator)
            except StopAsyncIteration:
                event = None
            except Exception as e:
                error = e
                return
            self.first = time.monotonic() - self.started
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            headers_sent = True
            group.start_soon(writer)
            # The whole answer is needed only for the log and the response-format report.
            keep = self.gateway._writer is not None or self.request.response_format is not None
            try:
                while event is not None:
                    if keep:
                        acc.add(event)
                    if self._shown(event):
                        data = encoder.encode_sse(event)
                        if data:
                            out.append(data)
                            wake.set()
                    try:
                        event = await anext(iterator)
                    except StopAsyncIteration:
                        event = None
            except Exception as e:
                error = e
            closing = True
            wake.set()
            await written.wait()
            if error is not None:
                return
            tail = encoder.finish()
            report = self._report(acc.response())
            if report is not None:
                tail.insert(0, encoder.extra_chunk({"chatlane": report}))
            await send(
                {"type": "http.response.body", "body": _sse(tail) + _DONE, "more_body": False}
            )

        async def watch(cancel: anyio.CancelScope) -> None:
            nonlocal disconnected
            while True:
                message: Message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected = True
                    cancel.cancel()
                    return

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(watch, group.cancel_scope)
                await pump(group)
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await events.aclose()
        partial = acc.response()
        if disconnected:
            self._log(partial if headers_sent else None, "the client disconnected")
            return
        if error is None:
            self._log(partial, None)
            return
        logged = error.partial if isinstance(error, StreamInterrupted) else partial
        self._log(logged if headers_sent else None, error)
        failure = _failure_for(error, self.gateway.options.retry_after)
        if not headers_sent:
            raise failure
        # The stream has begun: the error goes in the stream (OpenAI's own shape for it), and
        # no [DONE] follows, so no client takes the cut-off answer for a whole one.
        await send(
            {"type": "http.response.body", "body": _sse([failure.body()]), "more_body": False}
        )

    def _shown(self, event: ChatEvent) -> bool:
        if not self.single_call:
            return True
        if isinstance(event, ToolCallStarted | ToolCallDelta | ToolCallDone):
            return event.index == 0
        return True


async def _until_disconnect(receive: Receive, work: Awaitable[Any]) -> Any:
    """``work``'s result; cancels it and raises `_Disconnected` when the client goes away."""
    import anyio

    result: list[Any] = []
    failed: list[Exception] = []
    disconnected = False

    async def run(cancel: anyio.CancelScope) -> None:
        try:
            result.append(await work)
        except Exception as e:  # raised below, outside the task group (not in a group)
            failed.append(e)
        cancel.cancel()

    async def watch(cancel: anyio.CancelScope) -> None:
        nonlocal disconnected
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
                cancel.cancel()
                return

    async with anyio.create_task_group() as group:
        group.start_soon(watch, group.cancel_scope)
        await run(group.cancel_scope)
    if failed:
        raise failed[0]
    if disconnected and not result:
        raise _Disconnected
    return result[0]


def serve(
    gateway: Gateway,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    log_level: str = "info",
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run the gateway with uvicorn until interrupted."""
    import uvicorn

    config = uvicorn.Config(
        gateway.app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    if on_ready is not None:
        url = f"http://{host}:{port}/v1"
        original = server.startup

        async def startup(sockets: Any = None) -> None:
            await original(sockets)
            on_ready(url)

        server.startup = startup  # type: ignore[method-assign]
    server.run()
