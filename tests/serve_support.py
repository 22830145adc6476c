"""Helpers for the gateway tests: `chatlane serve` running in-process on 127.0.0.1 (uvicorn in a
thread of its own, on a free port), and a raw completion server scripted with model text."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from chatlane.serve import Gateway, ServedModel, ServeOptions
from support import Pause, Recorded, Reply, free_port


@contextmanager
def running(gateway: Gateway) -> Iterator[str]:
    """The gateway served on 127.0.0.1 until the block ends: its ``/v1`` URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        gateway.app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the gateway did not start")
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start within 20 s")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def serving(
    backend: Any, name: str = "llama", options: ServeOptions | None = None, label: str = "test"
) -> Iterator[str]:
    """One backend behind a gateway: its ``/v1`` URL."""
    with running(Gateway([ServedModel(name, backend, label)], options)) as url:
        yield url


def completion_chunks(
    pieces: Sequence[str], finish: str = "stop", *, usage: bool = True
) -> list[Any]:
    """What an OpenAI-style ``/v1/completions`` stream sends for text arriving in ``pieces``."""
    head = {"id": "cmpl-raw", "object": "text_completion", "created": 1730000000, "model": "raw"}
    events: list[Any] = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        choice = {
            "index": 0,
            "text": piece,
            "logprobs": None,
            "finish_reason": finish if last else None,
        }
        events.append({**head, "choices": [choice]})
    if usage:
        events.append(
            {
                **head,
                "choices": [],
                "usage": {
                    "prompt_tokens": 11,
                    "completion_tokens": len(pieces),
                    "total_tokens": 11 + len(pieces),
                },
            }
        )
    return events


def completion_reply(pieces: Sequence[str], finish: str = "stop", pause: float = 0.0) -> Any:
    """A responder answering a streamed request as a stream and a whole one in one body."""

    def reply(request: Recorded) -> Reply:
        body = request.json()
        if body.get("stream"):
            return Reply.sse(completion_chunks(pieces, finish), pause=pause)
        whole = {
            "id": "cmpl-raw",
            "object": "text_completion",
            "created": 1730000000,
            "model": "raw",
            "choices": [
                {"index": 0, "text": "".join(pieces), "logprobs": None, "finish_reason": finish}
            ],
            "usage": {
                "prompt_tokens": 11,
                "completion_tokens": len(pieces),
                "total_tokens": 11 + len(pieces),
            },
        }
        return Reply.json(whole)

    return reply


def stalled_reply(first: str, seconds: float = 30.0) -> Reply:
    """A stream that sends one piece of text, then waits (watching for the client to leave)."""
    return Reply.sse(
        [
            completion_chunks([first], finish="stop", usage=False)[0]
            | {"choices": [{"index": 0, "text": first, "finish_reason": None}]},
            Pause(seconds),
        ]
    )


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
