"""`chatlane serve` in front of a fast raw completion server, against calling that server directly.

A scripted raw ``/v1/completions`` server (asyncio, in its own process) streams CHUNKS pieces
of text per request; each piece carries the time it was sent (``time.monotonic_ns``, one clock
for every process on the machine). The gateway runs as a user runs it, ``chatlane serve
--completion-url ... --no-log``, in a process of its own. One client process then runs
CONCURRENCY streamed requests at once, either straight to the raw server (`CompletionChat`:
chatlane renders and parses in the client) or through the gateway (`OpenAIChat`: the gateway
renders and parses, the client reads OpenAI chunks), interleaved over ROUNDS rounds so drift
on the shared machine hits both alike. Every piece of text is checked on arrival.

Reported, for each way:

- req/s: CONCURRENCY requests over the wall time of the round (the best round);
- per-chunk latency p50 / p99: from the raw server sending a piece to the client receiving its
  text; the gateway's added latency is the difference to the direct way in the same run;
- gateway CPU ms/req: the gateway process's CPU time (``/proc``) over the round, per request.

Two backends: ``fast`` sends pieces as fast as it can (the gateway's own cost dominates: all
three processes share 2 cores), ``paced`` sends one piece every PACE seconds as a model at
50 tokens/s would (what a deployment sees). A last pass sends one stream at a time (no
queueing) for the gateway's latency per chunk on its own.

Run: ``python -m bench serve`` (about two minutes on 2 cores).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

CONCURRENCY = 500
CHUNKS = 100
ROUNDS = 2
PACE = 0.02
SINGLE = 20  # one-at-a-time streams for the unloaded latency

# ---------------------------------------------------------------- the raw server


def _chunk(text: str, finish: str | None) -> bytes:
    body = {
        "id": "cmpl-bench",
        "object": "text_completion",
        "created": 1730000000,
        "model": "bench",
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
    }
    data = b"data: " + json.dumps(body).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
_DONE = b"%x\r\n%s\r\n" % (len(b"data: [DONE]\n\n"), b"data: [DONE]\n\n") + b"0\r\n\r\n"


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = json.loads(await reader.readexactly(length))
            pace = float(body.get("user") == "paced") * PACE
            writer.write(_HEAD + _chunk("Story:", None))
            for i in range(CHUNKS):
                if pace:
                    await asyncio.sleep(pace)
                last = i == CHUNKS - 1
                writer.write(_chunk(f" t{time.monotonic_ns()}", "length" if last else None))
                await writer.drain()
                if not pace and i % 10 == 9:
                    await asyncio.sleep(0)
            writer.write(_DONE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _serve() -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def serve() -> None:
    """Run the raw server (in a subprocess); prints its port first."""
    asyncio.run(_serve())


# ---------------------------------------------------------------- the clients


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _streams(backend: Any, count: int, mode: str) -> tuple[float, list[int]]:
    """Wall seconds for ``count`` concurrent streams, and every piece's latency (ns)."""
    from chatlane.events import TextDelta

    latencies: list[int] = []

    async def one() -> None:
        seen = 0
        async with backend.astream("Tell me a story.", max_tokens=CHUNKS, user=mode) as stream:
            async for event in stream:
                if isinstance(event, TextDelta) and event.text.startswith(" t"):
                    now = time.monotonic_ns()
                    for piece in event.text.split(" t")[1:]:
                        latencies.append(now - int(piece))
                        seen += 1
        assert seen == CHUNKS, f"a client lost text: {seen} of {CHUNKS} pieces"

    gc.collect()
    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return time.perf_counter() - start, latencies


async def _single(backend: Any, mode: str) -> list[int]:
    latencies: list[int] = []
    for _ in range(SINGLE):
        latencies += (await _streams(backend, 1, mode))[1]
    return latencies


def _ms(ns: float) -> float:
    return ns / 1e6


