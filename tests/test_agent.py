"""The agent loop on the scripted `Fake` backend: every test runs the sync and the async loop."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

from chatlane._sandbox import Sandbox
from chatlane.agent import (
    AgentError,
    AgentResult,
    ApproveCall,
    CancelCall,
    ChangeCall,
    OutputRejected,
    RunFinished,
    StepFinished,
    StepStarted,
    StopReason,
    StopRun,
    ToolRunFinished,
    ToolRunStarted,
    arun,
    arun_stream,
    run,
    run_stream,
)
from chatlane.backends.fake import Fake
from chatlane.errors import ConnectError, InputError, StructuredOutputError
from chatlane.events import ResponseStarted, TextDelta
from chatlane.messages import Message, Role, ToolCall, assistant, system, tool_result, user
from chatlane.request import ChatRequest
from chatlane.response import ChatResponse, Usage
from chatlane.tools import Tool, brave_search, code_interpreter, tool


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first.
        b: the second.
    """
    return a + b


@tool
def divide(a: float, b: float) -> float:
    """Divide a by b."""
    return a / b


class City(BaseModel):
    name: str
    people: int


class Point(BaseModel):
    x: int
    y: int


class Search(BaseModel):
    """Search the notes."""

    query: str
    limit: int = 3


@pytest.fixture(params=["sync", "async"])
def go(request: pytest.FixtureRequest) -> Callable[..., AgentResult]:
    """Run the loop, sync or async, with the same arguments."""

    def sync(backend: Any, messages: Any, **kwargs: Any) -> AgentResult:
        return run(backend, messages, **kwargs)

    def asynchronous(backend: Any, messages: Any, **kwargs: Any) -> AgentResult:
        return asyncio.run(arun(backend, messages, **kwargs))

    return sync if request.param == "sync" else asynchronous


def call(name: str, arguments: dict[str, Any] | None = None, id: str | None = None) -> ToolCall:
    return Fake.call(name, arguments, id=id)


def tool_messages(request_messages: tuple[Message, ...]) -> list[tuple[str | None, str]]:
    return [(m.tool_call_id, m.text) for m in request_messages if m.role is Role.TOOL]


# Multi-step runs ----------------------------------------------------------------------------


def test_multi_step_run_sends_results_tied_to_call_ids(go: Callable[..., AgentResult]) -> None:
    fake = Fake(
        [
            Fake.calls(call("add", {"a": 2, "b": 3}, id="c1")),
            Fake.calls(call("add", {"a": 5, "b": 10}, id="c2"), text="Now the second."),
            "The answer is 15.",
        ]
    )
    conversation = [system("Use the tools."), user("What is 2 + 3 + 10?")]
    snapshot = list(conversation)

    result = go(fake, conversation, tools=[add])

    assert result.stop_reason is StopReason.ANSWERED
    assert result.completed
    assert result.text == "The answer is 15."
    # The caller's list is untouched; the result holds the whole new conversation.
    assert conversation == snapshot
    assert len(conversation) == 2
    assert result.messages[:2] == tuple(snapshot)
    roles = [m.role.value for m in result.new_messages]
    assert roles == ["assistant", "tool", "assistant", "tool", "assistant"]
    # What the model was sent at each step.
    assert len(fake.requests) == 3
    assert fake.requests[0].messages == tuple(snapshot)
    second = fake.requests[1].messages
    assert second[2].tool_calls[0].id == "c1"
    assert tool_messages(second) == [("c1", "5")]
    assert second[3].name == "add"
    assert tool_messages(fake.requests[2].messages) == [("c1", "5"), ("c2", "15")]
    assert [t.name for t in fake.requests[0].tools] == ["add"]
    # Every response and the summed usage.
    assert result.steps == 3
    assert [r.text for r in result.responses] == ["", "Now the second.", "The answer is 15."]
    total = Usage()
    for response in result.responses:
        assert response.usage is not None
        total = total + response.usage
    assert result.usage == total
    assert result.usage.total_tokens > 0
    assert [(r.step, r.status, r.value) for r in result.tool_runs] == [(1, "ok", 5), (2, "ok", 15)]


def test_a_plain_answer_ends_after_one_step(go: Callable[..., AgentResult]) -> None:
    fake = Fake(["Hello there."])
    result = go(fake, "hi", tools=[add])
    assert result.text == "Hello there."
    assert result.messages == (user("hi"), assistant("Hello there."))
    assert result.tool_runs == ()


def test_plain_functions_and_async_functions_are_tools(go: Callable[..., AgentResult]) -> None:
    def shout(text: str) -> str:
        """Upper-case a text."""
        return text.upper()

    async def whisper(text: str) -> str:
        """Lower-case a text."""
        await asyncio.sleep(0)
        return text.lower()

    fake = Fake(
        [
            Fake.calls(call("shout", {"text": "Hi"}), call("whisper", {"text": "HO"})),
            "ok",
        ]
    )
    result = go(fake, "go", tools=[shout, whisper])
    assert tool_messages(fake.requests[1].messages) == [
        ("call_shout", "HI"),
        ("call_whisper", "ho"),
    ]
    assert result.text == "ok"


def test_structured_tool_results_are_sent_as_json(go: Callable[..., AgentResult]) -> None:
    @tool
    def lookup(name: str) -> dict[str, Any]:
        """Facts about a city."""
        return {"name": name, "people": 3_700_000, "tags": ["capital"]}

    @tool
    def city(name: str) -> City:
        """A city as a model."""
        return City(name=name, people=1)

    @tool
    def nothing() -> None:
        """Returns nothing."""

    fake = Fake(
        [
            Fake.calls(
                call("lookup", {"name": "Berlin"}), call("city", {"name": "X"}), call("nothing")
            ),
            "ok",
        ]
    )
    go(fake, "go", tools=[lookup, city, nothing])
    assert [text for _, text in tool_messages(fake.requests[1].messages)] == [
        '{"name": "Berlin", "people": 3700000, "tags": ["capital"]}',
        '{"name":"X","people":1}',
        "null",
    ]


