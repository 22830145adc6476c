"""The README's example runs as written, against a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

from support import Reply, ScriptedServer

README = Path(__file__).resolve().parent.parent / "README.md"


def _completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "llama",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-2",
        "object": "chat.completion.chunk",
        "model": "llama",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def test_the_readme_example_runs_against_a_real_server() -> None:
    code = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)[0]
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    with ScriptedServer() as server:
        server.route(
            "/v1/chat/completions",
            Reply.json(_completion({"role": "assistant", "content": "Bonjour !"})),
            Reply.sse(
                [
                    _chunk({"role": "assistant", "content": "Once upon "}),
                    _chunk({"content": "a time."}, "stop"),
                    {
                        "id": "chatcmpl-2",
                        "choices": [],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11},
                    },
                ]
            ),
            Reply.sse(
                [_chunk({"role": "assistant", "tool_calls": [{"index": 0, **call}]}, "tool_calls")]
            ),
            Reply.sse([_chunk({"role": "assistant", "content": "It is 21 °C in Paris."}, "stop")]),
            Reply.json(
                _completion(
                    {"role": "assistant", "content": '{"name": "Kyoto", "country": "Japan"}'}
                )
            ),
        )
        code = code.replace("http://127.0.0.1:8000/v1", server.url + "/v1")
        out = io.StringIO()
        namespace: dict[str, Any] = {"__name__": "readme_example"}
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(README), "exec"), namespace)
        namespace["llm"].close()  # the example's client, which a script leaves to exit
        sent = [r.json() for r in server.requests]

    assert out.getvalue().splitlines() == [
        "Bonjour !",
        "Once upon a time.Usage(prompt_tokens=7, completion_tokens=4, total_tokens=11, "
        "cached_tokens=None, reasoning_tokens=None)",
        "It is 21 °C in Paris.",
        "name='Kyoto' country='Japan'",
    ]
    # The agent loop sent the tool's result back, tied to the call id.
    tool_message = sent[3]["messages"][-1]
    assert tool_message == {"role": "tool", "tool_call_id": "call_1", "content": "21 °C in Paris"}
    assert sent[4]["response_format"]["type"] == "json_schema"
