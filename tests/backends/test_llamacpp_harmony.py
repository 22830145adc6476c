"""The embedded engine runs gpt-oss: a tiny random-weight GGUF of llama.cpp's ``gpt-oss``
architecture (experts, attention sinks, sliding window) with the real o200k_harmony
vocabulary, built at test time. llama.cpp tokenizes as chatlane's tokenizer does, and forced
calls (harmony's own call message as the grammar) and schema outputs parse and validate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatlane import formats
from chatlane._jsonschema import validate
from chatlane.messages import user
from chatlane.request import ChatRequest
from chatlane.tools import Tool
from support.refs import o200k_base_file

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
def vocab() -> Path:
    return o200k_base_file()


@pytest.fixture(scope="module")
def model(vocab: Path) -> Path:
    from chatlane.formats.harmony.testmodel import tiny_gguf

    return tiny_gguf(vocab=vocab)


@pytest.fixture(scope="module")
def engine(model: Path, vocab: Path) -> Iterator[LlamaCpp]:
    with LlamaCpp(model, n_ctx=2048, n_threads=1, format=formats.get("gpt-oss", vocab=vocab)) as e:
        yield e


def test_detected_from_the_file(model: Path, vocab: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATLANE_O200K_BASE", str(vocab))
    with LlamaCpp(model, n_ctx=512, n_threads=1) as e:
        assert e.format.name == "gpt-oss"
        assert e.info.architecture == "gpt-oss"
        assert e.info.special_tokens["<|call|>"] == 200012


def test_llama_cpp_reads_the_vocabulary_as_chatlane(engine: LlamaCpp) -> None:
    request = ChatRequest(
        (user("Weather in Oslo? Ünïcode, 日本語, 123456,  spaces\t. 🙂"),), tools=(WEATHER, TIME)
    )
    prompt = engine.format.render(request)
    tokenizer = engine.format.tokenizer
    assert tokenizer is not None
    assert engine.llama.tokenize(prompt.text.encode(), add_bos=False, special=True) == (
        tokenizer.encode_with_special(prompt.text)  # type: ignore[attr-defined]
    )
    assert engine.llama.detokenize(list(prompt.tokens), special=True).decode() == prompt.text


def test_forced_tool_calls_parse_and_validate(engine: LlamaCpp) -> None:
    for choice in ("required", "get_weather", "now"):
        for seed in range(5):
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
            assert response.stop_sequence == "<|call|>"


def test_schema_output_validates(engine: LlamaCpp) -> None:
    schema = WEATHER.parameters
    for seed in range(5):
        response = engine.chat("JSON please", response_format=schema, max_tokens=120, seed=seed)
        assert response.finish_reason == "stop", response.text
        assert response.stop_sequence == "<|return|>"
        assert validate(json.loads(response.text), schema) == []
