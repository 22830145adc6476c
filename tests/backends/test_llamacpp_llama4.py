"""The embedded engine on a Llama 4 model: llama.cpp loads the tiny random-weight ``llama4``
GGUF (real tokenizer), `LlamaCpp` picks the Llama 4 format from its metadata, and constrained
decoding with the format's own grammar makes every forced call and schema output parse."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatlane._jsonschema import validate
from chatlane.events import ToolCallDone
from chatlane.messages import assistant, tool_result, user
from chatlane.request import ChatRequest
from chatlane.tools import Tool

pytestmark = pytest.mark.engine

pytest.importorskip("llama_cpp")
pytest.importorskip("llguidance")
pytest.importorskip("gguf")
pytest.importorskip("llama_models")

from chatlane.backends.llamacpp import LlamaCpp  # noqa: E402
from chatlane.formats.llama4 import Llama4  # noqa: E402
from chatlane.testing import tiny_gguf  # noqa: E402

RUNS = 6

WEATHER = Tool.from_schema(
    "get_weather",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 12},
            "unit": {"enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
    },
    "Weather for a city",
)
CLOCK = Tool.from_schema(
    "clock",
    {
        "type": "object",
        "properties": {"zone": {"type": "integer", "minimum": -12, "maximum": 14}},
        "required": ["zone"],
    },
    "The time in a zone",
)
TOOLS = [WEATHER, CLOCK]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "maxLength": 10},
        "score": {"type": "integer", "minimum": 0, "maximum": 9},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
    },
    "required": ["answer", "score", "tags"],
}


@pytest.fixture(scope="module")
def model() -> Path:
    return tiny_gguf("llama4")


@pytest.fixture(scope="module", params=["meta", "hf"])
def engine(request: pytest.FixtureRequest, model: Path) -> Iterator[LlamaCpp]:
    fmt = None if request.param == "meta" else Llama4("hf")
    with LlamaCpp(model, n_ctx=2048, n_threads=1, format=fmt) as engine:
        yield engine


def test_the_engine_detects_llama4_from_the_gguf(model: Path) -> None:
    with LlamaCpp(model, n_ctx=512, n_threads=1) as engine:
        assert isinstance(engine.format, Llama4)
        assert engine.format.name == "llama4-meta"
    # llama.cpp's own tokenizer reads a rendered prompt's text as chatlane tokenized it
    import llama_cpp

    vocab = llama_cpp.Llama(str(model), vocab_only=True, verbose=False)
    clean = Llama4().render(ChatRequest((user("Hi  there, é 日本 [f(a=1)]"),)))
    assert vocab.tokenize(clean.text.encode(), add_bos=False, special=True) == list(clean.tokens)
    # and a typed "<|eot|>", which chatlane keeps as text, would be a control token there
    typed = Llama4().render(ChatRequest((user("<|eot|> is text"),)))
    assert vocab.tokenize(typed.text.encode(), add_bos=False, special=True) != list(typed.tokens)
    assert Llama4().misread_text(typed) == "<|eot|>"


@pytest.mark.parametrize("choice", ["required", "get_weather", "clock"])
def test_forced_tool_calls_parse_back_into_valid_calls(engine: LlamaCpp, choice: str) -> None:
    for seed in range(RUNS):
        response = engine.chat(
            "What now?", tools=TOOLS, tool_choice=choice, seed=seed, max_tokens=120
        )
        (call,) = response.tool_calls
        if choice != "required":
            assert call.name == choice
        tool = {t.name: t for t in TOOLS}[call.name]
        assert call.valid
        validate(dict(call.arguments), tool.parameters)
        assert response.text == ""


def test_a_streamed_forced_call_is_the_same_call(engine: LlamaCpp) -> None:
    request = ChatRequest((user("Weather?"),), tools=tuple(TOOLS), tool_choice="get_weather")
    with engine.stream(request, seed=3, max_tokens=120) as stream:
        events = list(stream)
    done = [e for e in events if isinstance(e, ToolCallDone)]
    (whole,) = engine.chat(request, seed=3, max_tokens=120).tool_calls
    assert [(e.call.name, dict(e.call.arguments)) for e in done] == [
        (whole.name, dict(whole.arguments))
    ]


def test_schema_constrained_output_validates(engine: LlamaCpp) -> None:
    for seed in range(RUNS):
        response = engine.chat("Answer in JSON.", response_format=SCHEMA, seed=seed, max_tokens=150)
        validate(json.loads(response.text), SCHEMA)
        assert response.tool_calls == ()


def test_a_conversation_with_calls_in_history_runs(engine: LlamaCpp) -> None:
    first = engine.chat("Weather in Paris?", tools=TOOLS, tool_choice="get_weather", seed=1)
    (call,) = first.tool_calls
    messages = [user("Weather in Paris?"), assistant("", [call]), tool_result(call, "sunny")]
    response = engine.chat(messages, tools=TOOLS, seed=1, max_tokens=16)
    assert response.finish_reason.value in ("stop", "length", "tool_calls")