def test_pydantic_arguments_reach_the_function_as_models(go: Callable[..., AgentResult]) -> None:
    seen: list[Any] = []

    @tool
    def plot(point: Point, label: str = "p") -> str:
        """Plot a point."""
        seen.append((point, label))
        return "plotted"

    fake = Fake([Fake.calls(call("plot", {"point": {"x": "1", "y": 2}})), "ok"])
    go(fake, "go", tools=[plot])
    assert seen == [(Point(x=1, y=2), "p")]


def test_a_model_tool_with_a_one_argument_function_gets_the_model(
    go: Callable[..., AgentResult],
) -> None:
    def search(request: Search) -> list[str]:
        return [request.query] * request.limit

    search_tool = Tool.from_model(Search, name="search")
    search_tool = Tool(
        search_tool.name,
        search_tool.description,
        search_tool.parameters,
        function=search,
        model=Search,
    )
    fake = Fake([Fake.calls(call("search", {"query": "q", "limit": 2})), "ok"])
    go(fake, "go", tools=[search_tool])
    assert tool_messages(fake.requests[1].messages) == [("call_search", '["q", "q"]')]


def test_a_schema_tool_with_a_function_is_validated_against_its_schema(
    go: Callable[..., AgentResult],
) -> None:
    def weather(city: str, unit: str = "C") -> str:
        return f"20 {unit} in {city}"

    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
        "required": ["city"],
    }
    weather_tool = Tool("weather", "The weather.", schema, function=weather)
    fake = Fake(
        [
            Fake.calls(call("weather", {"city": "Rome", "unit": "K"}, id="bad")),
            Fake.calls(call("weather", {"city": "Rome", "unit": "F"}, id="good")),
            "ok",
        ]
    )
    result = go(fake, "go", tools=[weather_tool])
    messages = tool_messages(fake.requests[2].messages)
    assert messages[0][0] == "bad"
    assert messages[0][1].startswith("Error: invalid arguments for tool 'weather':\n- ")
    assert "'K'" in messages[0][1]
    assert messages[1] == ("good", "20 F in Rome")
    assert [r.status for r in result.tool_runs] == ["invalid", "ok"]


# Parallel calls -----------------------------------------------------------------------------


def test_parallel_calls_run_concurrently_and_answer_in_call_order() -> None:
    barrier = threading.Barrier(2, timeout=10)
    fast_reported = threading.Event()

    @tool
    def slow(name: str) -> str:
        """Finishes only after the loop has reported `fast` as finished."""
        barrier.wait()  # both calls are running at the same time, or this times out
        assert fast_reported.wait(10)
        return f"slow {name}"

    @tool
    def fast(name: str) -> str:
        """Finishes at once."""
        barrier.wait()
        return f"fast {name}"

    fake = Fake(
        [Fake.calls(call("slow", {"name": "a"}, id="1"), call("fast", {"name": "b"}, id="2")), "ok"]
    )
    log: list[tuple[str, int]] = []

    def on_event(event: Any) -> None:
        if isinstance(event, ToolRunStarted):
            log.append(("started", event.index))
        elif isinstance(event, ToolRunFinished):
            log.append(("finished", event.run.index))
            if event.run.index == 1:
                fast_reported.set()

    result = run(fake, "go", tools=[slow, fast], on_event=on_event)

    # Both started before either finished, and the second call finished first...
    assert sorted(log[:2]) == [("started", 0), ("started", 1)]
    assert log[2:] == [("finished", 1), ("finished", 0)]
    # ...yet the results go back in call order.
    assert tool_messages(fake.requests[1].messages) == [("1", "slow a"), ("2", "fast b")]
    assert [r.index for r in result.tool_runs] == [0, 1]


def test_parallel_async_calls_run_as_concurrent_tasks() -> None:
    async def main() -> tuple[AgentResult, list[tuple[str, int]], Fake]:
        barrier = asyncio.Barrier(3)
        first_may_finish = asyncio.Event()

        @tool
        async def lookup(key: str) -> str:
            """Look a key up."""
            await asyncio.wait_for(barrier.wait(), 10)
            if key == "first":
                await asyncio.wait_for(first_may_finish.wait(), 10)
            else:
                first_may_finish.set()
            return key.upper()

        @tool
        def blocking(key: str) -> str:
            """A sync tool, run in a thread while the async ones wait."""
            return key * 2

        fake = Fake(
            [
                Fake.calls(
                    call("lookup", {"key": "first"}, id="a"),
                    call("lookup", {"key": "second"}, id="b"),
                    call("lookup", {"key": "third"}, id="c"),
                    call("blocking", {"key": "x"}, id="d"),
                ),
                "ok",
            ]
        )
        log: list[tuple[str, int]] = []
        async with arun_stream(fake, "go", tools=[lookup, blocking]) as stream:
            async for event in stream:
                if isinstance(event, ToolRunStarted):
                    log.append(("started", event.index))
                elif isinstance(event, ToolRunFinished):
                    log.append(("finished", event.run.index))
            result = await stream.get_result()
        return result, log, fake

    result, log, fake = asyncio.run(main())
    started = [i for kind, i in log if kind == "started"]
    first_finish = log.index(next(entry for entry in log if entry[0] == "finished"))
    assert {0, 1, 2} <= set(started[:first_finish])
    assert log.index(("finished", 0)) > log.index(("finished", 1))
    assert tool_messages(fake.requests[1].messages) == [
        ("a", "FIRST"),
        ("b", "SECOND"),
        ("c", "THIRD"),
        ("d", "xx"),
    ]
    assert result.completed


