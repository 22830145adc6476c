"""The stream assembler on a recorded 2,000-chunk stream, against the peers' stream handling.

The stream interleaves text and tool calls the way OpenAI-compatible servers send them (an
opening role delta, text deltas, tool calls whose arguments arrive in small pieces with
escapes and non-ASCII text, a finish chunk and a usage-only chunk). Every contender starts
from the same SSE data strings and JSON-decodes each one itself:

- chatlane: ``json.loads`` + `StreamAssembler.feed` (the target row); then with the events
  accumulated into a `ChatResponse`; then from raw bytes through `SSEDecoder` as well;
- openai-python: the chunk model built as its ``Stream`` builds it (``construct_type``) +
  ``ChatCompletionStreamState.handle_chunk``, then ``get_final_completion``;
- aleph-alpha-client 11.5.1: ``process_chat_stream`` over an async generator of decoded chunks
  (it yields items and accumulates nothing but the tool calls, and drops data on odd chunks;
  see tests/conformance/test_aleph_alpha_parity.py).

Each row is the best of several runs; a second table gives ``import chatlane``'s cost from
``python -X importtime`` (the target is at most 50 ms over a bare interpreter).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

CHUNKS = 2000
RUNS = 11


def recorded_stream(n: int = CHUNKS) -> list[str]:
    """The SSE data strings of one stream of ``n`` chunks (deterministic)."""
    top = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "llama-3.1-8b",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return json.dumps({**top, "choices": [choice]})

    words = [
        "The",
        "quick",
        "brown",
        "llama",
        "jumps",
        "over",
        "the",
        "lazy",
        "dog;",
        "naïve",
        "café",
        "résumé",
        "—",
        "🦙",
        "",
    ]
    arguments = json.dumps(
        {
            "query": 'weather in "München" and Zürich\n',
            "units": "metric",
            "days": [1, 2, 3],
            "note": "éà🦙",
        }
    )
    pieces = [arguments[i : i + 3] for i in range(0, len(arguments), 3)]
    out = [chunk({"role": "assistant", "content": ""})]
    call = 0
    budget = n - 3  # the opening, finish and usage chunks
    while len(out) - 1 < budget:
        for i in range(min(30, budget - (len(out) - 1))):
            out.append(chunk({"content": words[i % len(words)] + " "}))
        if len(out) - 1 >= budget:
            break
        head = {
            "index": call,
            "id": f"call_{call}",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        }
        out.append(chunk({"content": None, "tool_calls": [head]}))
        for piece in pieces[: max(0, budget - (len(out) - 1))]:
            out.append(
                chunk(
                    {
                        "content": None,
                        "tool_calls": [{"index": call, "function": {"arguments": piece}}],
                    }
                )
            )
        call += 1
    out.append(chunk({"content": None}, "tool_calls"))
    usage = {"prompt_tokens": 120, "completion_tokens": 1900, "total_tokens": 2020}
    out.append(json.dumps({**top, "choices": [], "usage": usage}))
    assert len(out) == n, len(out)
    return out


def run_chatlane_events(lines: list[str]) -> list[Any]:
    from chatlane.wire.openai import StreamAssembler

    assembler = StreamAssembler()
    events: list[Any] = []
    loads = json.loads
    for line in lines:
        events += assembler.feed(loads(line))
    return events + assembler.finish()


def run_chatlane(lines: list[str]) -> Any:
    from chatlane.events import Accumulator
    from chatlane.wire.openai import StreamAssembler

    assembler = StreamAssembler()
    acc = Accumulator()
    loads = json.loads
    for line in lines:
        for event in assembler.feed(loads(line)):
            acc.add(event)
    for event in assembler.finish():
        acc.add(event)
    return acc.response()


def run_chatlane_bytes(stream: bytes) -> Any:
    from chatlane.events import Accumulator
    from chatlane.wire.openai import StreamAssembler
    from chatlane.wire.sse import SSEDecoder

    decoder = SSEDecoder()
    assembler = StreamAssembler()
    acc = Accumulator()
    loads = json.loads
    # Network reads arrive in pieces of a few KiB, cutting lines anywhere.
    for start in range(0, len(stream), 4096):
        for sse in decoder.feed(stream[start : start + 4096]):
            if sse.data != "[DONE]":
                for event in assembler.feed(loads(sse.data)):
                    acc.add(event)
    for event in assembler.finish():
        acc.add(event)
    return acc.response()


def run_openai(lines: list[str]) -> Any:
    from openai._models import construct_type
    from openai.lib.streaming.chat import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk

    state: Any = ChatCompletionStreamState()
    loads = json.loads
    for line in lines:
        state.handle_chunk(construct_type(type_=ChatCompletionChunk, value=loads(line)))
    return state.get_final_completion()


def run_aleph(lines: list[str]) -> Any:
    from aleph_alpha_client.chat import process_chat_stream

    async def source() -> AsyncGenerator[dict[str, Any], None]:
        loads = json.loads
        for line in lines:
            yield loads(line)

    async def collect() -> list[Any]:
        return [item async for item in process_chat_stream(source())]

    return asyncio.run(collect())


def best_of(fn: Callable[[Any], Any], arg: Any) -> float:
    best = float("inf")
    for _ in range(RUNS):
        start = time.perf_counter()
        fn(arg)
        best = min(best, time.perf_counter() - start)
    return best


def import_cost_ms() -> float:
    """``import chatlane``'s cumulative import time, best of five fresh interpreters."""
    best = float("inf")
    for _ in range(5):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import chatlane"],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        for line in out.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 3 and parts[2] == "chatlane":
                best = min(best, int(parts[1]) / 1000)
    return best


