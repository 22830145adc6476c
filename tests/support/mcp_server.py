"""A real MCP server for the tests, written with the MCP SDK's own server API (FastMCP).

Run as ``python mcp_server.py`` (stdio) or ``python mcp_server.py http PORT`` (streamable
HTTP on 127.0.0.1). Its tools: ``forecast`` (text), ``add`` (structured content), ``level`` (bounded arguments),
``picture`` (an image), ``fail`` (an error result) and ``crash`` (the process exits).
"""

from __future__ import annotations

import base64
import os
import sys
from typing import Annotated, Literal

from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.utilities.types import Image
from pydantic import BaseModel, Field

PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 0
server = FastMCP("chatlane-test", host="127.0.0.1", port=PORT or 8000, log_level="ERROR")

# A 1x1 transparent PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


class Sum(BaseModel):
    total: int


@server.tool()
def forecast(city: str, days: int = 1) -> str:
    """The weather forecast for a city.

    Args:
        city: the city's name.
        days: how many days ahead.
    """
    return f"{city}: sunny for {days} day(s)"


@server.tool()
def add(a: int, b: int) -> Sum:
    """Add two numbers."""
    return Sum(total=a + b)


@server.tool()
def level(value: Annotated[int, Field(ge=0, le=9)], unit: Literal["c", "f"]) -> str:
    """Bounded arguments, which even a random-weight model completes quickly."""
    return f"level {value} in {unit}"


@server.tool()
def picture() -> Image:
    """A tiny picture."""
    return Image(data=PNG, format="png")


@server.tool()
def fail(reason: str) -> str:
    """Always fails."""
    raise ValueError(f"refused: {reason}")


@server.tool()
def crash() -> str:
    """Ends the server's process at once."""
    os._exit(3)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "http":
        server.run("streamable-http")
    else:
        server.run("stdio")
