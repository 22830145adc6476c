"""MCP servers' tools as chatlane tools: real servers (the SDK's own server API) over stdio
and streamable HTTP on 127.0.0.1, driven through `Fake`, the CLI and the embedded model."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from chatlane.agent import arun, run
from chatlane.backends.fake import Fake
from chatlane.errors import InputError
from chatlane.mcp import MCPError, MCPServer, MCPToolError, atools, tools
from chatlane.messages import Image, ToolCall, assistant
from test_cli import CLI, fake

SERVER = Path(__file__).parent / "support" / "mcp_server.py"
COMMAND = [sys.executable, str(SERVER)]


@pytest.fixture(scope="module")
def stdio_server() -> Iterator[MCPServer]:
    with MCPServer(COMMAND) as server:
        yield server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [*COMMAND, "http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the MCP HTTP server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_servers_tools_map_into_chatlanes_tool_model(stdio_server: MCPServer) -> None:
    found = {t.name: t for t in stdio_server.tools()}
    assert set(found) == {"forecast", "add", "level", "picture", "fail", "crash"}
    forecast = found["forecast"]
    assert forecast.description is not None
    assert forecast.description.startswith("The weather forecast for a city.")
    assert forecast.parameters["required"] == ["city"]
    assert forecast.parameters["properties"]["days"]["type"] == "integer"
    assert found["picture"].parameters["properties"] == {}
    assert all(t.function is not None for t in found.values())


def test_results_become_text_json_and_image_parts(stdio_server: MCPServer) -> None:
    assert stdio_server.call("forecast", {"city": "Oslo", "days": 3}) == "Oslo: sunny for 3 day(s)"
    assert json.loads(str(stdio_server.call("add", {"a": 2, "b": 40}))) == {"total": 42}
    parts = stdio_server.call("picture")
    assert isinstance(parts, tuple)
    [image] = parts
    assert isinstance(image, Image)
    assert image.media_type == "image/png"
    assert image.data is not None
    assert image.data.startswith(b"\x89PNG")


def test_an_error_result_is_a_tool_error_naming_the_tool(stdio_server: MCPServer) -> None:
    with pytest.raises(MCPToolError, match=r"MCP tool 'fail' failed: .*refused: because"):
        stdio_server.call("fail", {"reason": "because"})
    # The session goes on.
    assert stdio_server.call("forecast", {"city": "Rome"}) == "Rome: sunny for 1 day(s)"


def test_the_agent_runs_mcp_tools_and_reports_their_results(stdio_server: MCPServer) -> None:
    def turn(request: Any) -> Any:
        last = request.messages[-1]
        if last.role.value == "tool":
            return f"Answer: {last.text}"
        return assistant("", [ToolCall("c1", "forecast", {"city": "Oslo", "days": 2})])

    result = run(Fake([turn, turn]), "Weather in Oslo?", tools=stdio_server.tools())
    assert result.text == "Answer: Oslo: sunny for 2 day(s)"
    [tool_run] = result.tool_runs
    assert tool_run.status == "ok"


def test_a_server_that_dies_mid_run_is_a_tool_error_for_the_model() -> None:
    calls = iter(
        [
            assistant("", [ToolCall("c1", "crash", {})]),
            assistant("", [ToolCall("c2", "forecast", {"city": "Oslo"})]),
            "I could not reach the weather service.",
        ]
    )
    with MCPServer(COMMAND) as server:
        result = run(Fake([lambda request: next(calls)] * 3), "Weather?", tools=server.tools())
    assert result.completed
    assert result.text == "I could not reach the weather service."
    assert [r.status for r in result.tool_runs] == ["error", "error"]
    first, second = (m.text for m in result.messages if m.role.value == "tool")
    assert "MCPToolError" in first
    assert "MCPToolError" in second


def test_streamable_http_servers_work_the_same(http_url: str) -> None:
    with MCPServer(http_url, prefix="weather.") as server:
        found = {t.name: t for t in server.tools()}
        assert "weather.forecast" in found
        function = found["weather.forecast"].function
        assert function is not None
        assert function(city="Lima") == "Lima: sunny for 1 day(s)"


def test_the_async_twins_give_coroutine_tools(http_url: str) -> None:
    async def main() -> Any:
        async with MCPServer(http_url) as server:
            found = await server.atools()
            assert asyncio.iscoroutinefunction(found[0].function)
            script = [
                assistant("", [ToolCall("c1", "add", {"a": 1, "b": 2})]),
                lambda request: f"sum {json.loads(request.messages[-1].text)['total']}",
            ]
            return await arun(Fake(script), "1+2?", tools=found)

    result = asyncio.run(main())
    assert result.text == "sum 3"


def test_the_shortcuts_open_servers_and_keep_them_until_closed() -> None:
    found = tools(COMMAND)
    assert "forecast" in {t.name for t in found}
    again = asyncio.run(atools(COMMAND, prefix="x."))
    assert "x.add" in {t.name for t in again}


def test_bad_servers_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="needs a command line or a URL"):
        MCPServer("  ")
    with pytest.raises(MCPError, match="could not be started"):
        MCPServer([sys.executable, str(tmp_path / "missing.py")], timeout=20).open()
    server = MCPServer(COMMAND)
    with pytest.raises(MCPError, match="is not open"):
        server.call("forecast", {"city": "x"})
    assert repr(MCPServer("http://127.0.0.1:1/mcp?key=secret")) == (
        "MCPServer('http://127.0.0.1:1/mcp')"
    )


def test_the_cli_runs_with_mcp_tools(tmp_path: Path) -> None:
    cli = CLI(tmp_path)
    command = f"{sys.executable} {SERVER}"
    result = cli("run", "Weather in Oslo?", "--backend", fake("forecast_agent"), "--mcp", command)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "The server says: Oslo: sunny for 2 day(s)"
    assert "[forecast ok: Oslo: sunny for 2 day(s)]" in result.stderr


def test_the_cli_names_a_server_that_cannot_start(tmp_path: Path) -> None:
    cli = CLI(tmp_path)
    result = cli("run", "x", "--backend", fake("forecast_agent"), "--mcp", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert "could not be started" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.engine
def test_a_forced_call_on_the_embedded_model_reaches_the_server(
    tiny_engine: Any, stdio_server: MCPServer
) -> None:
    level = next(t for t in stdio_server.tools() if t.name == "level")
    result = run(
        tiny_engine, "Set.", tools=[level], tool_choice="level", max_steps=2, max_tokens=60, seed=3
    )
    tool_run = result.tool_runs[0]
    assert tool_run.status == "ok", tool_run
    arguments = result.messages[1].tool_calls[0].arguments
    assert tool_run.content == f"level {arguments['value']} in {arguments['unit']}"