def check_agreement(lines: list[str]) -> None:
    ours = run_chatlane(lines)
    theirs = run_openai(lines).choices[0].message
    assert ours.text == (theirs.content or "")
    assert [(c.id, c.name, c.raw_arguments) for c in ours.tool_calls] == [
        (c.id, c.function.name, c.function.arguments) for c in theirs.tool_calls or []
    ]
    assert run_chatlane_bytes(sse_bytes(lines)) == ours


def sse_bytes(lines: list[str]) -> bytes:
    return b"".join(f"data: {line}\n\n".encode() for line in lines) + b"data: [DONE]\n\n"


def main() -> None:
    lines = recorded_stream()
    check_agreement(lines)
    stream = sse_bytes(lines)
    rows: list[tuple[str, float]] = [
        (
            "chatlane: json.loads + StreamAssembler.feed -> events",
            best_of(run_chatlane_events, lines),
        ),
        ("chatlane: ... + accumulate into a ChatResponse", best_of(run_chatlane, lines)),
        ("chatlane: raw bytes, SSEDecoder + the above", best_of(run_chatlane_bytes, stream)),
    ]
    try:
        rows.append(("openai-python ChatCompletionStreamState", best_of(run_openai, lines)))
    except ImportError:
        rows.append(("openai-python (not installed)", float("nan")))
    try:
        rows.append(("aleph-alpha-client process_chat_stream", best_of(run_aleph, lines)))
    except ImportError:
        rows.append(("aleph-alpha-client (not installed)", float("nan")))
    base = rows[0][1]
    print(f"{CHUNKS} chunks of interleaved text and tool calls, best of {RUNS} runs")
    print(f"{'contender':58} {'µs/chunk':>9} {'vs chatlane':>12}")
    for name, seconds in rows:
        per_chunk = seconds / CHUNKS * 1e6
        print(f"{name:58} {per_chunk:9.2f} {seconds / base:11.2f}x")
    target = "ok" if base / CHUNKS * 1e6 <= 15 else "OVER"
    print(f"target: at most 15 µs per chunk ({target})")
    print()
    cost = import_cost_ms()
    print(f"{'import chatlane (python -X importtime, cumulative)':58} {cost:8.1f} ms")
    print(f"target: at most 50 ms ({'ok' if cost <= 50 else 'OVER'})")


if __name__ == "__main__":
    main()
