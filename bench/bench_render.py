"""Rendering a Llama 3.1 prompt: chatlane against llama-models, the HF template and pharia-skill.

The conversation: a system prompt, 5 JSON tools, 20 user turns, 5 of them answered with a
tool call and its result. Each row is the best of several timed batches.

- render + tokenize: chatlane's meta profile against Meta's ``ChatFormat.encode_dialog_prompt``
  (given the same system and tool-definition texts), cold and warm (the same conversation
  again). Cold means every cache chatlane keeps is empty: each iteration builds a new
  `Llama3`, whose caches (rendered messages, those waiting to be filed, preambles, the last
  conversation and prompt) are all chatlane keeps between renders; the bench checks that
  they start empty. What
  stays is the loaded tokenizer: its BPE ranks and the ids of the format's fixed texts (role
  names, the fixed text of tool definitions), computed once when it loads, from no input;
- tiktoken core alone: tiktoken's Rust BPE (``CoreBPE.encode_ordinary``, no Python around
  it) on exactly the texts llama-models hands it for this conversation, and on the texts
  chatlane hands it: the floor under each, which no Python code on top can go below;
- one more turn: the conversation grown by one user turn, on the `Llama3` that rendered it,
  against rendering that new turn alone;
- render only (text): chatlane's hf profile against a precompiled jinja2 rendering of the
  official template, and pharia-skill's ``ChatRequest.render``.
"""

from __future__ import annotations

import json
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatlane.formats.llama3 import Llama3
from chatlane.formats.llama3.prompts import hf_tool_definition
from chatlane.formats.llama3.tokenizer import load_tokenizer
from chatlane.messages import Message, ToolCall, assistant, system, tool_result, user
from chatlane.request import ChatRequest
from chatlane.tools import Tool

TEMPLATE = (
    Path(__file__).parent.parent
    / "tests"
    / "conformance"
    / "data"
    / "meta-llama-Llama-3.1-8B-Instruct.jinja"
)


def _tools() -> tuple[Tool, ...]:
    tools = []
    for i in range(5):
        tools.append(
            Tool.from_schema(
                f"tool_{i}",
                {
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "description": f"What tool {i} looks up"},
                        "limit": {"type": "integer", "description": "How many results"},
                        "mode": {"type": "string", "enum": ["fast", "exact"]},
                    },
                    "required": ["query"],
                },
                f"Tool number {i}: looks things up in source {i}.",
            )
        )
    return tuple(tools)


def _conversation() -> list[Message]:
    messages: list[Message] = [system("You are a careful assistant. Answer briefly.")]
    for turn in range(20):
        messages.append(
            user(f"Question {turn}: what do you know about topic {turn} and how does it relate?")
        )
        if turn % 4 == 0:
            call = ToolCall(f"call_{turn}", f"tool_{turn % 5}", {"query": f"topic {turn}"})
            messages.append(assistant("", [call]))
            messages.append(
                tool_result(call, {"results": [f"fact {turn}.{k}" for k in range(3)], "n": 3})
            )
        messages.append(
            assistant(
                f"Topic {turn} is well documented; the main points are A, B and C. "
                "Would you like more detail on any of them?"
            )
        )
    messages.pop()  # the last question waits for its answer
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


def _meta_dialog(fmt: Llama3, request: ChatRequest) -> list[Any]:
    from llama_models.datatypes import RawMessage, StopReason
    from llama_models.datatypes import ToolCall as MetaToolCall

    first = request.messages[0]
    dialog = [
        RawMessage(role=role, content=text)
        for role, text in fmt.meta_system_messages(first.text, request.tools)
    ]
    for m in request.messages[1:]:
        dialog.append(
            RawMessage(
                role="tool" if m.role.value == "tool" else m.role.value,
                content=m.text,
                stop_reason=StopReason.end_of_turn,
                tool_calls=[
                    MetaToolCall(call_id=c.id, tool_name=c.name, arguments=dict(c.arguments))
                    for c in m.tool_calls
                ],
            )
        )
    return dialog


