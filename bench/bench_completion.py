"""Completion endpoints: an Aleph Alpha ``/complete`` stream read by chatlane and by the peer.

A loopback server streams one answer of ``CHUNKS`` ``stream_chunk`` items (then the
``stream_summary`` and ``completion_summary``), the shape Aleph Alpha's API sends with
``raw_completion``. The contenders:

- chatlane ``CompletionChat.astream`` with the Llama 3 format: renders the prompt, posts it,
  decodes the SSE stream, cuts at stop tokens and runs the Llama 3 tool-call parser over the raw
  text, yielding `ChatEvent`s; then the same over the whole (non-streamed) answer;
- aleph-alpha-client 11.5.1 ``AsyncClient.complete_with_streaming``: posts a text prompt and
  yields its stream items (JSON decoded into dataclasses; no parsing of the text);
- in process, without HTTP: chatlane's ``decode_chunk`` + ``CompletionDecoder`` (with the
  Llama 3 parser) per chunk against aleph-alpha-client's ``stream_item_from_json`` per chunk.

Each row is the best of several runs, in the same process, against the same server.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHUNKS = 2000
RUNS = 7


def stream_items(n: int = CHUNKS) -> list[dict[str, Any]]:
    words = ["The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dög", "."]
    items: list[dict[str, Any]] = [
        {
            "type": "stream_chunk",
            "index": 0,
            "completion": words[i % len(words)],
            "raw_completion": words[i % len(words)],
            "log_probs": None,
            "completion_tokens": None,
        }
        for i in range(n)
    ]
    items[-1]["raw_completion"] = "<|eot_id|>"
    items.append(
        {
            "type": "stream_summary",
            "index": 0,
            "model_version": "llama-3.1-8b",
            "finish_reason": "end_of_text",
        }
    )
    items.append(
        {"type": "completion_summary", "num_tokens_prompt_total": 40, "num_tokens_generated": n}
    )
    return items


def whole_answer(items: list[dict[str, Any]]) -> dict[str, Any]:
    text = "".join(i["raw_completion"] for i in items if i["type"] == "stream_chunk")
    return {
        "model_version": "llama-3.1-8b",
        "completions": [
            {"completion": text, "raw_completion": text, "finish_reason": "end_of_text"}
        ],
        "num_tokens_prompt_total": 40,
        "num_tokens_generated": len(items) - 2,
    }


@contextmanager
def serve(items: list[dict[str, Any]]) -> Iterator[str]:
    stream = b"".join(b"data: " + json.dumps(i).encode() + b"\n\n" for i in items)
    whole = json.dumps(whole_answer(items)).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            # No Nagle delay on the server's many small writes: the server is not what is measured.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            data, kind = (
                (stream, "text/event-stream") if body.get("stream") else (whole, "application/json")
            )
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            # The stream in pieces of about one event each, as a server writes them.
            step = max(1, len(data) // (CHUNKS + 2)) * 4
            for start in range(0, len(data), step):
                self.wfile.write(data[start : start + step])

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def best_of(run: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(RUNS):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    from chatlane.backends.completion import CompletionChat, CompletionDecoder
    from chatlane.events import TextDelta
    from chatlane.formats.llama3 import Llama3
    from chatlane.messages import user
    from chatlane.request import ChatRequest
    from chatlane.wire.completions import decode_chunk

    items = stream_items()
    expected = "".join(i["raw_completion"] for i in items[:-3])
    fmt = Llama3(date="21 September 2024")
    request = ChatRequest((user("Tell me about foxes."),), max_tokens=CHUNKS)
    prompt = fmt.render(request).text
    rows: list[tuple[str, float]] = []

    with serve(items) as url:
        chat = CompletionChat(url, fmt, dialect="aleph-alpha", model="llama-3.1-8b-instruct")

        async def chatlane_stream() -> str:
            texts = [e.text async for e in chat.astream(request) if isinstance(e, TextDelta)]
            return "".join(texts)

        async def chatlane_whole() -> str:
            return (await chat.achat(request)).text

        loop = asyncio.new_event_loop()
        try:
            assert loop.run_until_complete(chatlane_stream()) == expected
            assert loop.run_until_complete(chatlane_whole()) == expected
            rows.append(
                (
                    "chatlane CompletionChat.astream (Llama 3 parser)",
                    best_of(lambda: loop.run_until_complete(chatlane_stream())),
                )
            )
            rows.append(
                (
                    "chatlane CompletionChat.achat, whole answer",
                    best_of(lambda: loop.run_until_complete(chatlane_whole())),
                )
            )
            try:
                from aleph_alpha_client import AsyncClient, CompletionRequest, Prompt
                from aleph_alpha_client.completion import StreamChunk

                async def peer() -> str:
                    async with AsyncClient(token="bench", host=url) as client:
                        req = CompletionRequest(
                            prompt=Prompt.from_text(prompt),
                            maximum_tokens=CHUNKS,
                            raw_completion=True,
                            stop_sequences=["<|eot_id|>", "<|eom_id|>"],
                        )
                        texts = [
                            item.raw_completion or ""
                            async for item in client.complete_with_streaming(req, "llama")
                            if isinstance(item, StreamChunk)
                        ]
                    return "".join(texts)

                loop.run_until_complete(peer())
                rows.append(
                    (
                        "aleph-alpha-client complete_with_streaming",
                        best_of(lambda: loop.run_until_complete(peer())),
                    )
                )
            except ImportError:
                rows.append(("aleph-alpha-client (not installed)", float("nan")))
            loop.run_until_complete(chat.aclose())
        finally:
            loop.close()

    def decode_only() -> None:
        decoder = CompletionDecoder(fmt, request, fmt.stop_sequences)
        for item in items:
            for piece in decode_chunk(item, "aleph-alpha"):
                decoder.feed(piece)
        decoder.finish()

    rows.append(("chatlane decode_chunk + CompletionDecoder, in process", best_of(decode_only)))
    try:
        from aleph_alpha_client.completion import stream_item_from_json

        def peer_decode() -> None:
            for item in items:
                stream_item_from_json(item)

        rows.append(("aleph-alpha-client stream_item_from_json, in process", best_of(peer_decode)))
    except ImportError:  # pragma: no cover - a dev dependency
        pass

    base = rows[0][1]
    print(f"one /complete answer of {CHUNKS} stream chunks over loopback, best of {RUNS} runs")
    print(f"{'contender':56} {'ms':>8} {'µs/chunk':>9} {'vs chatlane stream':>19}")
    for name, seconds in rows:
        print(
            f"{name:56} {seconds * 1e3:8.2f} {seconds / CHUNKS * 1e6:9.2f} {seconds / base:18.2f}x"
        )


if __name__ == "__main__":
    main()