def test_max_parallel_limits_how_many_calls_run_at_once(go: Callable[..., AgentResult]) -> None:
    running = 0
    most = 0
    lock = threading.Lock()

    @tool
    def work(n: int) -> int:
        """Some work."""
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return n

    fake = Fake([Fake.calls(*(call("work", {"n": i}, id=str(i)) for i in range(4))), "ok"])
    go(fake, "go", tools=[work], max_parallel=1)
    assert most == 1
    assert [text for _, text in tool_messages(fake.requests[1].messages)] == ["0", "1", "2", "3"]


# Failures become messages the model reads ---------------------------------------------------


def test_unknown_tool_is_reported_to_the_model(go: Callable[..., AgentResult]) -> None:
    fake = Fake([Fake.calls(call("multiply", {"a": 1}, id="x")), "sorry"])
    result = go(fake, "go", tools=[add, divide])
    assert tool_messages(fake.requests[1].messages) == [
        ("x", "Error: there is no tool named 'multiply'. The tools are: add, divide.")
    ]
    assert result.tool_runs[0].status == "invalid"
    assert result.text == "sorry"


def test_arguments_that_are_not_json_are_reported(go: Callable[..., AgentResult]) -> None:
    broken = ToolCall.from_raw("x", "add", '{"a": 1, "b": ')
    fake = Fake([Fake.calls(broken), "ok"])
    go(fake, "go", tools=[add])
    [(call_id, text)] = tool_messages(fake.requests[1].messages)
    assert call_id == "x"
    assert text.startswith("Error: the arguments of this call to 'add' cannot be read (")
    assert text.endswith(
        'They were: {"a": 1, "b": \nCall the tool again with a JSON object as its arguments.'
    )


def test_invalid_arguments_are_reported_field_by_field(go: Callable[..., AgentResult]) -> None:
    fake = Fake([Fake.calls(call("add", {"a": "one"}, id="x")), "ok"])
    result = go(fake, "go", tools=[add])
    assert tool_messages(fake.requests[1].messages) == [
        (
            "x",
            "Error: invalid arguments for tool 'add':\n"
            "- a: Input should be a valid integer, unable to parse string as an integer (got 'one')\n"
            "- b: Field required\n"
            "Call the tool again with corrected arguments.",
        )
    ]
    assert result.tool_runs[0].value is None


def test_an_exception_in_a_tool_is_reported_and_kept(go: Callable[..., AgentResult]) -> None:
    fake = Fake([Fake.calls(call("divide", {"a": 1, "b": 0}, id="x")), "cannot divide by zero"])
    result = go(fake, "go", tools=[divide])
    assert tool_messages(fake.requests[1].messages) == [
        ("x", "Error: tool 'divide' raised ZeroDivisionError: float division by zero")
    ]
    run_ = result.tool_runs[0]
    assert run_.status == "error"
    assert isinstance(run_.error, ZeroDivisionError)
    assert result.completed


def test_a_tool_calling_sys_exit_does_not_end_the_run(go: Callable[..., AgentResult]) -> None:
    @tool
    def leave() -> str:
        """Leaves."""
        raise SystemExit(3)

    fake = Fake([Fake.calls(call("leave", id="x")), "still here"])
    result = go(fake, "go", tools=[leave])
    assert tool_messages(fake.requests[1].messages) == [
        ("x", "Error: tool 'leave' raised SystemExit: 3")
    ]
    assert result.text == "still here"


def test_a_result_that_cannot_be_sent_is_reported(go: Callable[..., AgentResult]) -> None:
    odd = object()

    @tool
    def make() -> Any:
        """Returns something odd."""
        return odd

    fake = Fake([Fake.calls(call("make", id="x")), "ok"])
    result = go(fake, "go", tools=[make])
    assert tool_messages(fake.requests[1].messages) == [
        (
            "x",
            "Error: tool 'make' returned a value of type object, which cannot be sent as text or JSON",
        )
    ]
    assert result.tool_runs[0].value is odd
    assert result.tool_runs[0].status == "error"


@dataclasses.dataclass
class Reading:
    when: datetime.date
    values: set[int]


def test_dataclasses_dates_and_models_in_lists_are_sent_as_json(
    go: Callable[..., AgentResult],
) -> None:
    @tool
    def readings() -> Any:
        """Readings."""
        return [Reading(datetime.date(2026, 1, 2), {3}), City(name="Ulm", people=2)]

    fake = Fake([Fake.calls(call("readings", id="x")), "ok"])
    go(fake, "go", tools=[readings])
    assert tool_messages(fake.requests[1].messages) == [
        ("x", '[{"when":"2026-01-02","values":[3]},{"name":"Ulm","people":2}]')
    ]


def test_consecutive_failures_end_the_run(go: Callable[..., AgentResult]) -> None:
    fake = Fake(
        [
            Fake.calls(call("divide", {"a": 1, "b": 0}, id="1")),
            Fake.calls(call("nope", id="2")),
            Fake.calls(call("divide", {"a": "x", "b": 1}, id="3")),
            "never asked",
        ]
    )
    result = go(fake, "go", tools=[divide], max_tool_failures=3)
    assert result.stop_reason is StopReason.TOOL_FAILURES
    assert len(fake.requests) == 3
    assert result.detail.startswith("3 tool call(s) in a row failed (max_tool_failures=3)")
    assert "the last: Error: invalid arguments for tool 'divide'" in result.detail
    # The failed results are kept, so the conversation can go on.
    assert result.messages[-1].role is Role.TOOL
    assert result.messages[-1].tool_call_id == "3"
    assert not result.completed