def _hf_messages(request: ChatRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in request.messages:
        if m.tool_calls:
            out.append(
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "type": "function",
                            "function": {"name": c.name, "arguments": dict(c.arguments)},
                        }
                        for c in m.tool_calls
                    ],
                }
            )
        elif m.role.value == "tool":
            # (a chat endpoint hands the template the result as the string it received)
            out.append({"role": "tool", "content": m.text})
        else:
            out.append({"role": m.role.value, "content": m.text})
    return out


def _jinja_template() -> Any:
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = lambda x, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys
    )
    return env.from_string(TEMPLATE.read_text(encoding="utf-8"))


def _pharia_request(request: ChatRequest) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pharia_skill.llama3 import (
            AssistantMessage,
            JsonSchema,
            ToolMessage,
            UserMessage,
        )
        from pharia_skill.llama3 import (
            ChatRequest as PhariaRequest,
        )
        from pharia_skill.llama3 import ToolCall as PhariaCall
        from pharia_skill.llama3.tool import Function

    messages: list[Any] = []
    for m in request.messages[1:]:
        if m.tool_calls:
            messages.append(
                AssistantMessage(
                    tool_calls=[PhariaCall(c.name, dict(c.arguments)) for c in m.tool_calls]
                )
            )
        elif m.role.value == "tool":
            messages.append(ToolMessage(m.text))
        elif m.role.value == "user":
            messages.append(UserMessage(m.text))
        else:
            messages.append(AssistantMessage(content=m.text))
    tools = [
        JsonSchema(
            function=Function(name=t.name, description=t.description, parameters=dict(t.parameters))
        )
        for t in request.tools
    ]
    return PhariaRequest(
        "llama-3.1-8b-instruct", messages, system=request.messages[0].text, tools=tools
    )


def _cold(tokenizer: Any) -> Llama3:
    return Llama3(date="21 September 2024", tokenizer=tokenizer)


def _check_cold(tokenizer: Any) -> None:
    # Every cache a Llama3 keeps between renders starts empty in the cold measurement.
    fmt = _cold(tokenizer)
    if not fmt._cache.is_empty():
        raise AssertionError("a new Llama3 starts with a cache")


def _texts_meta_tokenizes(chat_format: Any, dialog: list[Any]) -> list[str]:
    """The texts llama-models' ChatFormat hands tiktoken for ``dialog``."""
    model = chat_format.tokenizer.model
    seen: list[str] = []
    encode = model.encode

    def record(text: str, **kwargs: Any) -> list[int]:
        seen.append(text)
        return list(encode(text, **kwargs))

    model.encode = record
    try:
        chat_format.encode_dialog_prompt(dialog)
    finally:
        del model.encode
    return seen


def _texts_chatlane_tokenizes(tokenizer: Any, request: ChatRequest) -> list[tuple[Any, str]]:
    """The (core function, text) pairs a cold chatlane render hands tiktoken."""
    seen: list[tuple[Any, str]] = []
    names = ("_encode_plain", "_encode_ordinary")
    saved = {name: getattr(tokenizer, name) for name in names}

    def recorder(fn: Any) -> Any:
        def record(text: str) -> list[int]:
            seen.append((fn, text))
            return list(fn(text))

        return record

    for name in names:
        setattr(tokenizer, name, recorder(saved[name]))
    try:
        _cold(tokenizer).render(request)
    finally:
        for name, fn in saved.items():
            setattr(tokenizer, name, fn)
    return seen


