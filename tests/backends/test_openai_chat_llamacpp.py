"""`OpenAIChat` against llama.cpp's own OpenAI-compatible server (``llama_cpp.server``) on
127.0.0.1, running the tiny random-weight Llama 3 model: streamed and not, sync and async."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chatlane.backends.openai_chat import OpenAIChat
from chatlane.backends.transport import RetryPolicy
from chatlane.errors import NotFound, ServerError
from chatlane.events import TextDelta, UsageReported
from chatlane.response import ChatResponse

pytestmark = pytest.mark.engine

# Random weights rarely end a turn: banning the end tokens makes every answer exactly
# max_tokens long (see ../shared/ENGINE.md).
NO_END = {"logit_bias": {"128001": -100.0, "128008": -100.0, "128009": -100.0}}


def llm(url: str) -> OpenAIChat:
    return OpenAIChat(url, api_key="unused", model="tiny", dialect="llama.cpp")


PARAMS: dict[str, Any] = {"max_tokens": 6, "temperature": 0.0, "seed": 7, "extra": NO_END}


def test_whole_answer(llama_server: str) -> None:
    with llm(llama_server) as chat:
        response = chat.chat("Hello there", **PARAMS)
    assert response.finish_reason == "length"
    assert response.message.role == "assistant"
    assert response.message.text
    assert response.usage is not None
    assert response.usage.completion_tokens == 6
    assert response.usage.prompt_tokens > 0
    assert response.id
    assert response.raw is not None


def test_streamed_sync_and_async_agree_with_the_whole_answer(llama_server: str) -> None:
    with llm(llama_server) as chat:
        whole = chat.chat("Tell me a story", **PARAMS)
        with chat.stream("Tell me a story", **PARAMS) as stream:
            events = list(stream)
            streamed = stream.response

    async def go() -> ChatResponse:
        async with llm(llama_server) as chat:
            return await chat.astream("Tell me a story", **PARAMS).get_response()

    async_streamed = asyncio.run(go())
    assert sum(isinstance(e, TextDelta) for e in events) >= 2  # token by token
    assert streamed.message.text == whole.message.text == async_streamed.message.text
    assert streamed.finish_reason == async_streamed.finish_reason == "length"
    usage = [e for e in events if isinstance(e, UsageReported)]
    if usage:  # llama_cpp.server reports usage in streams only in some versions
        assert usage[-1].usage.completion_tokens == 6


def test_response_format_as_llama_cpp_accepts_it(llama_server: str) -> None:
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    with llm(llama_server) as chat:
        response = chat.chat("Is it ok?", response_format=schema, max_tokens=40, temperature=0.0)
    assert isinstance(response.parsed, dict)
    assert isinstance(response.parsed["ok"], bool)


def test_server_errors_arrive_mapped(llama_server: str) -> None:
    with llm(llama_server) as base:
        chat = base.with_options(retry=RetryPolicy(max_retries=0))
        # llama_cpp.server answers a request that fails validation with 500, not 422.
        with pytest.raises(ServerError) as info:
            chat.chat("x", extra={"temperature": "hot"})
        assert info.value.status_code == 500
        assert "temperature" in str(info.value)
        assert info.value.request_id
        nowhere = OpenAIChat(llama_server + "/nowhere", model="tiny")
        with nowhere, pytest.raises(NotFound):
            nowhere.chat("x")
