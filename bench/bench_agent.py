"""The agent loop's own cost, and the price of running model code out of process.

1. Loop overhead: a four-step run (two parallel tool calls per step) on the `Fake` backend,
   through `chatlane.run`, against the shortest hand-written loop over the same backend
   (sequential calls, no validation of the model's arguments beyond the function's own, no events).
2. code_interpreter: pharia-skill's `CodeInterpreter.run` executes the model's code with
   ``exec`` in the caller's process; chatlane starts a separate, limited process each time.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from chatlane._sandbox import Sandbox, isolation_available
from chatlane.agent import arun, run
from chatlane.backends.fake import Fake
from chatlane.messages import Message, ToolCall, tool_result, user
from chatlane.tools import tool


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _script() -> list[Any]:
    steps: list[Any] = [
        Fake.calls(
            ToolCall(f"a{i}", "add", {"a": i, "b": 1}), ToolCall(f"b{i}", "add", {"a": i, "b": 2})
        )
        for i in range(3)
    ]
    return [*steps, "done"]


def _by_hand() -> str:
    fake = Fake(_script(), usage=False)
    messages: list[Message] = [user("go")]
    functions = {"add": add}
    while True:
        response = fake.chat(messages, tools=[add])
        messages.append(response.message)
        if not response.message.tool_calls:
            return response.text
        for call in response.message.tool_calls:
            messages.append(tool_result(call, functions[call.name](**call.arguments)))


def _chatlane() -> str:
    return run(Fake(_script(), usage=False), "go", tools=[add]).text


def _chatlane_async() -> str:
    return asyncio.run(arun(Fake(_script(), usage=False), "go", tools=[add])).text


def _time(function: Callable[[], Any], repeat: int) -> float:
    function()  # warm up (pydantic schemas, imports)
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def _pharia_exec(code: str) -> Callable[[], Any]:
    from pharia_skill.llama3.tool import CodeInterpreter

    return lambda: CodeInterpreter(src=code).run()


def main() -> None:
    rows: list[tuple[str, str, float, float]] = []
    base = _time(_by_hand, 200)
    rows.append(("4-step run, 6 tool calls", "hand-written loop", base, base))
    rows.append(("", "chatlane.run", _time(_chatlane, 200), base))
    rows.append(("", "chatlane.arun", _time(_chatlane_async, 100), base))

    code = "result = sum(i * i for i in range(1000))"
    inline = _time(_pharia_exec(code), 200)
    rows.append(("run 1 code snippet", "pharia-skill exec (in process)", inline, inline))
    rows.append(
        (
            "",
            "chatlane Sandbox (limits-only)",
            _time(lambda: Sandbox(isolation="limits-only").run(code), 10),
            inline,
        )
    )
    if isolation_available():
        rows.append(
            (
                "",
                "chatlane Sandbox (namespaces)",
                _time(lambda: Sandbox().run(code), 10),
                inline,
            )
        )
    print(f"{'case':28} {'implementation':32} {'median':>10} {'ratio':>9}")
    for case, name, seconds, reference in rows:
        print(f"{case:28} {name:32} {seconds * 1000:8.3f}ms {seconds / reference:8.1f}x")
    print(
        "(the sandbox pays a new interpreter per run: that is the price of never running "
        "model code in the caller's process)"
    )


if __name__ == "__main__":
    main()
