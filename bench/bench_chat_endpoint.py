"""Streamed chat requests through `OpenAIChat.astream` against openai-python's `AsyncOpenAI`.

A local SSE server (asyncio, in its own process so its CPU time is not counted) answers every
``POST /v1/chat/completions`` with CHUNKS chat-completion chunks and a usage chunk. Each client
runs CONCURRENCY streamed requests at once, reads every chunk and keeps the text, as a caller
would; the table shows requests per second, client CPU seconds per request, and the memory
held per in-flight stream (tracemalloc, with every stream open and waiting mid-response).

Run: ``python -m bench chat_endpoint`` (about a minute on 2 cores).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable

CONCURRENCY = 500
CHUNKS = 200
ROUNDS = 2
HOLD_MODEL = "hold"  # the server pauses these streams after a few chunks (memory pass)
HOLD_SECONDS = 30.0  # at most: the client ends the pause once it has measured

# The server


def _response_parts(model: str) -> list[bytes]:
    """The chunked-encoding pieces of one streamed answer, in groups of 10 events."""
    events = []
    for i in range(CHUNKS):
        chunk = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1730000000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": f"tok{i} "} if i else {"role": "assistant", "content": ""},
                    "finish_reason": "stop" if i == CHUNKS - 1 else None,
                }
            ],
        }
        events.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    usage = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1730000000,
        "model": model,
        "choices": [],
        "usage": {"prompt_tokens": 10, "completion_tokens": CHUNKS, "total_tokens": CHUNKS + 10},
    }
    events.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    parts = []
    for start in range(0, len(events), 10):
        data = b"".join(events[start : start + 10])
        parts.append(b"%x\r\n%s\r\n" % (len(data), data))
    parts.append(b"0\r\n\r\n")
    return parts


_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    normal = _response_parts("bench")
    hold = _response_parts(HOLD_MODEL)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            held = HOLD_MODEL.encode() in body
            parts = hold if held else normal
            writer.write(_HEAD)
            for i, part in enumerate(parts):
                writer.write(part)
                await writer.drain()
                if held and i == 0:
                    await asyncio.sleep(HOLD_SECONDS)
                else:
                    await asyncio.sleep(0)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _serve() -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", 0, backlog=2048)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with server:
        await server.serve_forever()


def serve() -> None:
    """Run the SSE server (in a subprocess); prints its port first."""
    asyncio.run(_serve())


# The clients

One = Callable[[str, "Callable[[], None] | None"], Awaitable[str]]
Factory = Callable[[str], tuple[One, Callable[[], Awaitable[None]]]]


def _chatlane(url: str) -> tuple[One, Callable[[], Awaitable[None]]]:
    from chatlane.backends.openai_chat import OpenAIChat

    llm = OpenAIChat(url, api_key="bench-key", model="bench")

    async def one(model: str, on_first: Callable[[], None] | None = None) -> str:
        async with llm.astream("Say something.", model=model) as stream:
            async for _ in stream:
                if on_first is not None:
                    on_first()
                    on_first = None
            return (await stream.get_response()).message.text

    return one, llm.aclose


def _openai(url: str) -> tuple[One, Callable[[], Awaitable[None]]]:
    from openai import AsyncOpenAI

    # A generous timeout: on a loaded 2-core machine 500 connects can take over its default 5 s.
    client = AsyncOpenAI(base_url=url, api_key="bench-key", max_retries=0, timeout=120)

    async def one(model: str, on_first: Callable[[], None] | None = None) -> str:
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Say something."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        parts = []
        async for chunk in stream:
            if on_first is not None:
                on_first()
                on_first = None
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
        return "".join(parts)

    return one, client.close


async def _throughput(factory: Factory, url: str) -> tuple[float, float]:
    """Seconds of wall time and of CPU time for CONCURRENCY concurrent streams."""
    one, close = factory(url)
    try:
        await asyncio.gather(*(one("bench", None) for _ in range(20)))  # warm up
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        texts = await asyncio.gather(*(one("bench", None) for _ in range(CONCURRENCY)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await close()
    expected = "".join(f"tok{i} " for i in range(1, CHUNKS))
    assert all(t == expected for t in texts), "a client lost text"
    return wall, cpu


async def _memory(factory: Factory, url: str) -> float:
    """Bytes held per in-flight stream: every stream open, its first chunk read, waiting."""
    one, close = factory(url)
    try:
        await one("bench", None)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        started = 0
        all_started = asyncio.Event()

        def first() -> None:
            nonlocal started
            started += 1
            if started == CONCURRENCY:
                all_started.set()

        tasks = [asyncio.ensure_future(one(HOLD_MODEL, first)) for _ in range(CONCURRENCY)]
        await asyncio.wait_for(all_started.wait(), HOLD_SECONDS)
        gc.collect()
        during = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await close()
    return (during - before) / CONCURRENCY


def main() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    server = subprocess.Popen(
        [sys.executable, "-c", "from bench.bench_chat_endpoint import serve; serve()"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}/v1"
        clients: dict[str, Factory] = {"chatlane": _chatlane, "openai-python": _openai}
        best: dict[str, tuple[float, float]] = {}
        for _ in range(ROUNDS):  # interleaved, so drift on a shared machine hits both alike
            for name, factory in clients.items():
                wall, cpu = asyncio.run(_throughput(factory, url))
                if name not in best or wall < best[name][0]:
                    best[name] = (wall, cpu)
        memory = {name: asyncio.run(_memory(factory, url)) for name, factory in clients.items()}
    finally:
        server.terminate()
        server.wait()

    print(
        f"{CONCURRENCY} concurrent streamed requests x {CHUNKS} chunks, best of {ROUNDS}; "
        "server in another process. req/s/CPU: requests per client CPU-second (steadier "
        "than wall-clock req/s on a shared machine)."
    )
    header = (
        f"{'client':<15}{'req/s':>8}{'CPU ms/req':>12}{'req/s/CPU':>11}{'KiB/stream':>12}"
        f"{'req/s ratio':>13}{'CPU ratio':>11}"
    )
    print(header)
    print("-" * len(header))
    base_wall, base_cpu = best["openai-python"]
    for name in clients:
        wall, cpu = best[name]
        print(
            f"{name:<15}{CONCURRENCY / wall:>8.0f}{cpu / CONCURRENCY * 1000:>12.2f}"
            f"{CONCURRENCY / cpu:>11.0f}{memory[name] / 1024:>12.1f}"
            f"{base_wall / wall:>12.2f}x{base_cpu / cpu:>10.2f}x"
        )


if __name__ == "__main__":
    main()
