"""Backends and tools that the command-line tests load with ``--backend`` / ``--tool``.

They are named ``tests/cli_fakes.py:NAME`` on the command line, as a user names their own.
"""

from __future__ import annotations

import os
from typing import Any

from chatlane.backends.fake import Fake
from chatlane.errors import RateLimited
from chatlane.events import Finished, TextDelta, UsageReported
from chatlane.request import ChatRequest
from chatlane.response import FinishReason, Usage

MANY = 10_000


def _last_user(request: ChatRequest) -> str:
    return next(m.text for m in reversed(request.messages) if m.role.value == "user")


def _echo(request: ChatRequest) -> str:
    system = next((m.text for m in request.messages if m.role.value == "system"), None)
    prefix = f"[{system}] " if system else ""
    return f"{prefix}echo: {_last_user(request)}"


def echo() -> Fake:
    """Answers every request with ``echo: <the last user message>`` (system prompt first)."""
    return Fake([_echo] * MANY, model="echo-1")


def slow_echo() -> Fake:
    """`echo`, but each event takes ``$FAKE_DELAY`` seconds (default 0.05)."""
    return Fake([_echo] * MANY, model="echo-1", delay=float(os.environ.get("FAKE_DELAY", "0.05")))


def _count_turns(request: ChatRequest) -> str:
    turns = sum(1 for m in request.messages if m.role.value == "user")
    return f"turn {turns}: {_last_user(request)}"


def turns() -> Fake:
    """Says how many user messages the conversation holds: shows that history is sent."""
    return Fake([_count_turns] * MANY, model="turns-1")


def _flaky(request: ChatRequest) -> Any:
    text = _last_user(request)
    if "fail" in text:
        return RateLimited("429 Too Many Requests: slow down", status_code=429, body="slow down")
    return f"ok: {text}"


def flaky() -> Fake:
    """Fails with a rate limit for prompts containing 'fail', else answers ``ok: <prompt>``."""
    return Fake([_flaky] * MANY, model="flaky-1")


def _city(request: ChatRequest) -> str:
    return '{"name": "Heidelberg", "population": 160000}'


def city() -> Fake:
    """Answers with a JSON city."""
    return Fake([_city] * MANY, model="city-1")


def _broken(request: ChatRequest) -> list[Any]:
    from chatlane.errors import ConnectError

    return [TextDelta("Half an ans"), ConnectError("connection reset by peer")]


def broken() -> Fake:
    """Streams a few words, then the connection breaks."""
    return Fake([_broken] * MANY, model="broken-1")


def _usage_only(request: ChatRequest) -> list[Any]:
    return [
        TextDelta("counted"),
        Finished(FinishReason.STOP),
        UsageReported(Usage(7, 3, 10)),
    ]


def counted() -> Fake:
    """Answers ``counted`` and reports 7 prompt and 3 completion tokens."""
    return Fake([_usage_only] * MANY, model="counted-1")


not_a_backend = 42


def get_weather(city: str) -> str:
    """Look up the current weather.

    Args:
        city: The city to look up.
    """
    return f"21 degrees and sunny in {city}"


def _weather_turn(request: ChatRequest) -> Any:
    from chatlane.messages import ToolCall, assistant

    last = request.messages[-1]
    if last.role.value == "tool":
        return f"The tool says: {last.text}"
    city = last.text.rsplit(" ", 1)[-1].strip("?")
    return assistant("Let me look.", [ToolCall("call_1", "get_weather", {"city": city})])


def weather_agent() -> Fake:
    """Calls ``get_weather`` for the last word of the question, then reports the result."""
    return Fake([_weather_turn] * MANY, model="agent-1")


def _forecast_turn(request: ChatRequest) -> Any:
    from chatlane.messages import ToolCall, assistant

    last = request.messages[-1]
    if last.role.value == "tool":
        return f"The server says: {last.text}"
    city = last.text.rsplit(" ", 1)[-1].strip("?")
    return assistant("", [ToolCall("call_1", "forecast", {"city": city, "days": 2})])


def forecast_agent() -> Fake:
    """Calls the test MCP server's ``forecast`` for the last word, then reports the result."""
    return Fake([_forecast_turn] * MANY, model="agent-1")


MARKDOWN = "Here is **bold** advice.\n\n```python\nprint('hi')\n```\n"


def markdown_thinker() -> Fake:
    """Thinks first (reasoning), then answers in markdown with a code block."""
    from chatlane.events import ReasoningDelta

    def turn(request: ChatRequest) -> Any:
        return [
            ReasoningDelta("Let me think about it."),
            *(TextDelta(MARKDOWN[i : i + 5]) for i in range(0, len(MARKDOWN), 5)),
            Finished(FinishReason.STOP),
        ]

    return Fake([turn] * MANY, model="md-1")


def cached_echo() -> Fake:
    """`echo` whose usage says the server's prefix cache served most of the prompt."""
    from chatlane.messages import assistant
    from chatlane.response import ChatResponse

    def turn(request: ChatRequest) -> ChatResponse:
        return ChatResponse(
            assistant(_echo(request)), FinishReason.STOP, Usage(120, 8, 128, 112, 3), model="echo-1"
        )

    return Fake([turn] * MANY, model="echo-1")


def _code_turn(request: ChatRequest) -> Any:
    from chatlane.messages import ToolCall, assistant

    last = request.messages[-1]
    if last.role.value == "tool":
        return f"The code says: {last.text}"
    return assistant("", [ToolCall("call_1", "code_interpreter", {"code": "6 * 7"})])


def coder() -> Fake:
    """Runs ``6 * 7`` in the code interpreter, then reports what came back."""
    return Fake([_code_turn] * MANY, model="coder-1")