def test_a_success_resets_the_failure_count(go: Callable[..., AgentResult]) -> None:
    fake = Fake(
        [
            Fake.calls(call("divide", {"a": 1, "b": 0}, id="1")),
            Fake.calls(call("divide", {"a": 1, "b": 1}, id="2")),
            Fake.calls(call("divide", {"a": 1, "b": 0}, id="3")),
            "done",
        ]
    )
    result = go(fake, "go", tools=[divide], max_tool_failures=2)
    assert result.completed
    assert [r.status for r in result.tool_runs] == ["error", "ok", "error"]


# Limits -------------------------------------------------------------------------------------


def test_max_steps_keeps_everything_and_leaves_the_calls_pending(
    go: Callable[..., AgentResult],
) -> None:
    ran: list[int] = []

    @tool
    def step(n: int) -> int:
        """A step."""
        ran.append(n)
        return n

    fake = Fake([Fake.calls(call("step", {"n": i}, id=f"s{i}")) for i in range(5)])
    result = go(fake, "go", tools=[step], max_steps=2)
    assert result.stop_reason is StopReason.MAX_STEPS
    assert len(fake.requests) == 2
    assert ran == [0]  # the second step's call did not run: nobody would read its result
    assert [c.id for c in result.pending_calls] == ["s1"]
    assert result.messages[-1].tool_calls[0].id == "s1"
    assert "max_steps" in result.detail
    assert "pending_calls" in result.detail


def test_passing_the_messages_again_runs_pending_calls_first(
    go: Callable[..., AgentResult],
) -> None:
    first = go(
        Fake([Fake.calls(call("add", {"a": 1, "b": 2}, id="p"))]), "go", tools=[add], max_steps=1
    )
    assert first.pending_calls
    fake = Fake(["three"])
    second = go(fake, first.messages, tools=[add])
    assert tool_messages(fake.requests[0].messages) == [("p", "3")]
    assert second.text == "three"
    assert second.tool_runs[0].step == 0


def test_the_deadline_stops_slow_tools(go: Callable[..., AgentResult]) -> None:
    release = threading.Event()

    @tool
    def hang() -> str:
        """Never finishes in time."""
        release.wait(10)
        return "late"

    @tool
    def quick() -> str:
        """Finishes."""
        return "quick"

    fake = Fake([Fake.calls(call("quick", id="q"), call("hang", id="h")), "never asked"])
    try:
        result = go(fake, "go", tools=[quick, hang], deadline=0.5)
    finally:
        release.set()
    assert result.stop_reason is StopReason.DEADLINE
    assert len(fake.requests) == 1
    assert [(r.call.id, r.status) for r in result.tool_runs] == [("q", "ok"), ("h", "timeout")]
    assert (
        result.messages[-1].text
        == "Error: the run's time limit ran out before tool 'hang' finished."
    )
    assert "deadline of 0.5 s" in result.detail


def test_the_deadline_cuts_a_slow_model_and_keeps_its_partial_answer(
    go: Callable[..., AgentResult],
) -> None:
    fake = Fake(["one two three four five six seven eight nine ten"], chunk_size=2, delay=0.05)
    result = go(fake, "go", deadline=0.5)
    assert result.stop_reason is StopReason.DEADLINE
    partial = result.responses[-1]
    assert partial.finish_reason == "incomplete"
    assert 0 < len(partial.text) < len("one two three four five six seven eight nine ten")
    assert "partial answer" in result.detail


def test_tool_timeout_reports_the_slow_call_and_goes_on(go: Callable[..., AgentResult]) -> None:
    release = threading.Event()

    @tool
    def hang() -> str:
        """Slow."""
        release.wait(10)
        return "late"

    fake = Fake([Fake.calls(call("hang", id="h")), "gave up"])
    try:
        result = go(fake, "go", tools=[hang], tool_timeout=0.2)
    finally:
        release.set()
    assert tool_messages(fake.requests[1].messages) == [
        ("h", "Error: tool 'hang' did not finish within 0.2 s.")
    ]
    assert result.tool_runs[0].status == "timeout"
    assert result.text == "gave up"


def test_a_hung_tool_frees_its_slot_when_its_time_runs_out(
    go: Callable[..., AgentResult],
) -> None:
    release = threading.Event()

    @tool
    def hang() -> str:
        """Hangs."""
        release.wait(10)
        return "late"

    fake = Fake([Fake.calls(call("hang", id="h"), call("add", {"a": 1, "b": 1}, id="a")), "ok"])
    try:
        result = go(fake, "go", tools=[hang, add], tool_timeout=0.2, max_parallel=1)
    finally:
        release.set()
    # With one slot, the second call runs once the first has timed out.
    assert [(r.call.id, r.status) for r in result.tool_runs] == [("h", "timeout"), ("a", "ok")]
    assert result.text == "ok"


def test_the_token_budget_ends_the_run_and_caps_max_tokens(go: Callable[..., AgentResult]) -> None:
    script = [Fake.calls(call("add", {"a": i, "b": 1}, id=str(i))) for i in range(10)]
    fake = Fake(script)
    result = go(fake, "one two three", tools=[add], token_budget=40, max_tokens=1000)
    assert result.stop_reason is StopReason.TOKEN_BUDGET
    assert result.usage.total_tokens >= 40
    used_before_last = (
        result.usage.total_tokens - (result.responses[-1].usage or Usage()).total_tokens
    )
    assert used_before_last < 40
    assert fake.requests[0].max_tokens == 40
    assert fake.requests[1].max_tokens == 40 - (result.responses[0].usage or Usage()).total_tokens
    assert "budget of 40" in result.detail
    assert result.pending_calls


