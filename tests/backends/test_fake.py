"""The scripted Fake backend, as users' tests use it."""

from __future__ import annotations

import asyncio

import pytest

from chatlane.backends.fake import Fake
from chatlane.errors import ChatlaneError, RateLimited, StreamInterrupted, TimeoutException
from chatlane.events import (
    ChatEvent,
    Finished,
    ResponseStarted,
    TextDelta,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStarted,
    UsageReported,
)
from chatlane.messages import Message, Role, ToolCall, assistant, user
from chatlane.request import ChatRequest, ResponseFormat
from chatlane.response import ChatResponse, FinishReason, Usage


def test_a_text_answer_streams_in_chunks() -> None:
    fake = Fake(["Hello there"], chunk_size=4)
    with fake.stream("Hi") as stream:
        events = list(stream)
    assert events == [
        ResponseStarted("fake-1", "fake"),
        TextDelta("Hell"),
        TextDelta("o th"),
        TextDelta("ere"),
        Finished(FinishReason.STOP),
        UsageReported(Usage(1, 2, 3)),
    ]
    assert stream.response.text == "Hello there"


def test_chat_returns_the_whole_answer_and_records_requests() -> None:
    fake = Fake(["one", "two"], model="m1")
    assert fake.chat("first").text == "one"
    assert fake.chat([user("second")], temperature=0.1).text == "two"
    assert [r.messages[-1].text for r in fake.requests] == ["first", "second"]
    assert fake.requests[1].temperature == 0.1
    assert fake.requests[0].model == "m1"
    assert repr(fake) == "Fake(model='m1', answered=2)"


def test_tool_calls_stream_as_a_server_sends_them() -> None:
    call = Fake.call("get_weather", {"city": "Oslo"})
    fake = Fake([Fake.calls(call, text="Let me look.")], chunk_size=8, usage=False)
    events = list(fake.stream("weather?"))
    assert events[1:3] == [TextDelta("Let me l"), TextDelta("ook.")]
    assert events[3] == ToolCallStarted(0, "call_get_weather", "get_weather")
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert "".join(d.arguments for d in deltas) == '{"city": "Oslo"}'
    assert len(deltas) == 2
    assert events[-2:] == [ToolCallDone(0, call), Finished(FinishReason.TOOL_CALLS)]
    response = Fake([Fake.calls(call)]).chat("again")
    assert response.tool_calls == (call,)
    assert response.finish_reason == FinishReason.TOOL_CALLS


def test_a_scripted_response_keeps_finish_reason_usage_and_choices() -> None:
    scripted = ChatResponse(
        assistant("cut"), FinishReason.LENGTH, Usage(9, 1, 10), model="big", id="r9"
    )
    response = Fake([scripted]).chat("x")
    assert (response.text, response.finish_reason.value, response.usage) == (
        "cut",
        "length",
        Usage(9, 1, 10),
    )
    assert (response.model, response.id) == ("big", "r9")


def test_reasoning_is_streamed_too() -> None:
    response = Fake([assistant("42", reasoning="think")]).chat("q")
    assert response.message.reasoning == "think"


def test_an_exception_instead_of_an_answer() -> None:
    error = RateLimited("slow down", status_code=429)
    fake = Fake([error, "ok"])
    with pytest.raises(RateLimited, match="slow down"):
        fake.chat("x")
    assert fake.chat("x").text == "ok"


def test_a_stream_that_breaks_midway_gives_the_partial_response() -> None:
    events: list[ChatEvent | BaseException] = [
        TextDelta("Half an "),
        TextDelta("answer"),
        TimeoutException("idle for 30 s", kind="idle"),
    ]
    fake = Fake([events])
    stream = fake.stream("x")
    received: list[ChatEvent] = []
    with pytest.raises(StreamInterrupted) as info:
        received.extend(stream)
    assert [e.text for e in received if isinstance(e, TextDelta)] == ["Half an ", "answer"]
    assert info.value.partial.text == "Half an answer"
    assert info.value.partial.finish_reason is FinishReason.INCOMPLETE
    assert isinstance(info.value.__cause__, TimeoutException)


def test_a_callable_answers_from_the_request() -> None:
    fake = Fake(lambda request: f"you said {request.messages[-1].text}")
    assert fake.chat("ping").text == "you said ping"


def test_a_used_up_script_says_so() -> None:
    fake = Fake(["only"])
    fake.chat("1")
    with pytest.raises(
        ChatlaneError, match="script is used up: it had 1 answer\\(s\\) and got request 2"
    ):
        fake.chat("2")
    fake.add("more")
    assert fake.chat("3").text == "more"


def test_an_unusable_script_item() -> None:
    with pytest.raises(ChatlaneError, match="cannot answer with a int"):
        Fake([3]).chat("x")


def test_structured_output_through_the_fake() -> None:
    fake = Fake(['{"answer": 42}'])
    response = fake.chat(
        "q", response_format={"type": "object", "properties": {"answer": {"type": "integer"}}}
    )
    assert response.parsed == {"answer": 42}
    assert isinstance(fake.requests[0].response_format, ResponseFormat)


def test_async_twins() -> None:
    async def main() -> tuple[str, list[str], str]:
        fake = Fake(["async one", "async two"], delay=0.001)
        first = await fake.achat("a")
        texts = []
        async with fake.astream(ChatRequest((user("b"),))) as stream:
            async for text in stream.text_stream():
                texts.append(text)
        response = await stream.get_response()
        return first.text, texts, response.text

    first, texts, second = asyncio.run(main())
    assert first == "async one"
    assert "".join(texts) == second == "async two"


def test_async_stream_interruption() -> None:
    async def main() -> StreamInterrupted:
        fake = Fake([[TextDelta("part"), TimeoutException("gone")]])
        stream = fake.astream("x")
        with pytest.raises(StreamInterrupted) as info:
            async for _ in stream:
                pass
        return info.value

    assert asyncio.run(main()).partial.text == "part"


def test_message_script_items_and_explicit_ids() -> None:
    call = ToolCall("id-1", "f", {})
    fake = Fake(Message(Role.ASSISTANT, "", (call,)))
    assert fake.chat("x").tool_calls[0].id == "id-1"
    assert Fake.call("g", id="custom").id == "custom"
