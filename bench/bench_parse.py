"""Parsing raw Llama 3.x output: streaming cost, and pharia-skill's ``from_raw`` side by side.

1. Linear time: a 20,000-character output fed token by token (4 characters a token) through
   `ToolCallStreamParser`, against re-parsing the whole text so far on every token (what a
   parser without incremental state must do to stream). The re-parse column is measured on
   200 evenly spaced prefixes and scaled to every token, because running it in full takes
   minutes. The last columns compare the cost of the last 1,000 feeds with the first 1,000:
   about 1 for a parser whose cost per token does not grow with the text before it. The
   floor column is the least any streaming parser does per piece (a regex search for a
   call's first character and one text event), measured in the same rounds.
2. Whole outputs: `parse_output` against pharia-skill 0.20.0's
   `AssistantMessage.from_raw_response`, with whether each read the output right.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable
from typing import Any

from chatlane.events import TextDelta
from chatlane.formats.llama3.parser import ToolCallStreamParser, parse_output
from chatlane.tools import Tool, brave_search, code_interpreter

WRITE = Tool.from_schema(
    "write_file",
    {"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}}},
)
WEATHER = Tool.from_schema(
    "get_weather", {"type": "object", "properties": {"city": {"type": "string"}}}
)
TOOLS = (WRITE, WEATHER, brave_search, code_interpreter)


def _outputs(size: int) -> dict[str, str]:
    prose_unit = "Paris is the capital of France; {x} and [1] are not calls, nor is <b>. "
    prose = (prose_unit * (size // len(prose_unit) + 1))[:size]
    filler = 'lorem ipsum \\"quoted\\" {braces} [brackets] ' * (size // 40)
    head = '<|python_tag|>{"name": "write_file", "parameters": {"path": "a.txt", "content": "'
    call = head + filler[: size - len(head) - 4] + '"}}'
    code_unit = "for i in range(10):\n    print({'i': i, 'sq': [i * i]})\n"
    code = "<|python_tag|>" + (code_unit * (size // len(code_unit) + 1))[: size - 14]
    code = code[: code.rindex("\n") + 1]
    spaces_unit = '<function=get_weather>{"city": "Oslo"}</function>' + " " * 400 + "ok\n" * 2
    spaces = (spaces_unit * (size // len(spaces_unit) + 1))[:size]
    return {"prose": prose, "JSON call": call, "code": code, "whitespace": spaces}


def _tokens(text: str, width: int = 4) -> list[str]:
    return [text[i : i + width] for i in range(0, len(text), width)]


def _best(fn: Callable[[], Any], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _stream(tokens: list[str]) -> None:
    parser = ToolCallStreamParser(TOOLS)
    for token in tokens:
        parser.feed(token)
    parser.finish()


_CALL_START = re.compile(r"[<{\[`]")


def _floor(tokens: list[str]) -> None:
    """The least a streaming parser can do for prose: look for a character that may start
    a call in each piece and hand the piece on as a text event."""
    search = _CALL_START.search
    for token in tokens:
        search(token)
        [TextDelta(token)]


def _late_over_early(tokens: list[str], block: int = 1000, repeat: int = 7) -> float:
    """The cost of the last ``block`` feeds over the first ``block`` ones, in one run:
    about 1 when a feed costs the same however much text came before it."""
    early = late = float("inf")
    for _ in range(repeat):
        parser = ToolCallStreamParser(TOOLS)
        t0 = time.perf_counter()
        for token in tokens[:block]:
            parser.feed(token)
        t1 = time.perf_counter()
        for token in tokens[block:-block]:
            parser.feed(token)
        t2 = time.perf_counter()
        for token in tokens[-block:]:
            parser.feed(token)
        t3 = time.perf_counter()
        early, late = min(early, t1 - t0), min(late, t3 - t2)
    return late / early


def _reparse_late_over_early(tokens: list[str], block: int = 1000, samples: int = 20) -> float:
    """The same ratio for re-parsing the whole text so far on each token (sampled)."""
    step = block // samples
    prefix = [0]
    for token in tokens:
        prefix.append(prefix[-1] + len(token))
    text = "".join(tokens)
    early_ends = [prefix[i + 1] for i in range(0, block, step)]
    late_ends = [prefix[i + 1] for i in range(len(tokens) - block, len(tokens), step)]

    def run(ends: list[int]) -> float:
        return _best(lambda: [parse_output(text[:end], tools=TOOLS) for end in ends])

    return run(late_ends) / run(early_ends)


def _reparse_estimate(tokens: list[str], samples: int = 200) -> float:
    prefixes: list[str] = []
    text = ""
    step = max(1, len(tokens) // samples)
    for i, token in enumerate(tokens):
        text += token
        if i % step == 0:
            prefixes.append(text)
    start = time.perf_counter()
    for prefix in prefixes:
        parse_output(prefix, tools=TOOLS)
    return (time.perf_counter() - start) * len(tokens) / len(prefixes)


def linear_table() -> None:
    print("Streaming a 20,000-character output, 4 characters a token (5,000 feeds)")
    header = (
        f"{'output':<10} {'stream':>9} {'floor':>7} {'/floor':>7} {'re-parse each token':>20}"
        f" {'ratio':>7}   {'last/first 1000 feeds: stream':>29} {'re-parse':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, text in _outputs(20_000).items():
        tokens = _tokens(text)
        stream = floor = float("inf")
        for _ in range(7):  # alternating rounds: load on the shared machine hits both alike
            stream = min(stream, _best(lambda tokens=tokens: _stream(tokens), 1))  # type: ignore[misc]
            floor = min(floor, _best(lambda tokens=tokens: _floor(tokens), 1))  # type: ignore[misc]
        reparse = _reparse_estimate(tokens)
        print(
            f"{name:<10} {stream * 1e3:>7.1f}ms {floor * 1e3:>5.1f}ms {stream / floor:>6.1f}x"
            f" {reparse * 1e3:>17.0f}ms~ {reparse / stream:>6.0f}x"
            f"   {_late_over_early(tokens):>28.2f}x {_reparse_late_over_early(tokens):>8.1f}x"
        )
    print("(floor: a regex search for a call's first character and a TextDelta per piece.")
    print(" ~ estimated from 200 prefixes. Linear: a late feed costs what an early one does, 1x;")
    print(" re-parsing pays for all the text before it. 2 shared cores: noisy.)")


def _pharia() -> tuple[Callable[[str], Any], list[Any]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from pharia_skill.llama3 import BraveSearch, CodeInterpreter
        from pharia_skill.llama3 import Tool as PhariaTool
        from pharia_skill.llama3.message import AssistantMessage

    class GetWeather(PhariaTool):
        """Current weather in a city."""

        city: str

    tools: list[Any] = [GetWeather, BraveSearch, CodeInterpreter]
    return (lambda raw: AssistantMessage.from_raw_response(raw, tools)), tools


CASES: list[tuple[str, str, list[tuple[str, dict[str, Any]]], str]] = [
    (
        "plain text",
        "The capital of France is Paris.<|eot_id|>",
        [],
        "The capital of France is Paris.",
    ),
    (
        "JSON call",
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}<|eom_id|>',
        [("get_weather", {"city": "Paris"})],
        "",
    ),
    (
        "two calls",
        '{"name": "get_weather", "parameters": {"city": "Paris"}}; '
        '{"name": "get_weather", "parameters": {"city": "Rome"}}<|eom_id|>',
        [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})],
        "",
    ),
    (
        "prose+call",
        'Let me check.\n{"name": "get_weather", "parameters": {"city": "Oslo"}}<|eom_id|>',
        [("get_weather", {"city": "Oslo"})],
        "Let me check.",
    ),
    (
        "escaped query",
        '<|python_tag|>brave_search.call(query="say \\"hi\\"")<|eom_id|>',
        [("brave_search", {"query": 'say "hi"'})],
        "",
    ),
    (
        "code",
        "<|python_tag|>import math\nprint(math.pi)<|eom_id|>",
        [("code_interpreter", {"code": "import math\nprint(math.pi)"})],
        "",
    ),
    (
        "pythonic",
        '[get_weather(city="San Francisco, CA")]<|eot_id|>',
        [("get_weather", {"city": "San Francisco, CA"})],
        "",
    ),
    (
        "bad JSON call",
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "P",}}<|eom_id|>',
        [],
        '{"name": "get_weather", "parameters": {"city": "P",}}',
    ),
    ("JSON list", "<|python_tag|>[1, 2]<|eom_id|>", [("code_interpreter", {"code": "[1, 2]"})], ""),
]


def _pharia_reading(message: Any) -> tuple[list[tuple[str, dict[str, Any]]], str]:
    calls = []
    for call in message.tool_calls or []:
        params = call.parameters
        if not isinstance(params, dict):
            params = params.model_dump()
            if call.name == "code_interpreter":
                params = {"code": params.pop("src")}
        calls.append((call.name, params))
    return calls, message.content or ""


def _per_call(fn: Callable[[], Any], number: int = 2000) -> float:
    return _best(lambda: [fn() for _ in range(number)]) / number


def _side_by_side(
    ours: Callable[[], Any], theirs: Callable[[], Any], rounds: int = 7, number: int = 1000
) -> tuple[float, float]:
    """The best time per call of each, measured in alternating rounds, so that load on the
    shared machine falls on both alike."""
    best_ours = best_theirs = float("inf")
    for _ in range(rounds):
        best_ours = min(best_ours, _per_call(ours, number))
        best_theirs = min(best_theirs, _per_call(theirs, number))
    return best_ours, best_theirs


def _ratio(theirs: float, ours: float) -> str:
    return "-" if theirs != theirs else f"{theirs / ours:.2f}x"  # NaN: pharia raised


def pharia_table() -> None:
    pharia, _ = _pharia()
    print("Whole outputs: chatlane parse_output vs pharia-skill 0.20.0 from_raw_response")
    header = (
        f"{'output':<14} {'chatlane':>9} {'pharia':>9} {'ratio':>7}  {'chatlane':<9} {'pharia'}"
    )
    print(header)
    print("-" * (len(header) + 10))
    for name, raw, want_calls, want_content in CASES:
        out = parse_output(raw, tools=TOOLS)
        ours_ok = [(c.name, dict(c.arguments)) for c in out.tool_calls] == want_calls and (
            out.content == want_content
        )

        def parse(raw: str = raw) -> Any:
            return parse_output(raw, tools=TOOLS)

        try:
            theirs_ok = _pharia_reading(pharia(raw)) == (want_calls, want_content)
            ours, theirs = _side_by_side(parse, lambda raw=raw: pharia(raw))  # type: ignore[misc]
            verdict, timing = ("right" if theirs_ok else "wrong"), f"{theirs * 1e6:>7.1f}us"
        except Exception as e:
            verdict, timing, theirs = f"raises {type(e).__name__}", f"{'-':>9}", float("nan")
            ours = _per_call(parse)
        print(
            f"{name:<14} {ours * 1e6:>7.1f}us {timing} {_ratio(theirs, ours):>7}  "
            f"{'right' if ours_ok else 'WRONG':<9} {verdict}"
        )
    print("(ratio = pharia time / chatlane time: above 1 means chatlane is faster)")


def main() -> None:
    linear_table()
    print()
    pharia_table()


if __name__ == "__main__":
    main()
