"""The command line and its batch runs: startup time against the peers' CLIs, and what
resumability and the log cost a batch run against a bare ``asyncio.gather``.

Run with ``python -m bench cli``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chatlane.backends.fake import Fake
from chatlane.batch import read_batch_input, run_batch
from chatlane.messages import user
from chatlane.request import ChatRequest
from chatlane.store import Store


def _startup(command: list[str], runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _fake(n: int) -> Fake:
    return Fake([lambda r: "an answer of a few words"] * n, usage=True)


def _gather(n: int, concurrency: int) -> float:
    backend = _fake(n)
    requests = [ChatRequest((user(f"question {i}"),)) for i in range(n)]

    async def go() -> None:
        limit = asyncio.Semaphore(concurrency)

        async def one(request: ChatRequest) -> None:
            async with limit:
                await backend.achat(request)

        await asyncio.gather(*(one(r) for r in requests))

    started = time.perf_counter()
    asyncio.run(go())
    return time.perf_counter() - started


def _batch(n: int, concurrency: int, *, log: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "in.jsonl"
        inp.write_text(
            "".join(
                json.dumps(
                    {"id": f"q{i}", "messages": [{"role": "user", "content": f"question {i}"}]}
                )
                + "\n"
                for i in range(n)
            )
        )
        store = Store(Path(tmp) / "log.db") if log else None
        started = time.perf_counter()
        run_batch(
            _fake(n),
            read_batch_input(inp),
            Path(tmp) / "out.jsonl",
            concurrency=concurrency,
            store=store,
        )
        elapsed = time.perf_counter() - started
        if store is not None:
            store.close()
        return elapsed


def main() -> None:
    python = sys.executable
    rows: list[tuple[str, str, str]] = []
    ours = _startup([python, "-m", "chatlane", "--help"])
    rows.append(("chatlane --help", f"{ours * 1000:.0f} ms", "1.00"))
    peers = [("python -m openai --help", [python, "-m", "openai", "--help"])]
    pharia = shutil.which("pharia-skill", path=str(Path(python).parent))
    if pharia:
        peers.append(("pharia-skill --help", [pharia, "--help"]))
    for name, command in peers:
        t = _startup(command)
        rows.append((name, f"{t * 1000:.0f} ms", f"{t / ours:.2f}"))

    n, concurrency = 1000, 16
    base = _gather(n, concurrency)
    rows.append((f"asyncio.gather, {n} Fake requests", f"{n / base:.0f} req/s", "1.00"))
    plain = _batch(n, concurrency, log=False)
    rows.append(
        ("chatlane batch (resumable output)", f"{n / plain:.0f} req/s", f"{plain / base:.2f}")
    )
    logged = _batch(n, concurrency, log=True)
    rows.append(("chatlane batch + SQLite log", f"{n / logged:.0f} req/s", f"{logged / base:.2f}"))

    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'measured':>12}  {'time ratio':>10}")
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:>12}  {ratio:>10}")


if __name__ == "__main__":
    main()
