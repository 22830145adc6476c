"""`Conversation`: turns remembered, every call and tool run logged, sync and async alike."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from chatlane.backends.fake import Fake
from chatlane.conversation import Conversation
from chatlane.errors import RateLimited, StreamInterrupted
from chatlane.events import Finished, TextDelta
from chatlane.messages import ToolCall, assistant
from chatlane.response import ChatResponse, FinishReason
from chatlane.store import Store
from chatlane.tools import tool


@tool
def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: the city.
    """
    return f"sunny in {city}"


def echo(request: Any) -> str:
    return f"echo: {request.messages[-1].text}"


def weather_turn(request: Any) -> Any:
    last = request.messages[-1]
    if last.role.value == "tool":
        return f"The tool says {last.text}"
    return assistant("", [ToolCall("c1", "get_weather", {"city": "Oslo"})])


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "log.db")


def roles(conversation: Conversation) -> list[str]:
    return [m.role.value for m in conversation.messages]


def test_turns_accumulate_and_every_call_is_logged(store: Store) -> None:
    conversation = Conversation(Fake([echo] * 3), store=store, system="Be brief.", label="fake")
    assert conversation.ask("one").text == "echo: one"
    assert conversation.ask("two").text == "echo: two"
    assert roles(conversation) == ["system", "user", "assistant", "user", "assistant"]
    logged = store.conversation(conversation.id or "")
    assert [c.response.text for c in logged.calls if c.response] == ["echo: one", "echo: two"]
    assert logged.calls[0].backend == "fake"
    assert logged.messages() == conversation.messages


def test_the_stream_gives_events_then_the_response(store: Store) -> None:
    conversation = Conversation(Fake([echo], chunk_size=2), store=store)
    stream = conversation.ask_stream("hello")
    with pytest.raises(RuntimeError, match="to its end"):
        _ = stream.response
    events = list(stream)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "echo: hello"
    assert any(isinstance(e, Finished) for e in events)
    assert stream.response.text == "echo: hello"


def test_with_tools_each_question_is_an_agent_run_with_its_tool_runs_logged(store: Store) -> None:
    conversation = Conversation(Fake([weather_turn] * 2), store=store, tools=[get_weather])
    assert conversation.ask("Weather?").text == "The tool says sunny in Oslo"
    assert roles(conversation) == ["user", "assistant", "tool", "assistant"]
    assert conversation.last_run is not None
    assert conversation.last_run.steps == 2
    first, _ = store.conversation(conversation.id or "").calls
    [run] = first.tool_runs
    assert (run.name, run.result) == ("get_weather", "sunny in Oslo")


def test_a_failed_question_is_taken_back_and_logged(store: Store) -> None:
    conversation = Conversation(
        Fake([echo, RateLimited("slow down", status_code=429)]), store=store
    )
    conversation.ask("one")
    with pytest.raises(RateLimited):
        conversation.ask("two")
    assert roles(conversation) == ["user", "assistant"]
    calls = store.conversation(conversation.id or "").calls
    assert calls[-1].response is None
    assert "slow down" in (calls[-1].error or "")


def test_an_interrupted_answer_is_kept_and_logged_as_interrupted(store: Store) -> None:
    partial = ChatResponse(assistant("half an ans"), FinishReason.other("incomplete"), None)
    script = [
        [TextDelta("half an ans"), StreamInterrupted("the connection broke", partial=partial)]
    ]
    conversation = Conversation(Fake(script), store=store)
    with pytest.raises(StreamInterrupted):
        conversation.ask("question")
    assert conversation.messages[-1].text == "half an ans"
    [call] = store.conversation(conversation.id or "").calls
    assert call.response is not None
    assert call.response.text == "half an ans"
    assert "the connection broke" in (call.error or "")


def test_stopping_early_keeps_the_partial_answer(store: Store) -> None:
    conversation = Conversation(Fake(["a long answer that goes on"], chunk_size=3), store=store)
    stream = conversation.ask_stream("go")
    next(stream)
    next(stream)
    stream.close()
    assert conversation.messages[-1].role.value == "assistant"
    kept = conversation.messages[-1].text
    assert kept
    assert "a long answer that goes on".startswith(kept)
    [call] = store.conversation(conversation.id or "").calls
    assert "stopped by the user" in (call.error or "")


def test_resume_takes_up_a_logged_conversation(store: Store) -> None:
    first = Conversation(Fake([echo]), store=store, system="S")
    first.ask("one")
    again, logged = Conversation.resume(Fake([echo]), store, "last")
    assert again.id == first.id
    assert again.messages == first.messages
    assert again.ask("two").text == "echo: two"
    assert len(store.conversation(first.id or "").calls) == 2
    assert len(logged.calls) == 1


def test_the_async_twins_give_the_same_conversation(tmp_path: Path) -> None:
    sync = Conversation(
        Fake([weather_turn] * 2), store=Store(tmp_path / "a.db"), tools=[get_weather]
    )
    sync.ask("Weather?")

    async def main() -> tuple[Conversation, list[Any]]:
        conversation = Conversation(
            Fake([weather_turn] * 2), store=Store(tmp_path / "b.db"), tools=[get_weather]
        )
        events = [e async for e in conversation.aask_stream("Weather?")]
        plain = Conversation(Fake([echo]))
        assert (await plain.aask("hi")).text == "echo: hi"
        return conversation, events

    conversation, events = asyncio.run(main())
    assert conversation.messages == sync.messages
    assert any(isinstance(e, TextDelta) for e in events)
    assert len(Store(tmp_path / "b.db").conversation("last").calls) == 2


def test_a_session_header_keeps_every_turn_on_one_replica(store: Store) -> None:
    from chatlane.backends.openai_chat import OpenAIChat
    from support import Reply, ScriptedServer

    answer = {
        "id": "c",
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
    }
    with ScriptedServer() as server:
        server.route("/v1/chat/completions", Reply.sse([answer]))
        with OpenAIChat(server.url + "/v1", model="m") as llm:
            conversation = Conversation(llm, store=store, session_header="vllm-router")
            conversation.ask("one")
            conversation.ask("two")
            other = Conversation(llm, session_header="x-affinity")
            other.ask("three")
            again, _ = Conversation.resume(llm, store, "last", session_header="vllm-router")
            again.ask("four")
        sent = [r.headers for r in server.requests]
    assert conversation.session_id is not None
    assert [h.get("x-user-id") for h in sent[:2]] == [conversation.session_id] * 2
    assert sent[2].get("x-affinity") == other.session_id != conversation.session_id
    assert sent[3].get("x-user-id") == conversation.id  # resumed: its id in the log
    assert "x-user-id" not in sent[2]


def test_a_session_header_needs_a_backend_that_adds_headers() -> None:
    from chatlane.errors import InputError

    with pytest.raises(InputError, match="session_header needs a backend"):
        Conversation(Fake([echo]), session_header="session")