def main() -> None:
    from llama_models.llama3.chat_format import ChatFormat
    from llama_models.llama3.tokenizer import Tokenizer

    tokenizer = load_tokenizer()
    tools = _tools()
    messages = _conversation()
    request = ChatRequest(tuple(messages), tools=tools)
    meta_fmt = Llama3(date="21 September 2024", tokenizer=tokenizer)
    prompt = meta_fmt.render(request)

    chat_format = ChatFormat(Tokenizer.get_instance())
    dialog = _meta_dialog(meta_fmt, request)
    assert chat_format.encode_dialog_prompt(dialog).tokens == list(prompt.tokens)

    rows: list[tuple[str, str, float, float]] = []

    _check_cold(tokenizer)
    assert _cold(tokenizer).render(request) == prompt
    meta_texts = _texts_meta_tokenizes(chat_format, dialog)
    meta_core = chat_format.tokenizer.model._core_bpe.encode_ordinary
    ours = _texts_chatlane_tokenizes(tokenizer, request)

    def meta_core_alone() -> None:
        for text in meta_texts:
            meta_core(text)

    def chatlane_core_alone() -> None:
        for fn, text in ours:
            fn(text)

    t = _compare(
        {
            "meta": lambda: chat_format.encode_dialog_prompt(dialog),
            "cold": lambda: _cold(tokenizer).render(request),
            "warm": lambda: meta_fmt.render(request),
            "meta core": meta_core_alone,
            "chatlane core": chatlane_core_alone,
        },
        budget=10.0,
    )
    rows.append(("render + tokenize", "llama-models ChatFormat", t["meta"], t["meta"]))
    rows.append(("render + tokenize", "chatlane meta, cold", t["cold"], t["meta"]))
    rows.append(("render + tokenize", "chatlane meta, warm", t["warm"], t["meta"]))
    core_rows = [
        ("meta core", f"on llama-models' {len(meta_texts)} texts"),
        ("chatlane core", f"on chatlane's {len(ours)} texts"),
    ]
    for key, name in core_rows:
        rows.append(("tiktoken core alone", name, t[key], t["meta"]))

    # One more turn: the conversation has just been rendered, then one user turn more is.
    # Timed call by call (the median), with every request built before its timing.
    answered = (*messages, assistant("ok"))
    alone_times = []
    grown_times = []
    for i in range(2000):
        extra = user(f"One more question, number {i}?")
        alone_request = ChatRequest((extra,))
        start = time.perf_counter()
        Llama3(tokenizer=tokenizer).render(alone_request)
        alone_times.append(time.perf_counter() - start)
        meta_fmt.render(request)
        grown_request = ChatRequest((*answered, extra), tools=tools)
        start = time.perf_counter()
        meta_fmt.render(grown_request)
        grown_times.append(time.perf_counter() - start)
    alone = statistics.median(alone_times)
    grown = statistics.median(grown_times)
    rows.append(("one more turn", "the new turn rendered alone", alone, alone))
    rows.append(("one more turn", "chatlane, the grown conversation", grown, alone))

    template = _jinja_template()
    hf_messages = _hf_messages(request)
    hf_tools = [hf_tool_definition(t) for t in tools]
    hf_fmt = Llama3(profile="hf", tokenizer=tokenizer)
    assert hf_fmt.render_text(request) == template.render(
        messages=hf_messages,
        tools=hf_tools,
        bos_token="<|begin_of_text|>",
        add_generation_prompt=True,
    )
    pharia = _pharia_request(request)
    t = _compare(
        {
            "jinja": lambda: template.render(
                messages=hf_messages,
                tools=hf_tools,
                bos_token="<|begin_of_text|>",
                add_generation_prompt=True,
            ),
            "cold": lambda: Llama3(profile="hf", tokenizer=tokenizer).render_text(request),
            "warm": lambda: hf_fmt.render_text(request),
            "pharia": pharia.render,
        }
    )
    text_rows = [
        ("jinja", "jinja2 HF template, precompiled"),
        ("cold", "chatlane hf, cold"),
        ("warm", "chatlane hf, warm"),
        ("pharia", "pharia-skill ChatRequest.render"),
    ]
    for key, name in text_rows:
        rows.append(("render only (text)", name, t[key], t["jinja"]))

    print(f"20 turns, 5 JSON tools, 5 tool calls; {len(prompt.tokens)} tokens")
    print(f"{'task':<20} {'implementation':<34} {'time':>10} {'speed-up':>9}")
    for task, name, seconds, reference in rows:
        print(f"{task:<20} {name:<34} {seconds * 1e6:>8.1f}µs {reference / seconds:>8.1f}x")
    print(
        "cold: a new Llama3 per render, every chatlane cache empty (checked); the tokenizer "
        "is loaded once, with its fixed texts' ids"
    )


if __name__ == "__main__":
    main()
