"""The agent loop over HTTP: `OpenAIChat` against a scripted server on 127.0.0.1.

What the loop sends back is checked in the JSON the server received: the assistant's calls and
one tool message per call, tied to its id, in call order.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from chatlane.agent import AgentError, AgentResult, StopReason, arun, run
from chatlane.backends.openai_chat import OpenAIChat
from chatlane.backends.transport import RetryPolicy
from chatlane.errors import ServerError
from chatlane.tools import tool
from support import Reply, ScriptedServer

KEY = "sk-live-agent-0123456789"
PATH = "/v1/chat/completions"


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "m1",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "m1",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def call_delta(index: int, id: str, arguments: list[str]) -> list[dict[str, Any]]:
    opening = {
        "tool_calls": [
            {
                "index": index,
                "id": id,
                "type": "function",
                "function": {"name": "add", "arguments": ""},
            }
        ]
    }
    pieces = [
        {"tool_calls": [{"index": index, "function": {"arguments": piece}}]} for piece in arguments
    ]
    return [chunk(opening), *(chunk(p) for p in pieces)]


TOOL_TURN = Reply.sse(
    [
        chunk({"role": "assistant", "content": None}),
        *call_delta(0, "call_a", ['{"a": 2', ', "b": 3}']),
        *call_delta(1, "call_b", ['{"a": "x"}']),
        chunk({}, "tool_calls"),
        usage(20, 12),
    ]
)
ANSWER_TURN = Reply.sse(
    [
        chunk({"role": "assistant", "content": "It is "}),
        chunk({"content": "5."}, "stop"),
        usage(40, 3),
    ]
)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s


@pytest.fixture(params=["sync", "async"])
def go(request: pytest.FixtureRequest) -> Any:
    def sync(backend: OpenAIChat, messages: Any, **kwargs: Any) -> AgentResult:
        with backend:
            return run(backend, messages, **kwargs)

    def asynchronous(backend: OpenAIChat, messages: Any, **kwargs: Any) -> AgentResult:
        async def main() -> AgentResult:
            async with backend:
                return await arun(backend, messages, **kwargs)

        return asyncio.run(main())

    return sync if request.param == "sync" else asynchronous


def backend(server: ScriptedServer) -> OpenAIChat:
    retry = RetryPolicy(max_retries=1, initial_backoff=0.01, max_backoff=0.02)
    return OpenAIChat(server.url + "/v1", api_key=KEY, model="m1", retry=retry)


def test_a_run_over_http_sends_every_result_tied_to_its_call(
    server: ScriptedServer, go: Any
) -> None:
    server.route(PATH, TOOL_TURN, ANSWER_TURN)
    result = go(backend(server), "What is 2 + 3?", tools=[add])

    assert result.stop_reason is StopReason.ANSWERED
    assert result.text == "It is 5."
    assert result.usage.total_tokens == 32 + 43
    assert len(server.requests) == 2
    first, second = (r.json() for r in server.requests)
    assert [t["function"]["name"] for t in first["tools"]] == ["add"]
    messages = second["messages"]
    assert messages[0] == {"role": "user", "content": "What is 2 + 3?"}
    assert messages[1]["role"] == "assistant"
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["call_a", "call_b"]
    assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == {"a": 2, "b": 3}
    assert [(m["role"], m["tool_call_id"]) for m in messages[2:]] == [
        ("tool", "call_a"),
        ("tool", "call_b"),
    ]
    assert messages[2]["content"] == "5"
    assert messages[3]["content"].startswith("Error: invalid arguments for tool 'add':\n- a: ")
    # The key went in the header only, never into what the loop keeps.
    assert server.requests[1].headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in repr(result)


def test_a_server_that_fails_midway_keeps_the_first_step(server: ScriptedServer, go: Any) -> None:
    server.route(PATH, TOOL_TURN, Reply.error(503, "overloaded"))
    with pytest.raises(AgentError, match="the run stopped at step 2") as info:
        go(backend(server), "What is 2 + 3?", tools=[add])
    assert isinstance(info.value.__cause__, ServerError)
    partial = info.value.result
    assert partial.stop_reason is StopReason.FAILED
    assert [r.status for r in partial.tool_runs] == ["ok", "invalid"]
    assert partial.messages[-2].tool_call_id == "call_a"
    assert KEY not in str(info.value)