def _pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def main() -> None:
    from chatlane.backends.completion import CompletionChat
    from chatlane.backends.openai_chat import OpenAIChat
    from chatlane.backends.transport import Timeouts

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "CHATLANE_LOG": "off"}
    raw = subprocess.Popen(
        [sys.executable, "-c", "from bench.bench_serve import serve; serve()"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert raw.stdout is not None
    raw_url = f"http://127.0.0.1:{raw.stdout.readline().strip()}/v1"
    port = _free_port()
    gateway = subprocess.Popen(
        [
            *(sys.executable, "-m", "chatlane", "serve", "--completion-url", raw_url),
            *("--format", "llama3.1", "--served-model", "bench", "--port", str(port)),
            *("--no-log", "--max-concurrency", "4096"),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert gateway.stderr is not None
    ready = gateway.stderr.readline()
    assert ready.startswith("chatlane serve:"), ready
    timeouts = Timeouts(connect=60, idle=120)
    ways = {
        "direct": lambda: CompletionChat(raw_url, "llama3.1", timeouts=timeouts),
        "gateway": lambda: OpenAIChat(
            f"http://127.0.0.1:{port}/v1", api_key="k", model="bench", timeouts=timeouts
        ),
    }
    results: dict[tuple[str, str], dict[str, Any]] = {}
    try:
        for mode in ("fast", "paced"):
            for _ in range(ROUNDS):
                for name, make in ways.items():

                    async def run(
                        make: Callable[[], Any] = make, mode: str = mode
                    ) -> tuple[float, list[int]]:
                        async with make() as backend:
                            await _streams(backend, 20, mode)  # warm up connections
                            return await _streams(backend, CONCURRENCY, mode)

                    cpu = _cpu_seconds(gateway.pid)
                    wall, latencies = asyncio.run(run())
                    cpu = _cpu_seconds(gateway.pid) - cpu
                    best = results.get((mode, name))
                    if best is None or wall < best["wall"]:
                        results[(mode, name)] = {"wall": wall, "lat": latencies, "cpu": cpu}
        single: dict[str, list[int]] = {}
        for name, make in ways.items():

            async def run_single(make: Callable[[], Any] = make) -> list[int]:
                async with make() as backend:
                    return await _single(backend, "paced")

            single[name] = asyncio.run(run_single())
    finally:
        for process in (gateway, raw):
            process.terminate()
            process.wait()
        gateway.stderr.close()
        raw.stdout.close()

    print(
        f"{CONCURRENCY} concurrent streamed requests x {CHUNKS} chunks, best of {ROUNDS} rounds; "
        "raw server, gateway and client in three processes on the same cores."
    )
    header = (
        f"{'backend':<8}{'way':<9}{'req/s':>8}{'vs direct':>11}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'+p50 ms':>9}{'+p99 ms':>9}{'gw CPU ms/req':>15}"
    )
    print(header)
    print("-" * len(header))
    for mode in ("fast", "paced"):
        direct = results[(mode, "direct")]
        for name in ways:
            r = results[(mode, name)]
            p50, p99 = _pct(r["lat"], 0.5), _pct(r["lat"], 0.99)
            d50, d99 = _pct(direct["lat"], 0.5), _pct(direct["lat"], 0.99)
            extra = name == "gateway"
            print(
                f"{mode:<8}{name:<9}{CONCURRENCY / r['wall']:>8.0f}"
                f"{direct['wall'] / r['wall']:>10.2f}x{_ms(p50):>9.2f}{_ms(p99):>9.2f}"
                + (f"{_ms(p50 - d50):>9.2f}{_ms(p99 - d99):>9.2f}" if extra else f"{'':>18}")
                + (f"{r['cpu'] / CONCURRENCY * 1000:>15.2f}" if extra else "")
            )
    d = single["direct"]
    g = single["gateway"]
    print(
        f"\none stream at a time ({SINGLE} streams x {CHUNKS} chunks, paced): per-chunk latency "
        f"direct p50 {_ms(_pct(d, 0.5)):.3f} ms / p99 {_ms(_pct(d, 0.99)):.3f} ms, "
        f"gateway p50 {_ms(_pct(g, 0.5)):.3f} ms / p99 {_ms(_pct(g, 0.99)):.3f} ms: added "
        f"p50 {_ms(_pct(g, 0.5) - _pct(d, 0.5)):.3f} ms, p99 {_ms(_pct(g, 0.99) - _pct(d, 0.99)):.3f} ms "
        f"(mean {_ms(statistics.fmean(g) - statistics.fmean(d)):.3f} ms)"
    )


if __name__ == "__main__":
    main()
