"""Tools from Model Context Protocol servers, as ordinary chatlane tools.

    with chatlane.mcp.MCPServer("python weather_server.py") as server:
        result = chatlane.agent.run(backend, "Weather in Oslo?", tools=server.tools())

A server is a command line (run as a child process, spoken to over stdio) or an ``http://``
or ``https://`` URL (streamable HTTP). Each of its tools becomes a `Tool` with the server's
name, description and input schema, and a function that calls the server, so the agent loop
runs it like any other tool. What the server answers maps onto a tool result: text and
images as message parts, structured content as JSON when there is no text, and an error
result (``isError``) or a server that went away as a `MCPToolError`, which the agent reports
to the model as a failed call rather than ending the run.

The MCP session is asynchronous; chatlane keeps it on an event loop of its own in a
background thread, so the same server serves sync code (`tools`) and async code (`atools`,
whose functions are coroutines) alike. Needs the ``mcp`` extra: ``pip install 'chatlane[mcp]'``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import json
import os
import shlex
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self

from chatlane.errors import ChatlaneError, InputError, ToolError

if TYPE_CHECKING:
    from chatlane.messages import Image, Text
    from chatlane.tools import Tool

__all__ = ["MCPError", "MCPServer", "MCPToolError", "atools", "tools"]


class MCPError(ChatlaneError):
    """An MCP server could not be started, reached or spoken to."""


class MCPToolError(ToolError):
    """An MCP tool call failed: the server answered with an error, or went away."""


_OPEN: weakref.WeakSet[MCPServer] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for server in list(_OPEN):
        with contextlib.suppress(Exception):
            server.close()


class MCPServer:
    """One MCP server and chatlane's session with it (see the module docstring).

    Args:
        target: a command line (a string, split like a shell would, or a list of arguments)
            or a streamable-HTTP URL.
        env: extra environment variables for a command's process.
        cwd: the working directory of a command's process.
        headers: HTTP headers for a URL (``Authorization``, ...); never shown in reprs.
        prefix: put before every tool name (``"weather."``), to keep the tools of several
            servers apart.
        timeout: seconds to wait for the server to start and for each call (None: no limit).
    """

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        headers: Mapping[str, str] | None = None,
        prefix: str = "",
        timeout: float | None = 60.0,
    ) -> None:
        if isinstance(target, str):
            if not target.strip():
                raise InputError("an MCP server needs a command line or a URL, got ''")
            self._url = target if target.startswith(("http://", "https://")) else None
            self._argv = None if self._url else shlex.split(target)
        else:
            argv = [str(a) for a in target]
            if not argv:
                raise InputError("an MCP server needs a command line or a URL, got []")
            self._url, self._argv = None, argv
        self._env = dict(env or {})
        self._cwd = os.fspath(cwd) if cwd is not None else None
        self._headers = dict(headers or {})
        self.prefix = prefix
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: Any = None
        self._stop: asyncio.Event | None = None
        self._lifetime: concurrent.futures.Future[None] | None = None
        self._failure: BaseException | None = None
        self._listed: list[Any] | None = None

    @property
    def target(self) -> str:
        """The command line or URL (the URL without its query, which may hold a key)."""
        if self._url is not None:
            return self._url.split("?", 1)[0]
        assert self._argv is not None
        return shlex.join(self._argv)

    def __repr__(self) -> str:
        return f"MCPServer({self.target!r})"

    # -- lifetime ----------------------------------------------------------------------

    def open(self) -> Self:
        """Start (or connect to) the server and open the session; a no-op if open."""
        if self._loop is not None:
            return self
        try:
            import mcp  # noqa: F401
        except ImportError as e:
            raise MCPError("MCP tools need the mcp package: pip install 'chatlane[mcp]'") from e
        loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        thread = threading.Thread(
            target=loop.run_forever, name=f"chatlane-mcp {self.target}", daemon=True
        )
        thread.start()
        self._loop, self._thread = loop, thread
        self._lifetime = asyncio.run_coroutine_threadsafe(self._live(ready), loop)
        try:
            ready.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            self.close()
            raise MCPError(
                f"the MCP server {self.target!r} did not start in {self.timeout} s"
            ) from None
        except BaseException as e:
            self.close()
            raise MCPError(
                f"the MCP server {self.target!r} could not be started: {_reason(e)}"
            ) from e
        _OPEN.add(self)
        return self

    async def _live(self, ready: concurrent.futures.Future[None]) -> None:
        """The session's one task: opens it, keeps it until `close`, closes it (the MCP
        SDK's context managers must be left in the task that entered them)."""
        from mcp import ClientSession

        self._stop = asyncio.Event()
        try:
            async with contextlib.AsyncExitStack() as stack:
                if self._url is not None:
                    import httpx
                    from mcp.client.streamable_http import streamable_http_client

                    client = await stack.enter_async_context(
                        httpx.AsyncClient(headers=self._headers, timeout=self.timeout)
                    )
                    read, write, _ = await stack.enter_async_context(
                        streamable_http_client(self._url, http_client=client)
                    )
                else:
                    from mcp.client.stdio import StdioServerParameters, stdio_client

                    assert self._argv is not None
                    params = StdioServerParameters(
                        command=self._argv[0],
                        args=self._argv[1:],
                        env={**os.environ, **self._env},
                        cwd=self._cwd,
                    )
                    with open(os.devnull, "w") as errlog:
                        read, write = await stack.enter_async_context(
                            stdio_client(params, errlog=errlog)
                        )
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                self._session = session
                ready.set_result(None)
                await self._stop.wait()
        except BaseException as e:
            self._failure = e
            if not ready.done():
                ready.set_exception(e)
        finally:
            self._session = None

    def close(self) -> None:
        """End the session (and the server's process, for a command)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        _OPEN.discard(self)
        if self._stop is not None:
            loop.call_soon_threadsafe(self._stop.set)
        if self._lifetime is not None:
            with contextlib.suppress(BaseException):
                self._lifetime.result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.open)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    # -- calls -------------------------------------------------------------------------

    def _submit(
        self, make: Callable[[Any], Coroutine[Any, Any, Any]]
    ) -> concurrent.futures.Future[Any]:
        loop = self._loop
        if loop is None:
            raise MCPError(f"the MCP server {self.target!r} is not open (use open() or with)")
        session = self._session
        if session is None:
            reason = f": {_reason(self._failure)}" if self._failure is not None else ""
            raise MCPToolError(f"the MCP server {self.target!r} is gone{reason}")
        return asyncio.run_coroutine_threadsafe(self._guarded(make(session)), loop)

    async def _guarded(self, call: Awaitable[Any]) -> Any:
        # The SDK fails a pending request when the connection closes; a server that stops
        # answering without closing it is caught by the timeout.
        try:
            return await asyncio.wait_for(call, self.timeout)
        except TimeoutError:
            raise MCPToolError(
                f"the MCP server {self.target!r} did not answer in {self.timeout} s"
            ) from None

    def _result(self, future: concurrent.futures.Future[Any]) -> Any:
        try:
            return future.result()
        except (MCPToolError, MCPError):
            raise
        except Exception as e:
            raise MCPToolError(f"the MCP server {self.target!r} failed: {_reason(e)}") from e

    def _list(self) -> list[Any]:
        if self._listed is None:

            async def every_page(session: Any) -> list[Any]:
                found: list[Any] = []
                cursor: str | None = None
                while True:
                    page = await session.list_tools(cursor)
                    found.extend(page.tools)
                    cursor = page.nextCursor
                    if not cursor:
                        return found

            self.open()
            self._listed = self._result(self._submit(every_page))
        return self._listed

    def call(
        self, name: str, arguments: Mapping[str, Any] | None = None
    ) -> str | tuple[Text | Image, ...]:
        """Call the server's tool ``name``; its result as tool-message content.

        Raises:
            MCPToolError: the server answered with an error result, or is gone.
        """
        future = self._submit(lambda s: s.call_tool(name, dict(arguments or {})))
        return _content(name, self._result(future))

    async def acall(
        self, name: str, arguments: Mapping[str, Any] | None = None
    ) -> str | tuple[Text | Image, ...]:
        """`call` for async code."""
        future = self._submit(lambda s: s.call_tool(name, dict(arguments or {})))
        try:
            result = await asyncio.wrap_future(future)
        except (MCPToolError, MCPError):
            raise
        except Exception as e:
            raise MCPToolError(f"the MCP server {self.target!r} failed: {_reason(e)}") from e
        return _content(name, result)

    def tools(self) -> list[Tool]:
        """The server's tools, with functions for sync code (opens the server if needed)."""
        return [self._tool(t, asynchronous=False) for t in self._list()]

    async def atools(self) -> list[Tool]:
        """The server's tools, with coroutine functions for async code."""
        listed = await asyncio.to_thread(self._list)
        return [self._tool(t, asynchronous=True) for t in listed]

    def _tool(self, listed: Any, *, asynchronous: bool) -> Tool:
        from chatlane.tools import Tool

        name = str(listed.name)
        schema = dict(listed.inputSchema or {})
        schema.setdefault("type", "object")
        if schema.get("type") == "object":
            schema.setdefault("properties", {})
        function: Callable[..., Any]
        if asynchronous:

            async def function(**arguments: Any) -> str | tuple[Text | Image, ...]:
                return await self.acall(name, arguments)

        else:

            def function(**arguments: Any) -> str | tuple[Text | Image, ...]:
                return self.call(name, arguments)

        function.__name__ = name
        return Tool(
            self.prefix + name,
            listed.description or None,
            schema,
            function=function,
        )


