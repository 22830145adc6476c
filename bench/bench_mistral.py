"""The Mistral formats: streaming cost per delta, and rendering beside mistral-common.

1. Streaming: outputs of 1,000, 10,000 and 100,000 characters fed 4 characters a delta
   through `MistralStreamParser`; the cost of one of the last 100 deltas at each length, and
   the cost of the last 1,000 deltas over the first 1,000 of the longest (about 1 when a delta costs the same
   however much output came before it).
2. Rendering a 12-turn conversation with tools and calls: chatlane's `render` (text and token
   ids) against mistral-common 1.12.0's ``encode_chat_completion`` (the reference), with
   whether the tokens agree.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from chatlane import formats
from chatlane.formats.mistral.parser import MistralStreamParser
from chatlane.messages import Message, Role, ToolCall
from chatlane.request import ChatRequest
from chatlane.tools import Tool


def _outputs(size: int) -> dict[str, str]:
    prose_unit = "Paris is the capital of France; [1] and <b> and {x} are not calls. "
    prose = (prose_unit * (size // len(prose_unit) + 1))[:size]
    think = "[THINK]" + prose[: size - 30] + "[/THINK]The answer."
    filler = 'lorem \\"quoted\\" {braces} [brackets] '
    head = '[TOOL_CALLS]write_file[ARGS]{"path": "a.txt", "content": "'
    v11 = head + (filler * (size // len(filler) + 1))[: size - len(head) - 2] + '"}'
    item = '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo"}, "id": "abcDEF123"}]'
    v3 = item * (size // len(item))
    return {
        "prose": prose,
        "reasoning": think,
        "v11 open": v11[:-2],
        "v11 call": v11,
        "v3 calls": v3,
    }


def _deltas(text: str, width: int = 4) -> list[str]:
    return [text[i : i + width] for i in range(0, len(text), width)]


def _best(fn: Callable[[], Any], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _stream(deltas: list[str]) -> None:
    parser = MistralStreamParser()
    for delta in deltas:
        parser.feed(delta)
    parser.finish()


def _last_deltas(deltas: list[str], count: int) -> float:
    parser = MistralStreamParser()
    for delta in deltas[:-count]:
        parser.feed(delta)
    start = time.perf_counter()
    for delta in deltas[-count:]:
        parser.feed(delta)
    return (time.perf_counter() - start) / count


def _late_over_early(deltas: list[str], block: int = 1000, repeat: int = 5) -> float:
    early = late = float("inf")
    for _ in range(repeat):
        parser = MistralStreamParser()
        t0 = time.perf_counter()
        for delta in deltas[:block]:
            parser.feed(delta)
        t1 = time.perf_counter()
        for delta in deltas[block:-block]:
            parser.feed(delta)
        t2 = time.perf_counter()
        for delta in deltas[-block:]:
            parser.feed(delta)
        t3 = time.perf_counter()
        early, late = min(early, t1 - t0), min(late, t3 - t2)
    return late / early


def streaming_table() -> None:
    print(
        "Streaming, 4 characters a delta: microseconds per delta at the end of outputs of each length"
    )
    header = (
        f"{'output':<10} {'1k':>8} {'10k':>8} {'100k':>8} {'100k/1k':>8} {'last/first 1000':>16}"
    )
    print(header)
    print("-" * len(header))
    sizes = (1_000, 10_000, 100_000)
    by_size = {size: _outputs(size) for size in sizes}
    for name in by_size[1_000]:
        deltas = {size: _deltas(by_size[size][name]) for size in sizes}
        best = dict.fromkeys(sizes, float("inf"))
        # The cost of the last 100 deltas of each output, the parser having read all the
        # rest; rounds interleave the lengths, so that load on the shared cores hits them
        # alike.
        for _ in range(7):
            for size in sizes:
                best[size] = min(best[size], _last_deltas(deltas[size], 100))
        per_delta = [best[size] for size in sizes]
        late = _late_over_early(deltas[100_000])
        print(
            f"{name:<10} {per_delta[0] * 1e6:>7.2f}µ {per_delta[1] * 1e6:>7.2f}µ "
            f"{per_delta[2] * 1e6:>7.2f}µ {per_delta[2] / per_delta[0]:>7.2f}x {late:>15.2f}x"
        )
    print("(flat: a delta costs the same at 100k characters as at 1k, 1x. v3 calls: 1,100 short")
    print(" calls. v11 call: one call as long as the output, whose last delta closes its JSON and")
    print(" reads it whole (once, in time linear in the call); v11 open: the same call before")
    print(" that delta. 2 shared cores: noisy.)")


WEATHER = Tool(
    "get_weather", "Weather", {"type": "object", "properties": {"city": {"type": "string"}}}
)


def _conversation() -> list[Message]:
    messages = [Message(Role.SYSTEM, "Be terse and exact.")]
    for i in range(4):
        call = ToolCall(f"abcDEF{i:03d}", "get_weather", {"city": f"City {i}"})
        messages += [
            Message(Role.USER, f"What is the weather in city {i}? " * 5),
            Message(Role.ASSISTANT, "", (call,)),
            Message(Role.TOOL, json.dumps({"temp": 20 + i, "sky": "clear"}), tool_call_id=call.id),
            Message(Role.ASSISTANT, f"It is {20 + i} degrees and clear in city {i}."),
        ]
    messages.append(Message(Role.USER, "Thanks, and tomorrow?"))
    return messages


def render_table() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mistral_common.protocol.instruct import messages as mm
        from mistral_common.protocol.instruct.request import ChatCompletionRequest
        from mistral_common.protocol.instruct.tool_calls import Function, FunctionCall
        from mistral_common.protocol.instruct.tool_calls import Tool as MTool
        from mistral_common.protocol.instruct.tool_calls import ToolCall as MToolCall
        from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    messages = _conversation()
    out: list[Any] = []
    for m in messages:
        if m.role is Role.SYSTEM:
            out.append(mm.SystemMessage(content=m.text))
        elif m.role is Role.USER:
            out.append(mm.UserMessage(content=m.text))
        elif m.role is Role.TOOL:
            out.append(mm.ToolMessage(content=m.text, tool_call_id=m.tool_call_id))
        else:
            calls = [
                MToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.raw_arguments))
                for c in m.tool_calls
            ]
            out.append(mm.AssistantMessage(content=m.text or None, tool_calls=calls or None))
    tools = [
        MTool(
            function=Function(
                name=WEATHER.name, description="Weather", parameters=dict(WEATHER.parameters)
            )
        )
    ]
    reference_request = ChatCompletionRequest(messages=out, tools=tools)
    request = ChatRequest(tuple(messages), tools=(WEATHER,))
    print("Rendering a 12-turn conversation with tool calls (tokens included)")
    header = (
        f"{'format':<18} {'chatlane':>10} {'mistral-common':>15} {'ratio':>7} {'same tokens':>12}"
    )
    print(header)
    print("-" * len(header))
    for name, reference in (
        ("mistral-v3", MistralTokenizer.v3()),
        ("mistral-v3-tekken", MistralTokenizer.v3(is_tekken=True)),
        ("mistral-v7", MistralTokenizer.v7()),
    ):
        fmt = formats.get(name)
        ours = _best(lambda f=fmt: f.render(request), 20)  # type: ignore[misc]
        theirs = _best(lambda r=reference: r.encode_chat_completion(reference_request), 20)  # type: ignore[misc]
        same = (
            list(fmt.render(request).tokens)
            == reference.encode_chat_completion(reference_request).tokens
        )
        print(
            f"{name:<18} {ours * 1e3:>8.2f}ms {theirs * 1e3:>13.2f}ms {theirs / ours:>6.1f}x {same!s:>12}"
        )
    print("(ratio: mistral-common's time over chatlane's; higher is faster for chatlane.)")


def main() -> None:
    streaming_table()
    print()
    render_table()


if __name__ == "__main__":
    main()
