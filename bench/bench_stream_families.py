"""Streaming cost per delta for the Qwen 3 and gpt-oss (harmony) parsers, at 1k, 10k and
100k characters of output.

Each output is fed 4 characters a delta (about a token). The table gives the mean cost of a
delta in microseconds at each length and the ratio of the 100k cost to the 1k cost: about 1
for a parser whose cost per delta does not grow with the text before it. The peer column
re-parses the whole text so far on every delta (what a parser without incremental state must
do to stream), measured on 50 evenly spaced prefixes and scaled; for harmony the peer is
openai-harmony's own `StreamableParser`, fed the same output as tokens (its cost given per
4-character delta). The machine's load moves the absolute numbers between runs; the
"last/first" column compares the last 1,000 deltas of a 100k run with its first 1,000, in
the same run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SIZES = (1_000, 10_000, 100_000)
WIDTH = 4


def _deltas(text: str) -> list[str]:
    return [text[i : i + WIDTH] for i in range(0, len(text), WIDTH)]


def _per_delta(feed_all: Callable[[list[str]], None], deltas: list[str], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        feed_all(deltas)
        best = min(best, time.perf_counter() - start)
    return best / len(deltas) * 1e6


def _late_over_early(make: Callable[[], Any], deltas: list[str], block: int = 1000) -> float:
    """The cost of the last ``block`` deltas of one run (before the final one, which reads a
    call whole) over its first ``block``, best of 5:
    about 1 when a delta costs the same however much text came before it (and, being one
    run, unmoved by the load of the machine between runs)."""
    early = late = float("inf")
    for _ in range(5):
        parser = make()
        t0 = time.perf_counter()
        for d in deltas[:block]:
            parser.feed(d)
        t1 = time.perf_counter()
        for d in deltas[block : -block - 1]:
            parser.feed(d)
        t2 = time.perf_counter()
        for d in deltas[-block - 1 : -1]:
            parser.feed(d)
        t3 = time.perf_counter()
        parser.feed(deltas[-1])  # the end, where a call is read once as a whole
        early, late = min(early, t1 - t0), min(late, t3 - t2)
    return late / early


def _reparse_per_delta(parse: Callable[[str], Any], text: str, samples: int = 50) -> float:
    n = len(_deltas(text))
    step = max(1, n // samples)
    cuts = range(step, n + 1, step)
    start = time.perf_counter()
    for k in cuts:
        parse(text[: k * WIDTH])
    return (time.perf_counter() - start) / len(cuts) * 1e6


def _qwen_outputs(size: int) -> dict[str, str]:
    from chatlane.formats.qwen3.parser import CALL_CLOSE, CALL_OPEN

    prose_unit = "Paris is the capital of France; a < b and <tool or {x} are not calls. "
    prose = (prose_unit * (size // len(prose_unit) + 1))[:size]
    think = "<think>\n" + prose[: size - 30] + "\n</think>\n\nOk."
    head = CALL_OPEN + '\n{"name": "write_file", "arguments": {"content": "'
    filler = ('lorem \\"quoted\\" </tool_ call> ' * (size // 30 + 1))[: size - len(head) - 20]
    call = head + filler + '"}}\n' + CALL_CLOSE
    return {"prose": prose, "reasoning": think, "one long call": call}


def _qwen_rows() -> list[tuple[str, list[float], float, list[float]]]:
    from chatlane.formats.qwen3.parser import QwenStreamParser, parse_output

    def feed_all(deltas: list[str]) -> None:
        parser = QwenStreamParser(None)
        for d in deltas:
            parser.feed(d)
        parser.finish()

    rows = []
    for shape in ("prose", "reasoning", "one long call"):
        ours, peer = [], []
        for size in SIZES:
            text = _qwen_outputs(size)[shape]
            ours.append(_per_delta(feed_all, _deltas(text)))
            peer.append(_reparse_per_delta(lambda t: parse_output(t), text))
        flat = _late_over_early(
            lambda: QwenStreamParser(None), _deltas(_qwen_outputs(SIZES[-1])[shape])
        )
        rows.append((f"qwen3 {shape}", ours, flat, peer))
    return rows


def _harmony_rows() -> list[tuple[str, list[float], float, list[float]]]:
    try:
        from chatlane.formats.harmony import parser as hp
    except ImportError:
        return []
    peer_parser = _harmony_peer()
    rows = []
    for shape, make in hp.bench_outputs().items():
        ours, peer = [], []
        for size in SIZES:
            text = make(size)

            def feed_all(deltas: list[str]) -> None:
                parser = hp.HarmonyStreamParser(None)
                for d in deltas:
                    parser.feed(d)
                parser.finish()

            ours.append(_per_delta(feed_all, _deltas(text)))
            peer.append(peer_parser(text) if peer_parser else float("nan"))
        flat = _late_over_early(lambda: hp.HarmonyStreamParser(None), _deltas(make(SIZES[-1])))
        rows.append((f"gpt-oss {shape}", ours, flat, peer))
    return rows


def _harmony_peer() -> Callable[[str], float] | None:
    """openai-harmony's StreamableParser, µs per 4-character delta's worth of tokens."""
    try:
        from openai_harmony import (
            HarmonyEncodingName,
            Role,
            StreamableParser,
            load_harmony_encoding,
        )

        from chatlane.formats.harmony.tokenizer import load_tokenizer
    except ImportError:
        return None
    # Where the test suite keeps o200k_base (tests/support/refs.py), when no other is named.
    kept = Path.home() / ".cache" / "chatlane" / "refs" / "o200k" / "o200k_base.tiktoken"
    if kept.is_file():
        os.environ.setdefault("CHATLANE_O200K_BASE", str(kept))
        os.environ.setdefault("TIKTOKEN_ENCODINGS_BASE", str(kept.parent))
    try:
        encoding = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
        tokenizer = load_tokenizer()
    except Exception:  # the o200k_base file is not at hand
        return None

    def run(text: str) -> float:
        tokens = tokenizer.encode_with_special(text)
        best = float("inf")
        for _ in range(3):
            parser = StreamableParser(encoding, Role.ASSISTANT)
            start = time.perf_counter()
            for t in tokens:
                parser.process(t)
            best = min(best, time.perf_counter() - start)
        return best / len(_deltas(text)) * 1e6

    return run


def main() -> None:
    rows = _qwen_rows() + _harmony_rows()
    head = " | ".join(f"{s // 1000}k µs/delta" for s in SIZES)
    print(f"| output | {head} | last/first 1k deltas at 100k | peer at 1k / 10k / 100k µs/delta |")
    print("|---|" + "---:|" * (len(SIZES) + 2))
    for name, ours, flat, peer in rows:
        cells = " | ".join(f"{v:.2f}" for v in ours)
        peers = " / ".join(f"{v:.1f}" for v in peer)
        print(f"| {name} | {cells} | {flat:.2f} | {peers} |")


if __name__ == "__main__":
    main()
