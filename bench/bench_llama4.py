"""Rendering a Llama 4 prompt: chatlane against llama-models' Llama 4 ChatFormat and the
official chat template, in one run.

The conversation: a system prompt, 5 tools, 20 user turns, 5 of them answered with tool calls
(two of them parallel) and their results. Each row is the best of several timed batches.

- render + tokenize: chatlane's meta profile against llama-models' ``llama4``
  ``ChatFormat.encode_dialog_prompt`` on the same dialog (the system message is the text
  llama-stack writes, which chatlane writes too; the bench checks the tokens are the same).
  Cold: each iteration builds a new `Llama4` (its caches empty; the loaded tokenizer stays).
  Warm: the same conversation again on the same `Llama4`. One more turn: the conversation
  grown by one user turn on the `Llama4` that rendered it.
- render only (text): chatlane's hf profile against a precompiled jinja2 rendering of the
  official template (tests/conformance/data), as transformers renders it.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatlane.formats.llama4 import Llama4
from chatlane.formats.llama4.prompts import hf_tool_definition, meta_system_text
from chatlane.formats.llama4.tokenizer import load_tokenizer
from chatlane.messages import Message, Role, ToolCall, assistant, system, tool_result, user
from chatlane.request import ChatRequest
from chatlane.tools import Tool

TEMPLATE = (
    Path(__file__).parent.parent
    / "tests"
    / "conformance"
    / "data"
    / "meta-llama-Llama-4-Scout-17B-16E-Instruct.jinja"
)


def _tools() -> tuple[Tool, ...]:
    tools = []
    for i, (name, what) in enumerate(
        [
            ("get_weather", "The current weather in a city"),
            ("search_docs", "Search the documentation"),
            ("book_table", "Book a table at a restaurant"),
            ("convert_currency", "Convert an amount between currencies"),
            ("send_message", "Send a message to a contact"),
        ]
    ):
        tools.append(
            Tool.from_schema(
                name,
                {
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "description": f"What to look up ({i})"},
                        "limit": {"type": "integer", "description": "How many", "default": 3},
                        "exact": {"type": "boolean", "description": "Exact matches only"},
                    },
                    "required": ["query"],
                },
                what,
            )
        )
    return tuple(tools)


def _conversation(tools: tuple[Tool, ...]) -> list[Message]:
    messages: list[Message] = [system("You are a helpful assistant. Answer briefly.")]
    for turn in range(20):
        messages.append(
            user(f"Question {turn}: what can you tell me about topic number {turn}, in detail?")
        )
        if turn % 4 == 0:
            calls = [
                ToolCall(f"c{turn}_{k}", tools[(turn + k) % 5].name, {"query": f"topic {turn}"})
                for k in range(1 + (turn % 8 == 0))
            ]
            messages.append(assistant("", calls))
            for call in calls:
                messages.append(tool_result(call, json.dumps({"result": f"facts on {turn}"})))
        messages.append(
            assistant(f"Here is what I found on topic {turn}: it is well known and documented.")
        )
    messages.pop()  # it ends with the 20th user turn, for the model to answer
    return messages


def _compare(fns: dict[str, Callable[[], Any]], *, budget: float = 6.0) -> dict[str, float]:
    """Seconds per call of each function: the best batch mean, over rounds that run every
    function in turn (so that a busy machine slows them all alike)."""
    sizes = {}
    for name, fn in fns.items():
        fn()
        start = time.perf_counter()
        fn()
        once = max(time.perf_counter() - start, 1e-7)
        sizes[name] = max(1, int(budget / len(fns) / 8 / once))
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(8):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(sizes[name]):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / sizes[name])
    return best


def _stub(name: str) -> types.ModuleType:
    # llama-models' llama4 ChatFormat imports torch and torchvision for images; its text
    # path never uses them, so placeholders stand in where they are not installed.
    module = types.ModuleType(name)
    module.__path__ = []

    def placeholder(attr: str) -> type:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return type(attr, (), {})

    module.__getattr__ = placeholder  # type: ignore[method-assign]
    return module


def _chat_format() -> Any:
    missing = {t for t in ("torch", "torchvision") if importlib.util.find_spec(t) is None}
    names = ("torch", "torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    stubs = [name for name in names if name.split(".")[0] in missing]
    for name in stubs:
        sys.modules[name] = _stub(name)
    try:
        from llama_models.llama4.chat_format import ChatFormat
        from llama_models.llama4.tokenizer import Tokenizer
    finally:
        for name in stubs:
            del sys.modules[name]
    return ChatFormat(Tokenizer.get_instance())


def _meta_dialog(request: ChatRequest) -> list[Any]:
    from llama_models.datatypes import RawMessage, RawTextItem, StopReason, ToolPromptFormat
    from llama_models.datatypes import ToolCall as MetaToolCall
    from llama_models.llama3.tool_utils import ToolUtils

    first = request.messages[0]
    dialog = [
        RawMessage(
            role="system",
            content=meta_system_text(first.text, request.tools, request.tool_choice, "append"),
        )
    ]
    for m in request.messages[1:]:
        calls = [
            MetaToolCall(call_id=c.id, tool_name=c.name, arguments=dict(c.arguments))
            for c in m.tool_calls
        ]
        if len(calls) > 1:
            # (one list for the turn, built from Meta's writer of each call: see the oracle)
            listed = ", ".join(
                ToolUtils.encode_tool_call(c, ToolPromptFormat.python_list)[1:-1] for c in calls
            )
            dialog.append(
                RawMessage(
                    role="assistant",
                    content=[RawTextItem(text=m.text), RawTextItem(text=f"[{listed}]")],
                    stop_reason=StopReason.end_of_message,
                )
            )
            continue
        dialog.append(
            RawMessage(
                role="tool" if m.role is Role.TOOL else m.role.value,
                content=m.text,
                tool_calls=calls,
                stop_reason=StopReason.end_of_turn,
            )
        )
    return dialog


def _jinja_template() -> Any:
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = lambda x, indent=None, **kw: json.dumps(
        x, ensure_ascii=False, indent=indent
    )
    env.globals["strftime_now"] = lambda fmt: dt.datetime.now().strftime(fmt)
    return env.from_string(TEMPLATE.read_text(encoding="utf-8"))


def _hf_messages(request: ChatRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in request.messages:
        if m.role is Role.TOOL:
            out.append({"role": "tool", "content": m.text})
            continue
        item: dict[str, Any] = {"role": m.role.value, "content": m.text}
        if m.tool_calls:
            item["tool_calls"] = [
                {"type": "function", "function": {"name": c.name, "arguments": dict(c.arguments)}}
                for c in m.tool_calls
            ]
        out.append(item)
    return out


def main() -> None:
    tokenizer = load_tokenizer()
    tools = _tools()
    messages = _conversation(tools)
    request = ChatRequest(tuple(messages), tools=tools)
    warm = Llama4(tokenizer=tokenizer)
    prompt = warm.render(request)

    from llama_models.datatypes import ToolPromptFormat

    chat_format = _chat_format()
    dialog = _meta_dialog(request)
    pythonic = ToolPromptFormat.python_list

    def meta() -> Any:
        return chat_format.encode_dialog_prompt(dialog, tool_prompt_format=pythonic)

    assert meta().tokens == list(prompt.tokens)
    grown = ChatRequest((*messages, user("One more question?")), tools=tools)
    assert Llama4(tokenizer=tokenizer).render(grown) == Llama4(tokenizer=tokenizer).render(grown)

    def one_more_turn() -> None:
        fmt = growing
        fmt.render(grown)
        fmt.render(request)  # back, so that the next call grows it again

    growing = Llama4(tokenizer=tokenizer)
    growing.render(request)

    t = _compare(
        {
            "meta": meta,
            "cold": lambda: Llama4(tokenizer=tokenizer).render(request),
            "warm": lambda: warm.render(request),
            "grown": one_more_turn,
        },
        budget=8.0,
    )
    rows: list[tuple[str, str, float, float]] = [
        ("render + tokenize", "llama-models llama4 ChatFormat", t["meta"], t["meta"]),
        ("render + tokenize", "chatlane llama4 meta, cold", t["cold"], t["meta"]),
        ("render + tokenize", "chatlane llama4 meta, warm", t["warm"], t["meta"]),
        ("two renders", "chatlane: +1 turn, then back", t["grown"], t["meta"] * 2),
    ]

    template = _jinja_template()
    hf_kwargs = {
        "messages": _hf_messages(request),
        "tools": [hf_tool_definition(tool) for tool in tools],
        "bos_token": "<|begin_of_text|>",
        "add_generation_prompt": True,
    }
    hf = Llama4("hf", tokenizer=tokenizer)
    assert template.render(**hf_kwargs) == hf.render(request).text
    h = _compare(
        {
            "jinja": lambda: template.render(**hf_kwargs),
            "cold": lambda: Llama4("hf", tokenizer=tokenizer).render(request).text,
        },
        budget=4.0,
    )
    rows.append(
        ("render (hf profile)", "official template, jinja2 precompiled", h["jinja"], h["jinja"])
    )
    rows.append(
        ("render (hf profile)", "chatlane llama4 hf, cold (+tokens)", h["cold"], h["jinja"])
    )

    print(f"Llama 4: 20 turns, 5 tools, 5 turns with tool calls; {len(prompt.tokens)} tokens")
    print(f"{'task':<20} {'implementation':<40} {'time':>10} {'speed-up':>9}")
    for task, name, seconds, reference in rows:
        print(f"{task:<20} {name:<40} {seconds * 1e6:>8.1f}µs {reference / seconds:>8.1f}x")


if __name__ == "__main__":
    main()