# Hooks --------------------------------------------------------------------------------------


def test_a_hook_sees_each_valid_call_and_can_approve(go: Callable[..., AgentResult]) -> None:
    seen: list[tuple[str, str]] = []

    def hook(c: ToolCall, t: Tool) -> Any:
        seen.append((c.id, t.name))
        return ApproveCall() if c.id == "1" else None

    fake = Fake(
        [
            Fake.calls(
                call("add", {"a": 1, "b": 1}, id="1"),
                call("add", {"a": 2, "b": 2}, id="2"),
                call("nope", id="3"),
            ),
            "ok",
        ]
    )
    go(fake, "go", tools=[add], before_tool_call=hook)
    assert seen == [("1", "add"), ("2", "add")]
    assert [t for _, t in tool_messages(fake.requests[1].messages)][:2] == ["2", "4"]


def test_a_hook_can_change_a_call(go: Callable[..., AgentResult]) -> None:
    fake = Fake([Fake.calls(call("add", {"a": 1, "b": 1}, id="1")), "ok"])
    result = go(
        fake, "go", tools=[add], before_tool_call=lambda c, t: ChangeCall({"a": 100, "b": 1})
    )
    sent = fake.requests[1].messages
    assert tool_messages(sent) == [("1", "101")]
    # The conversation shows the call as it ran; the model's own call is kept.
    assert sent[-2].tool_calls[0].arguments == {"a": 100, "b": 1}
    assert result.responses[0].tool_calls[0].arguments == {"a": 1, "b": 1}
    assert result.tool_runs[0].original is not None
    assert result.tool_runs[0].original.arguments == {"a": 1, "b": 1}


def test_a_changed_call_is_validated_again(go: Callable[..., AgentResult]) -> None:
    fake = Fake([Fake.calls(call("add", {"a": 1, "b": 1}, id="1")), "ok"])
    result = go(fake, "go", tools=[add], before_tool_call=lambda c, t: ChangeCall({"a": "x"}))
    assert result.tool_runs[0].status == "invalid"
    assert "- b: Field required" in result.tool_runs[0].content


def test_a_hook_can_cancel_a_call(go: Callable[..., AgentResult]) -> None:
    ran: list[str] = []

    @tool
    def delete(path: str) -> str:
        """Delete a file."""
        ran.append(path)
        return "deleted"

    def hook(c: ToolCall, t: Tool) -> Any:
        if c.arguments["path"] == "/":
            return CancelCall("Refused: deleting / is not allowed.")
        # False cancels with the default message; True approves.
        return c.arguments["path"] != "/etc"

    fake = Fake(
        [
            Fake.calls(
                call("delete", {"path": "/"}, id="1"),
                call("delete", {"path": "/etc"}, id="2"),
                call("delete", {"path": "/tmp/x"}, id="3"),
            ),
            "ok",
        ]
    )
    result = go(fake, "go", tools=[delete], before_tool_call=hook)
    assert ran == ["/tmp/x"]
    assert tool_messages(fake.requests[1].messages) == [
        ("1", "Refused: deleting / is not allowed."),
        ("2", "The user declined this tool call; it did not run."),
        ("3", "deleted"),
    ]
    assert [r.status for r in result.tool_runs] == ["cancelled", "cancelled", "ok"]


def test_a_hook_can_stop_the_run(go: Callable[..., AgentResult]) -> None:
    ran: list[int] = []

    @tool
    def act(n: int) -> int:
        """Act."""
        ran.append(n)
        return n

    def hook(c: ToolCall, t: Tool) -> Any:
        return StopRun("the user pressed stop") if c.id == "2" else None

    fake = Fake(
        [
            Fake.calls(
                call("act", {"n": 1}, id="1"),
                call("act", {"n": 2}, id="2"),
                call("act", {"n": 3}, id="3"),
            )
        ]
    )
    result = go(fake, "go", tools=[act], before_tool_call=hook)
    assert ran == []
    assert result.stop_reason is StopReason.STOPPED
    assert result.detail == "a hook stopped the run: the user pressed stop"
    assert [r.status for r in result.tool_runs] == ["cancelled"] * 3
    assert result.tool_runs[0].content == "The run was stopped before this call ran."
    assert [m.tool_call_id for m in result.messages if m.role is Role.TOOL] == ["1", "2", "3"]
    assert len(fake.requests) == 1


def test_an_async_hook_runs_in_arun() -> None:
    async def hook(c: ToolCall, t: Tool) -> Any:
        await asyncio.sleep(0)
        return CancelCall("no")

    fake = Fake([Fake.calls(call("add", {"a": 1, "b": 1}, id="1")), "ok"])
    asyncio.run(arun(fake, "go", tools=[add], before_tool_call=hook))
    assert tool_messages(fake.requests[1].messages) == [("1", "no")]


def test_an_async_hook_in_a_sync_run_is_an_input_error() -> None:
    async def hook(c: ToolCall, t: Tool) -> Any:
        return None

    with pytest.raises(InputError, match="async function: use arun"):
        run(Fake(["x"]), "go", tools=[add], before_tool_call=hook)


def test_a_hook_returning_nonsense_is_an_input_error(go: Callable[..., AgentResult]) -> None:
    fake = Fake([Fake.calls(call("add", {"a": 1, "b": 1}))])
    with pytest.raises(InputError, match="before_tool_call must return"):
        go(fake, "go", tools=[add], before_tool_call=lambda c, t: "yes")


