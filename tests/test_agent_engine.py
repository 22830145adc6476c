"""The agent loop end to end on the embedded engine (the tiny random-weight Llama 3 model).

The weights are random, so the model's words are noise; but a forced tool call is constrained
to parse and validate, so the loop's whole path is real: the call is decoded from the engine's
tokens, the tool runs, and its result is rendered into the next prompt the engine receives.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from chatlane.agent import AgentEvent, StepStarted, StopReason, arun, run
from chatlane.messages import Role, user
from chatlane.request import ChatRequest
from chatlane.tools import tool

pytestmark = pytest.mark.engine

pytest.importorskip("llama_cpp")
pytest.importorskip("llguidance")


@tool
def get_weather(
    city: Annotated[str, Field(max_length=16)],
    unit: Literal["celsius", "fahrenheit"] = "celsius",
) -> dict[str, Any]:
    """Look up the current weather in a city.

    Args:
        city: The city's name.
        unit: The temperature unit.
    """
    return {"city": city, "temperature": 21, "unit": unit}


class Verdict(BaseModel):
    sunny: bool
    mood: Literal["glad", "sad", "calm"]


def test_a_forced_tool_call_runs_and_its_result_reaches_the_engine(tiny_engine: Any) -> None:
    requests: list[ChatRequest] = []

    def on_event(event: AgentEvent) -> None:
        if isinstance(event, StepStarted):
            requests.append(event.request)

    result = run(
        tiny_engine,
        [user("What is the weather in Paris?")],
        tools=[get_weather],
        tool_choice="get_weather",
        max_steps=2,
        max_tokens=48,
        seed=3,
        on_event=on_event,
    )

    # Step 1: the engine's constrained output parsed into a valid call, which ran.
    [first_run] = [r for r in result.tool_runs if r.step == 1]
    assert first_run.status == "ok", first_run.content
    assert first_run.call.name == "get_weather"
    assert first_run.value["city"] == first_run.call.arguments["city"]
    assert result.responses[0].finish_reason == "tool_calls"
    # Step 2: the model was asked again (no longer forced) with the result tied to the call.
    assert len(requests) == 2
    assert requests[0].tool_choice == "get_weather"
    assert requests[1].tool_choice is None
    sent = requests[1].messages
    assert sent[1].role is Role.ASSISTANT
    assert sent[1].tool_calls[0].id == first_run.call.id
    assert sent[2].role is Role.TOOL
    assert sent[2].tool_call_id == first_run.call.id
    assert sent[2].text == first_run.content
    # The result is in the prompt the engine rendered and received, token for token.
    prompt = tiny_engine.render(sent, tools=[get_weather])
    assert "<|start_header_id|>ipython<|end_header_id|>" in prompt.text
    assert first_run.content in prompt.text
    received = [int(t) for t in tiny_engine.llama.input_ids[: len(prompt.tokens)]]
    assert received == list(prompt.tokens)
    assert result.stop_reason in (StopReason.ANSWERED, StopReason.MAX_STEPS)
    assert result.steps == 2
    assert result.usage.prompt_tokens > len(prompt.tokens)  # both steps are counted


def test_the_async_loop_gives_the_same_run(tiny_engine: Any) -> None:
    arguments: dict[str, Any] = {
        "tools": [get_weather],
        "tool_choice": "get_weather",
        "max_steps": 2,
        "max_tokens": 32,
        "seed": 5,
    }
    sync = run(tiny_engine, "Weather in Oslo?", **arguments)
    asynchronous = asyncio.run(arun(tiny_engine, "Weather in Oslo?", **arguments))
    # Call ids are random: the runs must agree on everything else, and on which result
    # answers which call.
    assert _without_ids(asynchronous.messages) == _without_ids(sync.messages)
    assert [r.status for r in asynchronous.tool_runs] == [r.status for r in sync.tool_runs]
    assert asynchronous.usage == sync.usage


def test_structured_output_through_the_loop_validates_on_the_engine(tiny_engine: Any) -> None:
    result = run(tiny_engine, "Is it sunny? Answer as JSON.", response_format=Verdict, seed=2)
    assert result.stop_reason is StopReason.ANSWERED
    assert isinstance(result.output, Verdict)
    assert result.steps == 1


def _without_ids(messages: Any) -> list[Any]:
    """The messages as tuples, each call id replaced by its order of first appearance."""
    order: dict[str, str] = {}

    def rename(call_id: str | None) -> str | None:
        return None if call_id is None else order.setdefault(call_id, f"id{len(order)}")

    return [
        (
            m.role,
            m.content,
            [(rename(c.id), c.name, c.arguments, c.raw_arguments) for c in m.tool_calls],
            rename(m.tool_call_id),
            m.name,
            m.reasoning,
        )
        for m in messages
    ]