def tools(*targets: str | Sequence[str] | MCPServer, prefix: str = "") -> list[Tool]:
    """The tools of every server named (each opened and kept open until the interpreter
    exits, or until its tools' server is closed): a shortcut for `MCPServer(...).tools()`."""
    found: list[Tool] = []
    for target in targets:
        server = target if isinstance(target, MCPServer) else MCPServer(target, prefix=prefix)
        found.extend(server.open().tools())
    return found


async def atools(*targets: str | Sequence[str] | MCPServer, prefix: str = "") -> list[Tool]:
    """`tools` for async code: the tools' functions are coroutines."""
    found: list[Tool] = []
    for target in targets:
        server = target if isinstance(target, MCPServer) else MCPServer(target, prefix=prefix)
        await asyncio.to_thread(server.open)
        found.extend(await server.atools())
    return found


def _content(name: str, result: Any) -> str | tuple[Text | Image, ...]:
    """An MCP tool result as tool-message content (text and image parts, or JSON)."""
    import base64

    from chatlane.messages import Image, Text

    parts: list[Text | Image] = []
    for block in result.content or ():
        kind = getattr(block, "type", None)
        if kind == "text":
            parts.append(Text(block.text))
        elif kind == "image":
            parts.append(Image.from_bytes(base64.b64decode(block.data), block.mimeType))
        elif kind == "resource" and hasattr(block.resource, "text"):
            parts.append(Text(block.resource.text))
        elif kind == "resource_link":
            parts.append(Text(f"[{block.name}]({block.uri})"))
        else:
            parts.append(Text(json.dumps(block.model_dump(mode="json"), ensure_ascii=False)))
    if result.isError:
        text = " ".join(p.text for p in parts if isinstance(p, Text)) or "no details"
        raise MCPToolError(f"the MCP tool {name!r} failed: {text}")
    if not parts and result.structuredContent is not None:
        return json.dumps(result.structuredContent, ensure_ascii=False)
    if all(isinstance(p, Text) for p in parts):
        return "".join(p.text for p in parts if isinstance(p, Text))
    return tuple(parts)


def _reason(error: BaseException | None) -> str:
    """What went wrong, unwrapping the SDK's exception groups."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    if error is None:
        return "unknown"
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if str(error) else text
