"""The embedded engine runs Qwen 3: a tiny random-weight ``qwen3`` GGUF with the real Qwen
vocabulary, built at test time. Prompts are token-exact with llama.cpp's own tokenizer, and
forced calls (Qwen's ``<tool_call>`` grammar) and schema outputs always parse and validate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatlane import formats
from chatlane._jsonschema import validate
from chatlane.messages import ToolCall, assistant, system, tool_result, user
from chatlane.request import ChatRequest
from chatlane.tools import Tool
from support.refs import sdist_file

pytestmark = pytest.mark.engine

pytest.importorskip("llama_cpp")
pytest.importorskip("llguidance")
pytest.importorskip("gguf")

from chatlane.backends.llamacpp import LlamaCpp  # noqa: E402

WEATHER = Tool.from_schema(
    "get_weather",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 12},
            "unit": {"enum": ["c", "f"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        },
        "required": ["city", "unit", "days"],
    },
    "Weather for a city",
)
TIME = Tool.from_schema(
    "now",
    {
        "type": "object",
        "properties": {"zone": {"type": "string", "maxLength": 6}},
        "required": ["zone"],
    },
)


@pytest.fixture(scope="module")
def qwen_model() -> Path:
    from chatlane.formats.qwen3.testmodel import tiny_gguf as build
    from chatlane.testing import tiny_gguf

    vocab = sdist_file("models/ggml-vocab-qwen2.gguf")
    path = build(vocab=vocab)
    assert tiny_gguf("qwen3") == path  # the registry reaches the same cached file
    return path


@pytest.fixture(scope="module")
def engine(qwen_model: Path) -> Iterator[LlamaCpp]:
    fmt = formats.get("qwen3", vocab=qwen_model)  # the model's own file holds its vocabulary
    with LlamaCpp(qwen_model, n_ctx=2048, n_threads=1, format=fmt) as e:
        yield e


def test_detected_from_the_file(qwen_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATLANE_QWEN_VOCAB", str(qwen_model))
    with LlamaCpp(qwen_model, n_ctx=512, n_threads=1) as e:
        assert e.format.name == "qwen3"
        assert e.info.special_tokens["<|im_end|>"] == 151645
        assert e.chat("hi", max_tokens=5, seed=0).choices[0].message.role.value == "assistant"


def test_prompt_tokens_are_llama_cpps(engine: LlamaCpp) -> None:
    """The prompt's ids are what llama.cpp's tokenizer gives for its text (llama.cpp reads
    the added tokens in text, so the conversation has none)."""
    made = ToolCall("c1", "get_weather", {"city": "Oslo", "unit": "c", "days": 2})
    call = assistant("Checking.", [made], reasoning="Needs weather.")
    request = ChatRequest(
        (
            system("Be brief. Ünïcode, 日本語, 123456 and  spaces\t."),
            user("Weather in Oslo?"),
            call,
            tool_result(made, '{"temp": -3}'),
        ),
        tools=(WEATHER, TIME),
    )
    prompt = engine.format.render(request)
    expected = engine.llama.tokenize(prompt.text.encode(), add_bos=False, special=True)
    assert list(prompt.tokens) == expected


def test_forced_tool_calls_parse_and_validate(engine: LlamaCpp) -> None:
    for choice in ("required", "get_weather", "now"):
        for seed in range(6):
            request = ChatRequest((user("Weather?"),), tools=(WEATHER, TIME), tool_choice=choice)
            response = engine.chat(request, max_tokens=120, seed=seed)
            message = response.choices[0].message
            assert response.finish_reason == "tool_calls", message
            assert message.text == ""
            assert len(message.tool_calls) == 1
            call = message.tool_calls[0]
            assert choice == "required" or call.name == choice
            tool = WEATHER if call.name == "get_weather" else TIME
            assert call.valid
            assert validate(dict(call.arguments), tool.parameters) == []


def test_schema_output_validates(engine: LlamaCpp) -> None:
    schema = WEATHER.parameters
    for seed in range(6):
        response = engine.chat("JSON please", response_format=schema, max_tokens=120, seed=seed)
        assert response.finish_reason == "stop"
        assert response.stop_sequence == "<|im_end|>"
        assert validate(json.loads(response.text), schema) == []


def test_streamed_forced_call_is_the_same(engine: LlamaCpp) -> None:
    request = ChatRequest(
        (user("Weather?"),), tools=(WEATHER,), tool_choice="required", seed=3, max_tokens=120
    )
    streamed = engine.stream(request).response.choices[0].message
    whole = engine.chat(request).choices[0].message
    assert [(c.name, c.raw_arguments) for c in streamed.tool_calls] == [
        (c.name, c.raw_arguments) for c in whole.tool_calls
    ]
