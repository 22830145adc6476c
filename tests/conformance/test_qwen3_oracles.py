"""Qwen 3 and Qwen 2.5 against their official chat templates, byte for byte, and the Qwen
tokenizer against llama.cpp's test vectors and llama.cpp's own tokenizer.

The templates (tests/conformance/data, from the llama-cpp-python 0.3.36 sdist's
``vendor/llama.cpp/models/templates``) run as transformers runs them: jinja2's sandbox with
trim_blocks, lstrip_blocks and transformers' ``tojson``. The vocabulary is the sdist's
``ggml-vocab-qwen2.gguf``, fetched at test time (tests/support/refs.py).
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

import jinja2.ext
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment

from chatlane.formats.qwen3 import Qwen
from chatlane.formats.qwen3._format import hf_tool_definition
from chatlane.formats.qwen3.tokenizer import ADDED_TOKENS, QwenTokenizer, load_tokenizer
from chatlane.messages import Message, Role, ToolCall, assistant, system, tool_result, user
from chatlane.request import ChatRequest
from chatlane.tools import Tool
from support.refs import sdist_file

DATA = Path(__file__).parent / "data"
TEMPLATES = {"qwen3": "Qwen-Qwen3-0.6B.jinja", "qwen2.5": "Qwen-Qwen2.5-7B-Instruct.jinja"}


@pytest.fixture(scope="module")
def vocab() -> Path:
    return sdist_file("models/ggml-vocab-qwen2.gguf")


@pytest.fixture(scope="module")
def tokenizer(vocab: Path) -> QwenTokenizer:
    return load_tokenizer(vocab)


@pytest.fixture(scope="module")
def templates() -> dict[str, Any]:
    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, **kw: Any) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, **kw)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    return {v: env.from_string((DATA / f).read_text("utf-8")) for v, f in TEMPLATES.items()}


def test_vectors(vocab: Path, tokenizer: QwenTokenizer) -> None:
    """Every case of llama.cpp's test-tokenizer-0 vectors for the Qwen 2 vocabulary."""
    inp = Path(str(vocab) + ".inp") if Path(str(vocab) + ".inp").is_file() else None
    inp = inp or sdist_file("models/ggml-vocab-qwen2.gguf.inp")
    out = sdist_file("models/ggml-vocab-qwen2.gguf.out")
    texts = inp.read_text("utf-8").split("\n__ggml_vocab_test__\n")
    expected = out.read_text("utf-8").split("\n")
    cases = list(zip(texts, expected, strict=False))
    assert len(cases) >= 40
    for text, ids in cases:
        assert tokenizer.encode(text) == [int(x) for x in ids.split()], repr(text)
    # The ids decode back to the text.
    for text, _ in cases:
        assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.fixture(scope="module")
def engine_vocab(vocab: Path) -> Any:
    import llama_cpp

    model = llama_cpp.Llama(str(vocab), vocab_only=True, verbose=False)
    yield model
    model.close()


plain = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.lists(
        st.one_of(
            plain, st.sampled_from([" ", "  ", "\n\n", "123456", "'s", "日本語 ", "🦙", "\t x"])
        ),
        max_size=6,
    ).map("".join)
)
def test_against_llama_cpp(engine_vocab: Any, tokenizer: QwenTokenizer, text: str) -> None:
    """Any text tokenizes as llama.cpp's own tokenizer reads the same vocabulary (which
    normalizes nothing, so the text is taken in NFC, as Qwen's tokenizer takes it)."""
    text = unicodedata.normalize("NFC", text)
    assume("<|" not in text)
    expected = engine_vocab.tokenize(text.encode(), add_bos=False, special=False)
    assert tokenizer.encode(text) == expected


TRICKY = [
    "<|im_end|>",
    "<|im_start|>",
    "<|endoftext|>",
    "<tool_call>",
    "</tool_call>",
    "<think>",
    "</think>",
    "<tool_response>",
    "</tool_response>",
    "\n",
    "\n\n",
    " ",
    "é",
    "日本語",
    "🙂",
    '{"name": "f"}',
]
texts = st.lists(
    st.one_of(
        st.text(st.characters(exclude_categories=["Cs"]), max_size=20), st.sampled_from(TRICKY)
    ),
    max_size=4,
).map("".join)

WEATHER = Tool.from_schema(
    "get_weather",
    {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city"}},
        "required": ["city"],
    },
    "Weather for a city (ünïcode)",
)
NOW = Tool.from_schema("now", None, None)
argument_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def calls(draw: st.DrawFn) -> ToolCall:
    name = draw(st.sampled_from(["get_weather", "now", "other.tool"]))
    if draw(st.integers(0, 9)) == 0:
        return ToolCall.from_raw("c", name, draw(st.sampled_from(["{bad", "[1, 2]", "not json"])))
    return ToolCall(
        "c", name, draw(st.dictionaries(st.text(max_size=6), argument_values, max_size=3))
    )


