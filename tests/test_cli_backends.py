"""The command line against real backends: a chat endpoint and a completion endpoint served on
127.0.0.1 by the test, and the embedded engine with the tiny test model."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from test_cli import CLI, assert_one_line_error

SECRET = "sk-loopback-0123456789"


class Server:
    """An OpenAI-compatible server on loopback: chat and completion endpoints, streamed or not.

    The chat endpoint answers ``echo: <last user message>``; a message containing ``busy``
    gets a 429 (with ``Retry-After: 0``) the first time it is seen. The completion endpoint
    answers ``Bonjour``. Every request body and its Authorization header are kept.
    """

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.refused: set[str] = set()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.bodies.append(body)
                    server.auth.append(self.headers.get("Authorization"))
                if self.path.endswith("/chat/completions"):
                    text = body["messages"][-1]["content"]
                    with server.lock:
                        refuse = "busy" in text and text not in server.refused
                        server.refused.add(text)
                    if refuse:
                        self.send_json({"error": {"message": "busy, try later"}}, 429)
                        return
                    pieces = ["echo: ", text]
                    if body.get("stream"):
                        chunks: list[dict[str, Any]] = [
                            {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}
                        ]
                        chunks += [
                            {"choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces
                        ]
                        chunks.append(
                            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                        )
                        chunks.append(
                            {
                                "choices": [],
                                "usage": {
                                    "prompt_tokens": 5,
                                    "completion_tokens": 2,
                                    "total_tokens": 7,
                                },
                            }
                        )
                        self.send_sse(chunks)
                    else:
                        self.send_json(
                            {
                                "id": "c1",
                                "model": body.get("model") or "loop",
                                "choices": [
                                    {
                                        "index": 0,
                                        "message": {
                                            "role": "assistant",
                                            "content": "".join(pieces),
                                        },
                                        "finish_reason": "stop",
                                    }
                                ],
                                "usage": {
                                    "prompt_tokens": 5,
                                    "completion_tokens": 2,
                                    "total_tokens": 7,
                                },
                            }
                        )
                elif self.path.endswith("/completions"):
                    pieces = ["Bon", "jour"]
                    chunks = [
                        {"choices": [{"index": 0, "text": p, "finish_reason": None}]}
                        for p in pieces
                    ]
                    chunks.append({"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]})
                    if body.get("stream"):
                        self.send_sse(chunks)
                    else:
                        self.send_json(
                            {"choices": [{"index": 0, "text": "Bonjour", "finish_reason": "stop"}]}
                        )
                else:
                    self.send_json({"error": {"message": "no such path"}}, 404)

            def send_json(self, data: Any, status: int = 200) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(raw)

            def send_sse(self, chunks: list[Any]) -> None:
                raw = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
                data = raw.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    return CLI(tmp_path)


def test_run_against_a_chat_endpoint_sends_the_key_and_never_logs_it(
    cli: CLI, server: Server
) -> None:
    out = cli.ok(
        "run",
        "Hello",
        "--base-url",
        server.url,
        "--model",
        "m-7",
        "--system",
        "Be kind.",
        env={"CHATLANE_API_KEY": SECRET},
    )
    assert out == "echo: Hello\n"
    [body] = server.bodies
    assert body["model"] == "m-7"
    assert body["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hello"},
    ]
    assert server.auth == [f"Bearer {SECRET}"]
    [summary] = cli.logs_json()
    assert summary["backend"] == f"OpenAIChat {server.url}"
    assert summary["total_tokens"] == 7
    data = b"".join(p.read_bytes() for p in cli.home.glob("log.db*"))
    assert SECRET.encode() not in data


def test_chat_against_a_chat_endpoint_sends_the_whole_conversation(
    cli: CLI, server: Server
) -> None:
    out = cli.ok("chat", "--base-url", server.url, input="first\n/system Be brief.\nsecond\n")
    assert "echo: first\n" in out
    assert "echo: second\n" in out
    assert [m["content"] for m in server.bodies[1]["messages"]] == [
        "Be brief.",
        "first",
        "echo: first",
        "second",
    ]
    assert all(body["stream"] for body in server.bodies)


def test_a_key_in_the_url_stays_out_of_the_log(cli: CLI, server: Server) -> None:
    url = server.url.replace("/v1", "/v1?api-key=" + SECRET)
    cli("run", "Hello", "--base-url", url, "--no-stream")
    [summary] = cli.logs_json()
    assert SECRET not in summary["backend"]


def test_a_refused_connection_is_one_clear_line(cli: CLI) -> None:
    result = cli("run", "x", "--base-url", "http://127.0.0.1:9/v1", "--retries", "0")
    assert_one_line_error(result, 1, "127.0.0.1:9")
    [call] = cli.logs_json("show", "last")["calls"]
    assert "ConnectError" in call["error"]


def test_batch_against_a_chat_endpoint_retries_through_the_transport(
    cli: CLI, server: Server
) -> None:
    rows = [
        {
            "id": f"r{i}",
            "messages": [{"role": "user", "content": f"{'busy ' if i % 3 == 0 else ''}q{i}"}],
        }
        for i in range(9)
    ]
    (cli.home / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = cli("batch", "in.jsonl", "-o", "out.jsonl", "-j", "3", "--base-url", server.url)
    assert result.returncode == 0, result.stderr
    got = {r["id"]: r for r in map(json.loads, (cli.home / "out.jsonl").read_text().splitlines())}
    assert got["r3"]["response"]["message"]["content"] == "echo: busy q3"
    assert len(got) == 9
    assert len(server.bodies) == 12  # three 429s, each retried once


def test_batch_without_retries_records_the_rate_limit(cli: CLI, server: Server) -> None:
    (cli.home / "in.jsonl").write_text(
        json.dumps({"id": "a", "messages": [{"role": "user", "content": "busy"}]}) + "\n"
    )
    result = cli("batch", "in.jsonl", "-o", "out.jsonl", "--retries", "0", "--base-url", server.url)
    assert result.returncode == 1
    [line] = map(json.loads, (cli.home / "out.jsonl").read_text().splitlines())
    assert line["error"]["type"] == "RateLimited"
    assert line["error"]["status_code"] == 429
    assert "busy, try later" in line["error"]["body"]
    retry = cli("batch", "in.jsonl", "-o", "out.jsonl", "--retry-failed", "--base-url", server.url)
    assert retry.returncode == 0, retry.stderr


def test_run_against_a_completion_endpoint_renders_the_llama_prompt(
    cli: CLI, server: Server
) -> None:
    from chatlane.formats.llama3 import Llama3
    from chatlane.messages import user

    out = cli.ok(
        "run", "hi", "--completion-url", server.url, "--format", "llama3.1", "--profile", "hf"
    )
    assert out == "Bonjour\n"
    [body] = server.bodies
    expected = Llama3("3.1", "hf").render([user("hi")])
    prompt = body["prompt"]
    if isinstance(prompt, str):
        assert prompt.endswith(expected.text.removeprefix("<|begin_of_text|>"))
    else:
        assert list(prompt) == list(expected.tokens)[-len(prompt) :]
    assert cli.logs_json()[0]["backend"] == f"CompletionChat {server.url}"


@pytest.mark.engine
def test_run_and_batch_on_the_embedded_engine(cli: CLI) -> None:
    pytest.importorskip("llama_cpp")
    from chatlane.testing import tiny_llama3_gguf

    model = tiny_llama3_gguf()
    body = json.loads(
        cli.ok("run", "Hello", "--gguf", str(model), "--max-tokens", "6", "--seed", "1", "--json")
    )
    assert body["usage"]["completion_tokens"] <= 6
    assert body["finish_reason"] in ("length", "stop")
    [summary] = cli.logs_json()
    assert summary["backend"] == f"LlamaCpp {model.name}"
    rows = [
        {"id": f"e{i}", "messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 4}
        for i in range(3)
    ]
    (cli.home / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = cli("batch", "in.jsonl", "-o", "out.jsonl", "-j", "2", "--gguf", str(model))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(x) for x in (cli.home / "out.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == ["e0", "e1", "e2"]
    assert all(r["response"]["usage"]["completion_tokens"] <= 4 for r in lines)


@pytest.mark.engine
def test_structured_output_on_the_embedded_engine(cli: CLI) -> None:
    pytest.importorskip("llama_cpp")
    from chatlane.testing import tiny_llama3_gguf

    schema = {
        "type": "object",
        "properties": {
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "degrees": {"type": "integer", "minimum": -30, "maximum": 45},
        },
        "required": ["unit", "degrees"],
        "additionalProperties": False,
    }
    (cli.home / "temp.json").write_text(json.dumps(schema))
    for seed in ("1", "2"):
        body = json.loads(
            cli.ok(
                "run",
                "Temperature?",
                "--gguf",
                str(tiny_llama3_gguf()),
                "--schema",
                "temp.json",
                "--json",
                "--max-tokens",
                "40",
                "--seed",
                seed,
            )
        )
        assert body["parsed"]["unit"] in ("celsius", "fahrenheit")
        assert -30 <= body["parsed"]["degrees"] <= 45
        assert json.loads(body["text"]) == body["parsed"]


def test_a_missing_gguf_is_one_clear_line(cli: CLI) -> None:
    pytest.importorskip("llama_cpp")
    assert_one_line_error(cli("run", "x", "--gguf", "nope.gguf"), 1, "nope.gguf")
