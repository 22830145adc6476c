"""`chatlane doctor`: scripted servers with known behaviour on 127.0.0.1, and the real
``llama_cpp.server``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from chatlane.doctor import diagnose
from support import Recorded, Reply, ScriptedServer

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
KEY = "sk-doctor-secret"


def _tokens(text: str) -> int:
    from chatlane import formats

    tokenizer = formats.get("llama3.1").tokenizer
    assert tokenizer is not None
    return len(tokenizer.encode(text))


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "c",
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def scripted(
    server: ScriptedServer,
    *,
    adds_bos: bool = True,
    honours_max_tokens: bool = True,
    calls: str = "tool_calls",  # or "one" (a single call), or "content" (calls leak as text)
    stream_usage: bool = True,
) -> None:
    """A server whose behaviour is set by the flags (see each check)."""
    server.route(
        "/v1/models", Reply.json({"data": [{"id": MODEL, "owned_by": "vllm"}]}), method="GET"
    )

    def generated(body: dict[str, Any]) -> int:
        asked = body.get("max_tokens") or body.get("max_completion_tokens") or 16
        return int(asked) if honours_max_tokens else 50

    def chat(request: Recorded) -> Reply:
        body = request.json()
        usage = {"prompt_tokens": 5, "completion_tokens": generated(body), "total_tokens": 9}
        message: dict[str, Any] = {"role": "assistant", "content": "one two"}
        finish = "stop"
        if body.get("tools"):
            args = [{"city": "Paris"}, {"city": "Rome"}]
            if calls == "one":
                args = args[:1]
            if calls in ("tool_calls", "one"):
                message = {"role": "assistant", "content": None, "tool_calls": [
                    {"id": f"c{i}", "type": "function",
                     "function": {"name": "get_weather", "arguments": json.dumps(a)}}
                    for i, a in enumerate(args)
                ]}  # fmt: skip
                finish = "tool_calls"
            elif calls == "content":
                text = json.dumps({"name": "get_weather", "parameters": args[0]})
                message = {"role": "assistant", "content": text}
        if not body.get("stream"):
            return Reply.json({"id": "c", "model": MODEL, "choices": [
                {"index": 0, "message": message, "finish_reason": finish}], "usage": usage})  # fmt: skip
        events: list[Any] = [
            _chunk({"role": "assistant", "content": "one"}),
            _chunk({"content": " two"}, "stop"),
        ]
        if stream_usage:
            events.append({"id": "c", "model": MODEL, "choices": [], "usage": usage})
        return Reply.sse(events)

    def completion(request: Recorded) -> Reply:
        body = request.json()
        prompt = body["prompt"]
        counted = (
            len(prompt) if isinstance(prompt, list) else _tokens(prompt) + (1 if adds_bos else 0)
        )
        usage = {
            "prompt_tokens": counted,
            "completion_tokens": generated(body),
            "total_tokens": counted + 2,
        }
        if body.get("stream"):
            events: list[Any] = [
                {
                    "id": "x",
                    "model": MODEL,
                    "choices": [{"index": 0, "text": "one two", "finish_reason": "stop"}],
                }
            ]
            if stream_usage:
                events.append({"id": "x", "model": MODEL, "choices": [], "usage": usage})
            return Reply.sse(events)
        return Reply.json({"id": "x", "model": MODEL, "choices": [
            {"index": 0, "text": "one two", "finish_reason": "stop"}], "usage": usage})  # fmt: skip

    server.route("/v1/chat/completions", chat)
    server.route("/v1/completions", completion)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s


def statuses(report: Any) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def test_a_well_behaved_server_passes_and_gets_its_settings(server: ScriptedServer) -> None:
    scripted(server)
    report = diagnose(server.url, api_key=KEY)
    assert report.chat
    assert report.completion == "openai"
    assert (report.model, report.format, report.format_detected) == (MODEL, "llama3.1", True)
    assert statuses(report) == {
        "models": "ok",
        "BOS": "ok",
        "completion: max_tokens": "ok",
        "completion: usage": "ok",
        "completion: streaming": "ok",
        "chat: max_tokens": "ok",
        "chat: usage": "ok",
        "chat: streaming": "ok",
        "tool calls": "ok",
        "parallel calls": "ok",
    }
    assert report.ok
    assert report.server_adds_bos is True
    assert report.recommended == {
        "chat": f"OpenAIChat('{server.url}/v1', dialect='vllm', model='{MODEL}')",
        "completion": f"CompletionChat('{server.url}/v1', format='llama3.1', dialect='openai', "
        f"server_adds_bos=True, model='{MODEL}')",
    }
    # The key went to the server and appears nowhere in the report.
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in server.requests)
    assert KEY not in json.dumps(report.to_json()) + report.to_text()


def test_it_finds_what_goes_wrong(server: ScriptedServer) -> None:
    scripted(server, adds_bos=False, honours_max_tokens=False, calls="content", stream_usage=False)
    report = diagnose(server.url)
    found = statuses(report)
    assert found["chat: max_tokens"] == found["completion: max_tokens"] == "fail"
    assert found["tool calls"] == "fail"
    assert "leak into content" in next(c.detail for c in report.checks if c.name == "tool calls")
    assert found["chat: usage"] == "warn"
    assert report.server_adds_bos is False
    assert "server_adds_bos=False" in report.recommended["completion"]
    assert not report.ok


def test_one_call_per_turn_is_a_warning(server: ScriptedServer) -> None:
    scripted(server, calls="one")
    assert statuses(diagnose(server.url))["parallel calls"] == "warn"


def test_nothing_listening_is_a_failed_report() -> None:
    from support.server import free_port

    report = diagnose(f"http://127.0.0.1:{free_port()}", timeout=5)
    assert not report.chat
    assert report.completion is None
    assert statuses(report)["endpoints"] == "fail"
    assert not report.ok


def test_the_cli_prints_the_report_and_json(server: ScriptedServer) -> None:
    scripted(server)
    command = [sys.executable, "-m", "chatlane", "doctor", server.url]
    text = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    assert "ok    tool calls" in text.stdout
    assert "recommended:" in text.stdout
    body = json.loads(
        subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=120).stdout
    )
    assert body["endpoints"] == {"chat": True, "completion": "openai"}
    assert body["ok"] is True
    scripted(server, honours_max_tokens=False)
    failing = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert failing.returncode == 1
    assert "fail  chat: max_tokens" in failing.stdout


@pytest.mark.engine
def test_the_real_llama_cpp_server(llama_server: str) -> None:
    report = diagnose(llama_server)
    found = statuses(report)
    assert report.chat
    assert report.completion == "openai"
    assert report.chat_dialect == "llama.cpp"
    # llama-cpp-python adds the begin-of-text token to a text prompt itself.
    assert report.server_adds_bos is True
    assert found["BOS"] == "ok"
    assert found["completion: max_tokens"] == "ok"
    assert found["chat: max_tokens"] == "ok"
    assert found["completion: streaming"] == found["chat: streaming"] == "ok"