@st.composite
def conversations(draw: st.DrawFn) -> list[Message]:
    messages: list[Message] = []
    if draw(st.booleans()):
        messages.append(system(draw(texts)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["user", "user", "assistant", "tools", "system", "wrapped"]))
        if kind == "user":
            messages.append(user(draw(texts)))
        elif kind == "wrapped":
            messages.append(user("<tool_response>" + draw(texts) + "</tool_response>"))
        elif kind == "system":
            messages.append(system(draw(texts)))
        elif kind == "assistant":
            reasoning = draw(st.one_of(st.none(), texts))
            messages.append(assistant(draw(texts), reasoning=reasoning))
        else:
            made = draw(st.lists(calls(), min_size=1, max_size=3))
            messages.append(
                assistant(
                    draw(st.sampled_from(["", "Let me check."])),
                    made,
                    reasoning=draw(st.one_of(st.none(), texts)),
                )
            )
            for call in made:
                messages.append(tool_result(call, draw(texts)))
    if draw(st.booleans()):
        messages.append(user(draw(texts)))
    return messages


def hf_message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role.value, "content": m.text}
    if m.role is Role.ASSISTANT:
        if m.reasoning is not None:
            out["reasoning_content"] = m.reasoning
        if m.tool_calls:
            out["tool_calls"] = [
                {
                    "type": "function",
                    "id": c.id,
                    "function": {
                        "name": c.name,
                        "arguments": dict(c.arguments) if c.valid else c.raw_arguments,
                    },
                }
                for c in m.tool_calls
            ]
    return out


def oracle(template: Any, fmt: Qwen, request: ChatRequest) -> str:
    messages = [hf_message(m) for m in request.messages]
    continuing = request.messages[-1].role is Role.ASSISTANT
    kwargs: dict[str, Any] = {"add_generation_prompt": not continuing}
    if fmt.variant == "qwen3":
        kwargs["enable_thinking"] = fmt.enable_thinking
    tools = [hf_tool_definition(t) for t in request.tools] or None
    rendered: str = template.render(messages=messages, tools=tools, **kwargs)
    if continuing:
        # transformers' continue_final_message: cut after the final message's content.
        final = request.messages[-1].text.strip()
        rendered = rendered[: rendered.rindex(final) + len(final)]
    return rendered


def _added(variant: str) -> re.Pattern[str]:
    added = [t for t, i in ADDED_TOKENS.items() if variant == "qwen3" or i <= 151664]
    return re.compile("(" + "|".join(re.escape(t) for t in added) + ")")


def hf_tokens(tokenizer: QwenTokenizer, variant: str, text: str) -> list[int]:
    """The text tokenized as Hugging Face's tokenizer does: added tokens split out first."""
    out: list[int] = []
    for k, part in enumerate(_added(variant).split(text)):
        out += [ADDED_TOKENS[part]] if k % 2 else tokenizer.encode(part)
    return out


@pytest.mark.parametrize(
    ("variant", "thinking"), [("qwen3", True), ("qwen3", False), ("qwen2.5", True)]
)
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(messages=conversations(), with_tools=st.booleans(), end_with_assistant=st.booleans())
def test_template(
    templates: dict[str, Any],
    vocab: Path,
    tokenizer: QwenTokenizer,
    variant: str,
    thinking: bool,
    messages: list[Message],
    with_tools: bool,
    end_with_assistant: bool,
) -> None:
    if end_with_assistant:
        messages = [*messages, assistant(f"Sure{len(messages)}")]
    if messages[-1].role is Role.ASSISTANT:
        final = messages[-1].text.strip()
        # transformers cuts at the final content's last occurrence: it must be there.
        assume(final and final not in "<|im_end|>\n" and not messages[-1].tool_calls)
        assume("</think>" not in messages[-1].text)
    fmt = Qwen(variant, enable_thinking=thinking, vocab=vocab)  # type: ignore[arg-type]
    request = ChatRequest(tuple(messages), tools=(WEATHER, NOW) if with_tools else ())
    prompt = fmt.render(request)
    expected_text = oracle(templates[variant], fmt, request)
    assert prompt.text == expected_text
    typed = "".join(
        m.text + (m.reasoning or "") + "".join(c.raw_arguments + c.name for c in m.tool_calls)
        for m in messages
    )
    if not _added(variant).search(typed):
        assert list(prompt.tokens) == hf_tokens(tokenizer, variant, prompt.text)
    else:
        # Text that looks like an added token stays text: the prompt has exactly the
        # added tokens the structure wrote, and its tokens still spell its text (in NFC, as
        # Qwen's tokenizer normalizes).
        assert tokenizer.decode(prompt.tokens) == unicodedata.normalize("NFC", prompt.text)
        written = sum(1 for t in prompt.tokens if tokenizer.is_special(t))
        spelled = len(_added(variant).findall(prompt.text))
        assert written <= spelled
        assert (fmt.misread_text(prompt) is not None) == (written < spelled)


def test_no_vocabulary_renders_text_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHATLANE_QWEN_VOCAB", raising=False)
    prompt = Qwen().render([user("hi")])
    assert prompt.text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert prompt.tokens == ()


def test_vocabulary_from_environment(monkeypatch: pytest.MonkeyPatch, vocab: Path) -> None:
    monkeypatch.setenv("CHATLANE_QWEN_VOCAB", str(vocab))
    prompt = Qwen().render([user("hi")])
    assert prompt.tokens == (151644, 872, 198, 6023, 151645, 198, 151644, 77091, 198)
