"""Record and replay HTTP exchanges, for users' own tests of code that calls a backend.

    cassette = Cassette("tests/cassettes/weather.json")           # records once, then replays
    llm = OpenAIChat(url, api_key=key, http_client=cassette.client(),
                     async_http_client=cassette.async_client())

The first run (or ``mode="record"``) sends the requests for real and writes every exchange
to the cassette file: the request (method, URL, body; the API key redacted), the response
(status, headers) and its body as the chunks it arrived in, with the time each arrived, so
an SSE stream is kept byte for byte with its pauses. Later runs (``mode="replay"``) answer
from the file without a network: the same chunks, in the same order, and with
``realtime=True`` the same pauses. A request the cassette does not hold fails the test with
a diff against the nearest recorded one (`CassetteMismatch`).

The cassette works below every backend (it is an httpx transport), so it records whatever
a backend sends and reproduces every quirk a server had.
"""

from __future__ import annotations

import base64
import difflib
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import httpx

__all__ = ["Cassette", "CassetteMismatch"]

Mode = Literal["record", "replay", "auto"]

REDACTED = "<redacted>"

# Request headers that carry credentials; their values are never written.
_SECRET_HEADERS = frozenset(
    {"authorization", "x-api-key", "api-key", "proxy-authorization", "cookie", "x-goog-api-key"}
)
# Request headers worth keeping for a reader of the file (the rest vary from run to run).
_KEPT_REQUEST_HEADERS = frozenset({"content-type", "accept"})
# Response headers that describe the body as the server sent it, not as it is replayed.
# (content-encoding stays: the chunks are the bytes as sent, decoded by the client on replay.)
_DROPPED_RESPONSE_HEADERS = frozenset({"content-length", "transfer-encoding"})

_VERSION = 1


class CassetteMismatch(AssertionError):
    """A request that the cassette holds no answer for (the message shows the difference)."""


