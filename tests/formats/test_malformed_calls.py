"""A malformed call, in every family that reports them: kept in the text, never made into a
call, and reported on the response, whether the output is parsed whole or streamed, and
through a real raw completion endpoint."""

from __future__ import annotations

from typing import Any

import pytest

from chatlane import formats
from chatlane.events import Accumulator, Finished
from chatlane.messages import user
from chatlane.request import ChatRequest
from chatlane.tools import Tool

WEATHER = Tool.from_schema(
    "get_weather", {"type": "object", "properties": {"city": {"type": "string"}}}
)
REQUEST = ChatRequest((user("Weather?"),), tools=(WEATHER,))

# Each family's syntax, with a call whose arguments are not JSON.
BROKEN = {
    "qwen3": 'Let me check. <tool_call>\n{"name": "get_weather", "arguments": {city: Paris}}\n</tool_call> Done.',
    "llama4": 'Let me check. [get_weather(city="Paris"]) Done.',
    "mistral-v11": "Let me check.[TOOL_CALLS]get_weather[ARGS]{city: Paris} Done.",
}


def _format(name: str) -> Any:
    if name == "qwen3":
        from support.refs import sdist_file

        # The Qwen 2 vocabulary ships in the llama-cpp-python sdist (fetched at test time).
        return formats.get(name, vocab=sdist_file("models/ggml-vocab-qwen2.gguf"))
    return formats.get(name)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_whole_and_streamed_parses_report_the_malformed_call(name: str) -> None:
    fmt = _format(name)
    raw = BROKEN[name]
    whole = fmt.parse(raw, REQUEST)
    assert whole.tool_calls == ()
    assert len(whole.malformed_calls) == 1
    assert whole.malformed_calls[0] in whole.content  # its text is kept
    parser = fmt.stream_parser(REQUEST)
    acc = Accumulator()
    events = []
    for i in range(0, len(raw), 3):
        events += parser.feed(raw[i : i + 3])
    events += parser.finish()
    for event in events:
        acc.add(event)
    [finished] = [e for e in events if isinstance(e, Finished)]
    assert finished.malformed_calls == whole.malformed_calls
    response = acc.response()
    assert response.malformed_calls == whole.malformed_calls
    assert response.text == whole.content
    assert response.tool_calls == ()
    assert response.choices[0].malformed_calls == whole.malformed_calls


def test_a_good_output_reports_none() -> None:
    fmt = _format("llama4")
    parsed = fmt.parse('[get_weather(city="Paris")]', REQUEST)
    assert parsed.malformed_calls == ()
    assert len(parsed.tool_calls) == 1


def test_the_completion_backend_carries_it_to_the_response_and_the_log() -> None:
    from chatlane._records import response_from_dict, response_to_dict
    from chatlane.backends.completion import CompletionChat
    from support import Reply, ScriptedServer

    fmt = _format("llama4")
    raw = BROKEN["llama4"]
    body = {"id": "c", "choices": [{"index": 0, "text": raw, "finish_reason": "stop"}]}
    with ScriptedServer() as server:
        server.route("/v1/completions", Reply.json(body))
        with CompletionChat(server.url + "/v1", fmt, prompt_as="text") as llm:
            response = llm.chat(REQUEST)
    assert response.malformed_calls == ('[get_weather(city="Paris"])',)
    assert (
        response_from_dict(response_to_dict(response)).malformed_calls == response.malformed_calls
    )
