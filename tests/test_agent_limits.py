"""`RunLimits`: a run's limits and options as one value, the same for all four entry points."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from chatlane.agent import RunLimits, StopReason, arun, arun_stream, run, run_stream
from chatlane.backends.fake import Fake
from chatlane.errors import InputError
from chatlane.messages import ToolCall, assistant
from chatlane.tools import tool


@tool
def ping() -> str:
    """Answers pong."""
    return "pong"


def calls_forever() -> Fake:
    return Fake([assistant("", [ToolCall("c", "ping", {})])] * 20)


def test_the_sync_and_async_signatures_agree() -> None:
    def parameters(function: object, drop: tuple[str, ...] = ()) -> list[tuple[str, object]]:
        sig = inspect.signature(function)  # type: ignore[arg-type]
        return [(p.name, p.kind) for p in sig.parameters.values() if p.name not in drop]

    assert parameters(run) == parameters(arun)
    assert parameters(run_stream) == parameters(arun_stream)
    assert parameters(run, drop=("on_event",)) == parameters(run_stream)
    assert "limits" in inspect.signature(run).parameters


def test_limits_apply_and_keywords_win_over_them() -> None:
    limited = run(calls_forever(), "go", tools=[ping], limits=RunLimits(max_steps=2))
    assert (limited.stop_reason, limited.steps) == (StopReason.MAX_STEPS, 2)
    overridden = run(
        calls_forever(), "go", tools=[ping], limits=RunLimits(max_steps=2), max_steps=3
    )
    assert overridden.steps == 3
    plain = run(calls_forever(), "go", tools=[ping], max_steps=1)
    assert plain.steps == 1
    result = asyncio.run(arun(calls_forever(), "go", tools=[ping], limits=RunLimits(max_steps=2)))
    assert result.steps == 2


def test_limits_must_be_run_limits() -> None:
    with pytest.raises(InputError, match="limits must be a RunLimits"):
        run(calls_forever(), "go", limits={"max_steps": 2})  # type: ignore[arg-type]


def test_run_limits_are_a_value() -> None:
    limits = RunLimits(max_steps=3, tool_timeout=1.5)
    assert limits == RunLimits(max_steps=3, tool_timeout=1.5)
    with pytest.raises(AttributeError):
        limits.max_steps = 4  # type: ignore[misc]