class Cassette:
    """A file of recorded HTTP exchanges (see the module docstring).

    Args:
        path: the cassette file (JSON).
        mode: ``"record"`` (send for real and overwrite the file), ``"replay"`` (answer from
            the file only) or ``"auto"`` (replay if the file exists, else record).
        secrets: texts to redact wherever they appear (URLs, bodies, headers) besides the
            credential headers, which are always redacted.
        realtime: on replay, wait between chunks as long as the recording did.
        match: what a request must share with a recorded one: ``"method"``, ``"url"``,
            ``"body"`` (JSON bodies compared as JSON).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        mode: Mode = "auto",
        *,
        secrets: Iterable[str] = (),
        realtime: bool = False,
        match: Sequence[str] = ("method", "url", "body"),
    ) -> None:
        if mode not in ("record", "replay", "auto"):
            raise ValueError(f"mode must be 'record', 'replay' or 'auto', got {mode!r}")
        self.path = Path(path)
        if mode == "auto":
            mode = "replay" if self.path.exists() else "record"
        self.mode: Literal["record", "replay"] = mode
        self._secrets = tuple(s for s in secrets if s)
        self.realtime = realtime
        self.match = tuple(match)
        self._lock = threading.Lock()
        self.interactions: list[dict[str, Any]] = []
        self._used: set[int] = set()
        self._clients: list[httpx.Client] = []
        self._aclients: list[httpx.AsyncClient] = []
        if self.mode == "replay":
            self.interactions = _load(self.path)

    def __repr__(self) -> str:
        return f"Cassette({str(self.path)!r}, mode={self.mode!r})"

    # -- clients -------------------------------------------------------------------------

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client that records or replays through this cassette (closed by
        `close`)."""
        client = httpx.Client(transport=_SyncTransport(self), timeout=None, **kwargs)
        self._clients.append(client)
        return client

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """The async twin of `client`."""
        client = httpx.AsyncClient(transport=_AsyncTransport(self), timeout=None, **kwargs)
        self._aclients.append(client)
        return client

    def close(self) -> None:
        """Close the clients this cassette made (async ones too, from sync code)."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self._aclients:
            import asyncio

            async def close_all() -> None:
                for aclient in self._aclients:
                    await aclient.aclose()

            asyncio.run(close_all())
            self._aclients.clear()

    def __enter__(self) -> Cassette:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- recording -----------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``<redacted>``."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def _request_record(self, request: httpx.Request) -> dict[str, Any]:
        for name, value in request.headers.items():
            if name.lower() in _SECRET_HEADERS:
                # The credential's value, wherever the server echoes it, is a secret too.
                token = value.split(" ", 1)[-1]
                if token and token not in self._secrets:
                    self._secrets = (*self._secrets, token)
        headers = {
            k: self.redact(v)
            for k, v in request.headers.items()
            if k.lower() in _KEPT_REQUEST_HEADERS
        }
        return {
            "method": request.method,
            "url": self.redact(str(request.url)),
            "headers": headers,
            "body": self.redact(request.content.decode("utf-8", "replace")),
        }

    def _chunk_record(self, data: bytes, at: float) -> dict[str, Any]:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return {"t": round(at, 6), "b64": base64.b64encode(data).decode("ascii")}
        return {"t": round(at, 6), "text": self.redact(text)}

    def _add(self, interaction: dict[str, Any]) -> None:
        with self._lock:
            self.interactions.append(interaction)
            self.save()

    def save(self) -> None:
        """Write the recorded exchanges (done after each one while recording)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {"version": _VERSION, "interactions": self.interactions}
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(body, indent=1, ensure_ascii=False) + "\n", "utf-8")
        os.replace(tmp, self.path)

    # -- replaying -----------------------------------------------------------------------

    def _find(self, request: httpx.Request) -> dict[str, Any]:
        wanted = self._request_record(request)
        with self._lock:
            for i, interaction in enumerate(self.interactions):
                if i not in self._used and self._matches(wanted, interaction["request"]):
                    self._used.add(i)
                    return interaction
        raise CassetteMismatch(self._mismatch(wanted))

    def _matches(self, wanted: Mapping[str, Any], recorded: Mapping[str, Any]) -> bool:
        for key in self.match:
            if key == "body":
                if _body_key(wanted["body"]) != _body_key(recorded["body"]):
                    return False
            elif wanted.get(key) != recorded.get(key):
                return False
        return True

    def _mismatch(self, wanted: Mapping[str, Any]) -> str:
        unused = [it["request"] for i, it in enumerate(self.interactions) if i not in self._used]
        head = (
            f"the cassette {str(self.path)!r} holds no answer for "
            f"{wanted['method']} {wanted['url']}"
        )
        if not unused:
            return f"{head}: every recorded exchange ({len(self.interactions)}) was used"
        nearest = max(
            unused,
            key=lambda r: difflib.SequenceMatcher(None, _show(r), _show(wanted)).ratio(),
        )
        diff = "\n".join(
            difflib.unified_diff(
                _show(nearest).splitlines(),
                _show(wanted).splitlines(),
                "recorded",
                "sent",
                lineterm="",
            )
        )
        return f"{head}; the nearest recorded request differs:\n{diff}"