# Structured output --------------------------------------------------------------------------


class Weather(BaseModel):
    city: str
    degrees: int


def test_response_format_ends_with_a_validated_model(go: Callable[..., AgentResult]) -> None:
    @tool
    def measure(city: str) -> int:
        """Measure the temperature."""
        return 21

    fake = Fake([Fake.calls(call("measure", {"city": "Oslo"})), '{"city": "Oslo", "degrees": 21}'])
    result = go(fake, "weather in Oslo?", tools=[measure], response_format=Weather)
    assert result.output == Weather(city="Oslo", degrees=21)
    assert all(r.response_format is not None for r in fake.requests)


def test_invalid_output_is_retried_without_a_growing_history(
    go: Callable[..., AgentResult],
) -> None:
    fake = Fake(
        [
            '{"city": "Oslo"}',
            '{"city": "Oslo", "degrees": "warm"}',
            '{"city": "Oslo", "degrees": 21}',
        ]
    )
    events: list[Any] = []
    result = go(fake, "weather?", response_format=Weather, on_event=events.append)
    assert result.output == Weather(city="Oslo", degrees=21)
    assert result.stop_reason is StopReason.ANSWERED
    second = fake.requests[1].messages
    assert [m.role.value for m in second] == ["user", "assistant", "user"]
    assert second[1].text == '{"city": "Oslo"}'
    assert "- degrees: Field required" in second[2].text
    third = fake.requests[2].messages
    # Only the latest failed attempt and its error go back, not the whole history.
    assert [m.role.value for m in third] == ["user", "assistant", "user"]
    assert third[1].text == '{"city": "Oslo", "degrees": "warm"}'
    assert "- degrees: Input should be a valid integer" in third[2].text
    assert "(got 'warm')" in third[2].text
    # The final conversation is clean; every attempt is kept among the responses.
    assert [m.text for m in result.messages] == ["weather?", '{"city": "Oslo", "degrees": 21}']
    assert len(result.responses) == 3
    rejected = [e for e in events if isinstance(e, OutputRejected)]
    assert [e.retry for e in rejected] == [True, True]


def test_output_that_never_validates_is_reported_clearly(go: Callable[..., AgentResult]) -> None:
    fake = Fake(["not json", "still not", "nope"])
    result = go(fake, "weather?", response_format=Weather, output_retries=2)
    assert result.stop_reason is StopReason.INVALID_OUTPUT
    assert len(fake.requests) == 3
    assert result.detail.startswith("the answer did not validate after 3 attempt(s)")
    assert result.output_error is not None
    assert result.output_error.text == "nope"
    with pytest.raises(StructuredOutputError, match="does not validate as Weather") as info:
        _ = result.output
    assert info.value.text == "nope"
    assert result.text == "nope"


def test_a_json_schema_format_gives_the_json_value(go: Callable[..., AgentResult]) -> None:
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
    }
    fake = Fake(['{"ok": "yes"}', '{"ok": true}'])
    result = go(fake, "go", response_format=schema)
    assert result.output == {"ok": True}
    assert "ok" in fake.requests[1].messages[-1].text


def test_output_without_a_format_or_an_answer_is_an_agent_error(
    go: Callable[..., AgentResult],
) -> None:
    result = go(Fake(["hello"]), "go")
    with pytest.raises(AgentError, match="no response_format"):
        _ = result.output
    unfinished = go(
        Fake([Fake.calls(call("add", {"a": 1, "b": 1}))]),
        "go",
        tools=[add],
        max_steps=1,
        response_format=Weather,
    )
    with pytest.raises(AgentError, match="ended without an answer"):
        _ = unfinished.output


# Built-in tools -----------------------------------------------------------------------------


def test_code_interpreter_runs_only_when_enabled() -> None:
    with pytest.raises(InputError, match="code_interpreter=True"):
        run(Fake(["x"]), "go", tools=[code_interpreter])


def test_code_interpreter_runs_the_models_code_in_the_sandbox(
    go: Callable[..., AgentResult],
) -> None:
    code = "import os\nprint('pid differs:', os.getpid() != PARENT)\n6 * 7".replace(
        "PARENT", str(__import__("os").getpid())
    )
    fake = Fake([Fake.calls(call("code_interpreter", {"code": code}, id="py")), "42"])
    result = go(fake, "compute", code_interpreter=True)
    assert [t.name for t in fake.requests[0].tools] == ["code_interpreter"]
    [(call_id, text)] = tool_messages(fake.requests[1].messages)
    assert call_id == "py"
    assert text == "[stdout]\npid differs: True\n[/stdout]\n[result]\n42\n[/result]"
    assert result.tool_runs[0].status == "ok"


def test_failing_code_is_an_error_result_the_model_reads(go: Callable[..., AgentResult]) -> None:
    fake = Fake([Fake.calls(call("code_interpreter", {"code": "1/0"}, id="py")), "oops"])
    result = go(fake, "compute", code_interpreter=True)
    text = result.tool_runs[0].content
    assert result.tool_runs[0].status == "error"
    assert "ZeroDivisionError: division by zero" in text
    assert text.endswith("[error]\nZeroDivisionError: division by zero\n[/error]")


