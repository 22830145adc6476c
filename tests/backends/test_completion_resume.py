"""An exact resume on raw completion endpoints (`RetryPolicy(resume=True)`).

A deterministic loopback completion server continues one fixed answer from wherever the
prompt's prefilled answer stops; the first request is reset mid-stream. The resumed answer must
be the uninterrupted one, token for token, in one stream and one response, with usage summed
over both attempts and the resume in the log.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from chatlane import CompletionChat, RetryPolicy, Store, formats
from chatlane.errors import StreamInterrupted
from chatlane.events import StreamResumed, TextDelta
from chatlane.response import ChatResponse, Usage
from support import RESET, Recorded, Reply, ScriptedServer

ANSWER = "The quick brown fox jumps over the lazy dog, and then it rests in the shade."
HEADER = "<|start_header_id|>assistant<|end_header_id|>\n\n"
PIECES_BEFORE_RESET = 5


class CompletionServer:
    """Continues ANSWER after the prompt's prefill, one word a piece; resets the first
    ``resets`` streams after a few pieces. Reports usage as whitespace-split counts."""

    def __init__(self, resets: int) -> None:
        self.resets = resets
        self.prefills: list[str] = []

    def __call__(self, request: Recorded) -> Reply:
        body = request.json()
        prompt = body["prompt"]
        assert isinstance(prompt, str), "this test's server reads text prompts"
        prefill = prompt.rsplit(HEADER, 1)[1]
        assert ANSWER.startswith(prefill), prefill
        self.prefills.append(prefill)
        rest = ANSWER[len(prefill) :]
        words = rest.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words) if w or i == 0]
        events: list[Any] = [
            {"id": "cmpl-1", "choices": [{"index": 0, "text": p, "finish_reason": None}]}
            for p in pieces
            if p
        ]
        if self.resets > 0:
            self.resets -= 1
            return Reply.sse([*events[:PIECES_BEFORE_RESET], RESET], done=False)
        events.append(
            {
                "id": "cmpl-1",
                "choices": [{"index": 0, "text": "", "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17},
            }
        )
        return Reply.sse(events)


def backend(server: ScriptedServer, *, resume: bool = True) -> CompletionChat:
    return CompletionChat(
        server.url + "/v1",
        "llama3.1",
        dialect="openai",
        model="m",
        api_key="sk-resume-secret",
        retry=RetryPolicy(max_retries=2, initial_backoff=0.0, jitter=0.0, resume=resume),
    )


def streamed(llm: CompletionChat, mode: str) -> tuple[list[Any], ChatResponse]:
    events: list[Any] = []
    if mode == "sync":
        with llm, llm.stream("Tell me about the fox") as s:
            events.extend(s)
            return events, s.response

    async def go() -> ChatResponse:
        async with llm, llm.astream("Tell me about the fox") as s:
            async for event in s:
                events.append(event)
            return await s.get_response()

    return events, asyncio.run(go())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_reset_stream_resumes_exactly(mode: str) -> None:
    with ScriptedServer() as clean_server:
        clean_server.route("/v1/completions", CompletionServer(resets=0))
        _, clean = streamed(backend(clean_server), mode)
    with ScriptedServer() as server:
        script = CompletionServer(resets=1)
        server.route("/v1/completions", script)
        events, response = streamed(backend(server), mode)

    tokenizer = formats.get("llama3.1").tokenizer
    assert tokenizer is not None
    assert clean.text == ANSWER
    assert response.text == clean.text
    assert tokenizer.encode(response.text) == tokenizer.encode(clean.text)
    # One stream: the text deltas add up to the answer once, with one resume event in them.
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == ANSWER
    resumes = [e for e in events if isinstance(e, StreamResumed)]
    assert len(resumes) == 1
    assert resumes[0].attempt == 1
    assert len(server.requests) == 2
    kept = script.prefills[1]
    assert kept
    assert ANSWER.startswith(kept)
    assert resumes[0].kept == len(kept)
    assert response.finish_reason == "stop"
    assert len(response.resumed) == 1
    assert "sk-resume-secret" not in response.resumed[0]
    # Usage: the broken attempt's tokens (counted with the format's tokenizer) plus the
    # server's report for the second.
    first_prompt = backend(server).render(backend(server).request("Tell me about the fox"))
    spent = Usage(len(first_prompt.tokens), len(tokenizer.encode(kept)), 0)  # total checked below
    assert response.usage is not None
    assert response.usage.prompt_tokens == spent.prompt_tokens + 10
    assert response.usage.completion_tokens == spent.completion_tokens + 7
    assert response.usage.total_tokens == spent.prompt_tokens + spent.completion_tokens + 17


def test_without_resume_the_break_raises_with_the_partial() -> None:
    with ScriptedServer() as server:
        server.route("/v1/completions", CompletionServer(resets=1))
        with pytest.raises(StreamInterrupted) as info:
            streamed(backend(server, resume=False), "sync")
    assert ANSWER.startswith(info.value.partial.text)
    assert info.value.partial.text
    assert len(server.requests) == 1


def test_resumes_stop_when_retries_are_spent() -> None:
    with ScriptedServer() as server:
        server.route("/v1/completions", CompletionServer(resets=5))
        with pytest.raises(StreamInterrupted) as info:
            streamed(backend(server), "sync")
    # max_retries=2: the first attempt and two resumes, then the break is raised.
    assert len(server.requests) == 3
    assert ANSWER.startswith(info.value.partial.text)
    assert len(info.value.partial.text) > 0


def test_the_log_records_the_resume(tmp_path: Path) -> None:
    with ScriptedServer() as server:
        server.route("/v1/completions", CompletionServer(resets=1))
        llm = backend(server)
        request = llm.request("Tell me about the fox")
        _, response = streamed(llm, "sync")
    with Store(tmp_path / "log.db") as store:
        cid, _ = store.log_call(None, request, response, backend="completion")
        logged = store.conversation(cid)
    logged_response = logged.calls[0].response
    assert logged_response is not None
    assert logged_response.resumed == response.resumed
    assert len(logged_response.resumed) == 1
