"""Whatever the model does, the conversation a run returns is well formed."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chatlane.agent import arun, run
from chatlane.backends.fake import Fake
from chatlane.messages import Message, Role, ToolCall, user
from chatlane.tools import tool


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def fail(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(reason)


CALLS: st.SearchStrategy[tuple[str, Any]] = st.one_of(
    st.builds(lambda a, b: ("add", {"a": a, "b": b}), st.integers(-9, 9), st.integers(-9, 9)),
    st.builds(lambda a: ("add", {"a": a}), st.integers()),
    st.builds(lambda r: ("fail", {"reason": r}), st.text(max_size=20)),
    st.builds(lambda n: (n, {}), st.sampled_from(["nope", "Add", "add "])),
    st.just(("add", None)),  # arguments that are not JSON
)
TURNS = st.lists(st.lists(CALLS, min_size=1, max_size=4), max_size=4)


def script(turns: list[list[tuple[str, Any]]]) -> list[Any]:
    items: list[Any] = []
    for t, calls in enumerate(turns):
        made = []
        for i, (name, arguments) in enumerate(calls):
            call_id = f"t{t}c{i}"
            if arguments is None:
                made.append(ToolCall.from_raw(call_id, name, '{"a": 1,'))
            else:
                made.append(ToolCall(call_id, name, arguments))
        items.append(Fake.calls(*made))
    return [*items, "the end"]


def check_well_formed(messages: tuple[Message, ...]) -> None:
    i = 0
    while i < len(messages):
        message = messages[i]
        if message.role is Role.ASSISTANT and message.tool_calls:
            answers = messages[i + 1 : i + 1 + len(message.tool_calls)]
            assert [m.role for m in answers] == [Role.TOOL] * len(message.tool_calls)
            assert [m.tool_call_id for m in answers] == [c.id for c in message.tool_calls]
            i += len(message.tool_calls) + 1
        else:
            assert message.role is not Role.TOOL
            i += 1


@settings(max_examples=40, deadline=None)
@given(TURNS)
def test_every_call_is_answered_once_in_order_and_sync_matches_async(
    turns: list[list[tuple[str, Any]]],
) -> None:
    conversation = [user("go")]
    sync_fake = Fake(script(turns))
    result = run(sync_fake, conversation, tools=[add, fail], max_tool_failures=100)
    assert conversation == [user("go")]
    assert result.completed
    assert result.text == "the end"
    assert len(sync_fake.requests) == len(turns) + 1
    assert len(result.tool_runs) == sum(len(calls) for calls in turns)
    check_well_formed(result.messages)
    for request in sync_fake.requests:
        check_well_formed(request.messages)
    for run_ in result.tool_runs:
        assert run_.ok == (run_.call.name == "add" and set(run_.call.arguments) == {"a", "b"})
        assert run_.ok or run_.content.startswith("Error: ")

    async_fake = Fake(script(turns))
    async_result = asyncio.run(
        arun(async_fake, conversation, tools=[add, fail], max_tool_failures=100)
    )
    assert async_result.messages == result.messages
    assert [r.status for r in async_result.tool_runs] == [r.status for r in result.tool_runs]
    assert async_result.usage == result.usage