def test_runaway_code_is_stopped_and_secrets_stay_outside(
    go: Callable[..., AgentResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATLANE_AGENT_SECRET", "sk-top-secret")
    fake = Fake(
        [
            Fake.calls(
                call("code_interpreter", {"code": "while True:\n    pass"}, id="loop"),
                call(
                    "code_interpreter",
                    {"code": "import os\nos.environ.get('CHATLANE_AGENT_SECRET')"},
                    id="env",
                ),
            ),
            "ok",
        ]
    )
    result = go(fake, "go", code_interpreter=Sandbox(timeout=1))
    assert tool_messages(fake.requests[1].messages) == [
        ("loop", "[error]\nthe code was stopped after the time limit of 1 s\n[/error]"),
        ("env", "[no output]"),
    ]
    assert [r.status for r in result.tool_runs] == ["error", "ok"]


def test_search_tools_run_through_the_callers_functions(go: Callable[..., AgentResult]) -> None:
    asked: list[str] = []

    def search(query: str) -> list[dict[str, str]]:
        asked.append(query)
        return [{"title": "Llama", "url": "https://example.org"}]

    fake = Fake(
        [
            Fake.calls(
                call("brave_search", {"query": "llamas"}, id="b"),
                call("wolfram_alpha", {"query": "2+2"}, id="w"),
            ),
            "ok",
        ]
    )
    go(fake, "go", brave_search=search, wolfram_alpha=lambda q: "4")
    assert asked == ["llamas"]
    assert [t.name for t in fake.requests[0].tools] == ["brave_search", "wolfram_alpha"]
    assert all(t.builtin for t in fake.requests[0].tools)
    assert tool_messages(fake.requests[1].messages) == [
        ("b", '[{"title": "Llama", "url": "https://example.org"}]'),
        ("w", "4"),
    ]


def test_a_builtin_search_tool_without_a_function_is_an_input_error() -> None:
    with pytest.raises(InputError, match="brave_search=<a function"):
        run(Fake(["x"]), "go", tools=[brave_search])


# Events and streams -------------------------------------------------------------------------


def test_the_stream_shows_model_events_as_they_arrive_and_the_tool_runs() -> None:
    fake = Fake(
        [Fake.calls(call("add", {"a": 1, "b": 2}, id="1"), text="Let me add."), "It is 3."],
        chunk_size=3,
    )
    with run_stream(fake, "go", tools=[add]) as stream:
        events = list(stream)
        result = stream.result
    kinds = [e.kind for e in events]
    assert kinds[0] == "step_started"
    assert kinds[-1] == "run_finished"
    assert kinds.count("step_started") == 2
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert texts == ["Let", " me", " ad", "d.", "It ", "is ", "3."]
    started = next(e for e in events if isinstance(e, ToolRunStarted))
    finished = next(e for e in events if isinstance(e, ToolRunFinished))
    assert kinds.index("tool_run_started") < kinds.index("tool_run_finished")
    assert started.call.id == "1"
    assert finished.run.content == "3"
    assert finished.run.duration >= 0
    step_finished = [e for e in events if isinstance(e, StepFinished)]
    assert [e.response.text for e in step_finished] == ["Let me add.", "It is 3."]
    assert isinstance(events[0], StepStarted)
    assert events[0].request.messages == (user("go"),)
    last = events[-1]
    assert isinstance(last, RunFinished)
    assert last.result == result


def test_closing_the_stream_early_keeps_what_happened() -> None:
    fake = Fake([Fake.calls(call("add", {"a": 1, "b": 2}, id="1")), "It is 3."])
    with run_stream(fake, "go", tools=[add]) as stream:
        for event in stream:
            if isinstance(event, ToolRunFinished):
                break
    result = stream.result
    assert result.stop_reason is StopReason.CLOSED
    assert len(result.responses) == 1
    assert len(fake.requests) == 1


def test_closing_the_async_stream_early_keeps_what_happened() -> None:
    fake = Fake([Fake.calls(call("add", {"a": 1, "b": 2}, id="1")), "It is 3."])

    async def main() -> AgentResult:
        async with arun_stream(fake, "go", tools=[add]) as stream:
            async for event in stream:
                if isinstance(event, ToolRunFinished):
                    break
        return stream.result

    result = asyncio.run(main())
    assert result.stop_reason is StopReason.CLOSED
    assert len(result.responses) == 1
    assert len(fake.requests) == 1


def test_cancelling_arun_cancels_the_running_tools() -> None:
    outcome: list[str] = []

    async def main() -> None:
        started = asyncio.Event()

        @tool
        async def forever() -> str:
            """Never returns."""
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                outcome.append("cancelled")
                raise
            return "never"

        task = asyncio.create_task(arun(Fake([Fake.calls(call("forever"))]), "go", tools=[forever]))
        await asyncio.wait_for(started.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert outcome == ["cancelled"]


def test_the_async_stream_reports_the_same_events_as_the_sync_one() -> None:
    def script() -> Fake:
        return Fake([Fake.calls(call("add", {"a": 1, "b": 2}, id="1")), "It is 3."])

    with run_stream(script(), "go", tools=[add]) as stream:
        sync_kinds = [e.kind for e in stream]
        sync_result = stream.result

    async def main() -> tuple[list[Any], AgentResult]:
        async with arun_stream(script(), "go", tools=[add]) as astream:
            kinds = [e.kind async for e in astream]
            return kinds, astream.result

    async_kinds, async_result = asyncio.run(main())
    assert sync_kinds == async_kinds
    assert sync_result.messages == async_result.messages
    assert sync_result.usage == async_result.usage


def test_an_async_on_event_is_awaited() -> None:
    seen: list[str] = []

    async def on_event(event: Any) -> None:
        await asyncio.sleep(0)
        seen.append(event.kind)

    asyncio.run(arun(Fake(["hi"]), "go", on_event=on_event))
    assert seen[0] == "step_started"
    assert seen[-1] == "run_finished"


# The backend failing ------------------------------------------------------------------------


def test_a_backend_failure_keeps_the_steps_so_far(go: Callable[..., AgentResult]) -> None:
    fake = Fake([Fake.calls(call("add", {"a": 1, "b": 2}, id="1")), ConnectError("refused")])
    with pytest.raises(AgentError, match="the run stopped at step 2: refused") as info:
        go(fake, "go", tools=[add])
    partial = info.value.result
    assert partial.stop_reason is StopReason.FAILED
    assert partial.detail == "the backend failed at step 2: refused"
    assert isinstance(info.value.__cause__, ConnectError)
    assert len(partial.responses) == 1
    assert tool_messages(partial.messages) == [("1", "3")]


def test_a_stream_broken_midway_keeps_the_partial_response(go: Callable[..., AgentResult]) -> None:
    fake = Fake([[ResponseStarted(id="r"), TextDelta("Half an ans"), ConnectError("reset")]])
    with pytest.raises(AgentError) as info:
        go(fake, "go")
    partial = info.value.result.responses[-1]
    assert partial.text == "Half an ans"
    assert partial.finish_reason == "incomplete"


# Inputs -------------------------------------------------------------------------------------


def test_tool_choice_is_sent_until_the_model_has_called_a_tool(
    go: Callable[..., AgentResult],
) -> None:
    fake = Fake([Fake.calls(call("add", {"a": 1, "b": 2})), "3"])
    go(fake, "go", tools=[add], tool_choice="add", temperature=0.5)
    assert fake.requests[0].tool_choice == "add"
    assert fake.requests[1].tool_choice is None
    assert fake.requests[1].temperature == 0.5


def test_a_chat_request_can_start_a_run(go: Callable[..., AgentResult]) -> None:
    request = ChatRequest((user("go"),), tools=(add,), temperature=0.1)
    fake = Fake([Fake.calls(call("add", {"a": 1, "b": 2})), "3"])
    result = go(fake, request, tools=[divide])
    assert [t.name for t in fake.requests[0].tools] == ["add", "divide"]
    assert fake.requests[0].temperature == 0.1
    assert result.text == "3"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_steps": 0}, "max_steps must be at least 1"),
        ({"deadline": -1}, "deadline must be a positive number"),
        ({"tool_timeout": 0}, "tool_timeout must be a positive number"),
        ({"token_budget": 0}, "token_budget must be a positive int"),
        ({"max_tool_failures": 0}, "max_tool_failures must be at least 1"),
        ({"output_retries": -1}, "output_retries must be 0 or more"),
        ({"max_parallel": 0}, "max_parallel must be at least 1"),
        ({"tools": add}, "a sequence of tools"),
        ({"tools": [42]}, "tools must be Tool objects or functions, got int"),
        ({"tools": [Tool("bare")]}, "tool 'bare' has no function to run"),
        ({"code_interpreter": "yes"}, "code_interpreter must be True or a chatlane.Sandbox"),
        ({"nonsense": 1}, "unknown request parameter 'nonsense'"),
    ],
)
def test_bad_arguments_are_input_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        run(Fake(["x"]), "go", **kwargs)


def test_a_backend_is_required() -> None:
    with pytest.raises(InputError, match="needs a chatlane Backend"):
        run("not a backend", "go")  # type: ignore[arg-type]


def test_tool_results_in_the_input_are_left_alone(go: Callable[..., AgentResult]) -> None:
    earlier = ToolCall("old", "add", {"a": 1, "b": 1})
    conversation = [
        user("go"),
        assistant("", [earlier]),
        tool_result(earlier, "2"),
        user("and now?"),
    ]
    fake = Fake(["fine"])
    result = go(fake, conversation, tools=[add])
    assert result.tool_runs == ()
    assert fake.requests[0].messages == tuple(conversation)


def test_a_chat_response_script_item_with_its_own_usage(go: Callable[..., AgentResult]) -> None:
    fake = Fake([ChatResponse(assistant("ok"), usage=Usage(5, 2, 7))])
    result = go(fake, "go")
    assert result.usage == Usage(5, 2, 7)


def test_a_hung_tool_does_not_keep_the_program_from_exiting() -> None:
    script = (
        "import time\n"
        "from chatlane.agent import run\n"
        "from chatlane.backends.fake import Fake\n"
        "from chatlane.tools import tool\n"
        "@tool\n"
        "def hang() -> str:\n"
        '    """Hangs."""\n'
        "    time.sleep(3600)\n"
        "    return 'never'\n"
        "result = run(Fake([Fake.calls(Fake.call('hang')), 'ok']), 'go', tools=[hang], tool_timeout=0.2)\n"
        "print(result.tool_runs[0].status, result.text)\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "timeout ok\n"
    assert time.monotonic() - started < 30


def test_worker_threads_are_reused_and_leave_when_idle() -> None:
    from chatlane.agent import _Workers

    workers = _Workers()
    workers.IDLE_SECONDS = 0.2
    names: list[int] = []
    finished = threading.Semaphore(0)

    def task() -> None:
        names.append(threading.get_ident())
        finished.release()

    for _ in range(5):
        workers.submit(task)
        assert finished.acquire(timeout=10)
        for _ in range(500):  # let the thread report itself idle again
            if workers._idle == 1:
                break
            time.sleep(0.001)
    assert len(set(names)) == 1  # one thread served every call in turn

    def alive() -> int:
        return sum(t.ident in names and t.is_alive() for t in threading.enumerate())

    for _ in range(100):
        if alive() == 0:
            break
        time.sleep(0.02)
    assert alive() == 0
