"""Transcripts of each server's SSE variant, served over a real socket on 127.0.0.1.

A server thread writes each transcript in small pieces of varying size (so lines, CRLFs and
UTF-8 characters are cut across reads), httpx reads the raw bytes, and the SSE decoder and the
stream assembler turn them into a response. The transcripts follow the shapes these servers
send (each file says whose, in SSE comments the decoder skips).
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chatlane.events import ChatEvent, ResponseStarted, accumulate
from chatlane.messages import ToolCall
from chatlane.response import ChatResponse, FinishReason, Usage
from chatlane.wire.openai import StreamAssembler
from chatlane.wire.sse import SSEDecoder

TRANSCRIPTS = Path(__file__).parent / "transcripts"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the body ends when the connection closes

    def do_GET(self) -> None:
        data = (TRANSCRIPTS / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        sizes = [1, 7, 2, 13, 3, 64, 5]
        position, turn = 0, 0
        while position < len(data):
            size = sizes[turn % len(sizes)]
            self.wfile.write(data[position : position + size])
            self.wfile.flush()
            position += size
            turn += 1
            if turn % 16 == 0:
                time.sleep(0.001)  # let the client read what is there, cutting anywhere

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def stream(server: str, name: str) -> tuple[list[ChatEvent], bool]:
    """The events of a transcript, and whether it ended with [DONE]."""
    decoder, assembler = SSEDecoder(), StreamAssembler()
    events: list[ChatEvent] = []
    done = False
    with httpx.Client() as client, client.stream("GET", f"{server}/{name}") as response:
        for piece in response.iter_raw():
            for sse in decoder.feed(piece):
                if sse.done:
                    done = True
                else:
                    events += assembler.feed(sse.json())
    for sse in decoder.finish():
        events += assembler.feed(sse.json())
    return events + assembler.finish(), done


def response_of(server: str, name: str) -> ChatResponse:
    events, _ = stream(server, name)
    return accumulate(events)


def test_openai_parallel_tool_calls(server: str) -> None:
    events, done = stream(server, "openai_parallel_tool_calls.sse")
    assert done
    assert events[0] == ResponseStarted("chatcmpl-A1", "gpt-4o-2024-08-06", 1731000000, "fp_9")
    response = accumulate(events)
    assert response.tool_calls == (
        ToolCall.from_raw("call_Pa", "get_weather", '{"city": "Paris"}'),
        ToolCall.from_raw("call_Zu", "get_weather", '{"city": "Z\\u00fcrich"}'),
    )
    assert response.tool_calls[1].arguments == {"city": "Zürich"}
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.usage == Usage(80, 40, 120, cached_tokens=64, reasoning_tokens=0)
    assert response.text == ""


def test_llama_cpp_python_crlf_and_pings(server: str) -> None:
    events, done = stream(server, "llama_cpp_python_crlf.sse")
    assert done
    response = accumulate(events)
    assert response.text == "Grüß Gott 🦙"
    assert response.finish_reason is FinishReason.LENGTH
    assert response.usage is None


def test_vllm_reasoning_with_usage_on_every_chunk(server: str) -> None:
    response = response_of(server, "vllm_reasoning.sse")
    assert response.message.reasoning == "Two plus two is four."
    assert response.text == "4"
    assert response.stop_sequence == "</answer>"
    assert response.usage == Usage(12, 8, 20)


def test_aleph_alpha_tool_call(server: str) -> None:
    response = response_of(server, "aleph_alpha_tool_call.sse")
    assert response.tool_calls == (
        ToolCall.from_raw("chatcmpl-tool-1", "search", '{"query": "Pharia"}'),
    )
    assert response.text == ""
    assert response.usage == Usage(200, 15, 215)


def test_a_cut_stream_keeps_its_text_and_call(server: str) -> None:
    events, done = stream(server, "cut_without_finish.sse")
    assert not done
    response = accumulate(events)
    assert response.text == "Looking"
    assert response.tool_calls == (ToolCall.from_raw("c9", "lookup", '{"id": 7}'),)
    assert response.finish_reason is FinishReason.INCOMPLETE