def _body_key(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body


def _show(request: Mapping[str, Any]) -> str:
    body = _body_key(request["body"])
    shown = json.dumps(body, indent=1, sort_keys=True, ensure_ascii=False) if body != "" else ""
    return f"{request['method']} {request['url']}\n{shown}"


def _load(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise CassetteMismatch(
            f"no cassette at {str(path)!r} to replay (record it first: mode='record')"
        ) from None
    except ValueError as e:
        raise ValueError(f"the cassette {str(path)!r} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or data.get("version") != _VERSION:
        raise ValueError(f"the cassette {str(path)!r} is not a version-{_VERSION} cassette")
    interactions: list[dict[str, Any]] = data["interactions"]
    return interactions


def _chunk_bytes(chunk: Mapping[str, Any]) -> bytes:
    if "b64" in chunk:
        return base64.b64decode(chunk["b64"])
    text: str = chunk["text"]
    return text.encode("utf-8")


def _response_headers(response: httpx.Response) -> list[tuple[str, str]]:
    return [
        (k, v)
        for k, v in response.headers.multi_items()
        if k.lower() not in _DROPPED_RESPONSE_HEADERS
    ]


def _response(
    interaction: Mapping[str, Any], stream: Any, request: httpx.Request
) -> httpx.Response:
    recorded = interaction["response"]
    return httpx.Response(
        recorded["status"],
        headers=[tuple(h) for h in recorded["headers"]],
        stream=stream,
        request=request,
    )


class _SyncTransport(httpx.BaseTransport):
    def __init__(self, cassette: Cassette) -> None:
        self.cassette = cassette
        self._real = httpx.HTTPTransport() if cassette.mode == "record" else None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        cassette = self.cassette
        if self._real is None:
            interaction = cassette._find(request)
            return _response(interaction, _ReplayStream(interaction, cassette.realtime), request)
        from chatlane.backends._guard import check

        check(str(request.url).split("?", 1)[0])
        request.read()
        started = time.monotonic()
        record = cassette._request_record(request)
        response = self._real.handle_request(request)
        chunks: list[dict[str, Any]] = []
        headers = _response_headers(response)
        head: dict[str, Any] = {"status": response.status_code, "headers": headers}

        def body() -> Iterator[bytes]:
            try:
                for data in response.stream:  # type: ignore[union-attr]
                    chunks.append(cassette._chunk_record(data, time.monotonic() - started))
                    yield data
            except httpx.TransportError as e:
                chunks.append({"t": round(time.monotonic() - started, 6), "error": str(e)})
                raise
            finally:
                response.close()
                cassette._add({"request": record, "response": {**head, "chunks": chunks}})

        return httpx.Response(
            response.status_code,
            headers=headers,
            stream=_IterStream(body()),
            request=request,
        )

    def close(self) -> None:
        if self._real is not None:
            self._real.close()


class _AsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, cassette: Cassette) -> None:
        self.cassette = cassette
        self._real = httpx.AsyncHTTPTransport() if cassette.mode == "record" else None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        cassette = self.cassette
        if self._real is None:
            interaction = cassette._find(request)
            return _response(interaction, _ReplayStream(interaction, cassette.realtime), request)
        from chatlane.backends._guard import check

        check(str(request.url).split("?", 1)[0])
        await request.aread()
        started = time.monotonic()
        record = cassette._request_record(request)
        response = await self._real.handle_async_request(request)
        chunks: list[dict[str, Any]] = []
        headers = _response_headers(response)
        head: dict[str, Any] = {"status": response.status_code, "headers": headers}

        async def body() -> AsyncIterator[bytes]:
            try:
                async for data in response.stream:  # type: ignore[union-attr]
                    chunks.append(cassette._chunk_record(data, time.monotonic() - started))
                    yield data
            except httpx.TransportError as e:
                chunks.append({"t": round(time.monotonic() - started, 6), "error": str(e)})
                raise
            finally:
                await response.aclose()
                cassette._add({"request": record, "response": {**head, "chunks": chunks}})

        return httpx.Response(
            response.status_code,
            headers=headers,
            stream=_AsyncIterStream(body()),
            request=request,
        )

    async def aclose(self) -> None:
        if self._real is not None:
            await self._real.aclose()


class _IterStream(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


class _AsyncIterStream(httpx.AsyncByteStream):
    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def aclose(self) -> None:
        close = getattr(self._chunks, "aclose", None)
        if close is not None:
            await close()


class _ReplayStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A recorded body, chunk by chunk (with the recorded pauses when ``realtime``); a
    recorded failure is raised where it happened."""

    def __init__(self, interaction: Mapping[str, Any], realtime: bool) -> None:
        self._chunks = interaction["response"]["chunks"]
        self._realtime = realtime

    def _pause(self, previous: float, chunk: Mapping[str, Any]) -> float:
        return max(0.0, float(chunk["t"]) - previous) if self._realtime else 0.0

    def __iter__(self) -> Iterator[bytes]:
        previous = 0.0
        for chunk in self._chunks:
            wait = self._pause(previous, chunk)
            if wait:
                time.sleep(wait)
            previous = float(chunk["t"])
            if "error" in chunk:
                raise httpx.ReadError(f"(recorded) {chunk['error']}")
            yield _chunk_bytes(chunk)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        import asyncio

        previous = 0.0
        for chunk in self._chunks:
            wait = self._pause(previous, chunk)
            if wait:
                await asyncio.sleep(wait)
            previous = float(chunk["t"])
            if "error" in chunk:
                raise httpx.ReadError(f"(recorded) {chunk['error']}")
            yield _chunk_bytes(chunk)
