"""The embedded engine runs the Mistral family: a tiny random-weight GGUF with Mistral's real
tekken vocabulary (built at test time from mistral-common's shipped file), its format picked
from the file, prompts tokenized as llama.cpp tokenizes them, and forced calls in both Mistral
call syntaxes plus schema output, constrained by the format's own grammar."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatlane._jsonschema import validate
from chatlane.messages import Message, Role, ToolCall
from chatlane.request import ChatRequest
from chatlane.tools import Tool

pytestmark = pytest.mark.engine
pytest.importorskip("llama_cpp")
pytest.importorskip("llguidance")
pytest.importorskip("gguf")
pytest.importorskip("mistral_common")

from chatlane.backends.llamacpp import LlamaCpp  # noqa: E402

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
    "Current weather.",
)
TIME = Tool.from_schema(
    "get_time",
    {
        "type": "object",
        "properties": {"zone": {"type": "integer", "minimum": -12, "maximum": 14}},
        "required": ["zone"],
    },
)


@pytest.fixture(scope="module")
def model() -> Path:
    from chatlane.testing import tiny_gguf

    return tiny_gguf("mistral")


@pytest.fixture(scope="module", params=["mistral-v11", "mistral-v3-tekken", "mistral-v13"])
def engine(request: pytest.FixtureRequest, model: Path) -> Iterator[LlamaCpp]:
    with LlamaCpp(model, n_ctx=1024, n_threads=1, format=request.param) as engine:
        yield engine


def test_the_format_is_detected_from_the_file(model: Path) -> None:
    with LlamaCpp(model, n_ctx=256, n_threads=1) as engine:
        # The vocabulary has [ARGS] and [THINK]: the newest tekken version.
        assert engine.format.name == "mistral-v13"


def test_prompts_are_the_tokens_llama_cpp_reads_from_their_text(engine: LlamaCpp) -> None:
    call = ToolCall("abcDEF123", "get_weather", {"city": "Paris", "unit": "celsius"})
    messages = [
        Message(Role.SYSTEM, "Be terse."),
        Message(Role.USER, "Weather in Paris, Zürich and 東京?"),
        Message(Role.ASSISTANT, "", (call,)),
        Message(Role.TOOL, '{"temp": 21}', tool_call_id="abcDEF123"),
        Message(Role.ASSISTANT, "21 degrees."),
        Message(Role.USER, "Thanks!"),
    ]
    prompt = engine.format.render(ChatRequest(tuple(messages), tools=(WEATHER,)))
    llama = engine.llama
    assert llama.tokenize(prompt.text.encode(), add_bos=False, special=True) == list(prompt.tokens)
    assert engine.format.misread_text(prompt) is None
    # User text that spells a control token stays text in the tokens; its text alone would
    # be misread, and the format says so.
    messages[1] = Message(Role.USER, "Say [TOOL_CALLS] literally.")
    prompt = engine.format.render(ChatRequest(tuple(messages), tools=(WEATHER,)))
    assert llama.tokenize(prompt.text.encode(), add_bos=False, special=True) != list(prompt.tokens)
    assert engine.format.misread_text(prompt) == "[TOOL_CALLS]"


@pytest.mark.parametrize("choice", ["required", "get_time"])
def test_forced_tool_calls_parse_back_into_valid_calls(engine: LlamaCpp, choice: str) -> None:
    tools = {t.name: t for t in (WEATHER, TIME)}
    for seed in range(RUNS):
        response = engine.chat(
            "Help.", tools=[WEATHER, TIME], tool_choice=choice, seed=seed, max_tokens=80
        )
        assert response.finish_reason == "tool_calls", response
        [call] = response.tool_calls
        assert call.valid, call
        assert validate(dict(call.arguments), tools[call.name].parameters) == []
        assert len(call.id) == 9
        assert call.id.isalnum()
        if choice != "required":
            assert call.name == choice
        assert response.message.content == ""


def test_a_streamed_forced_call_is_the_same_call(engine: LlamaCpp) -> None:
    request = ChatRequest.coerce(
        "Help.", tools=[WEATHER, TIME], tool_choice="required", seed=3, max_tokens=80
    )
    [streamed] = engine.stream(request).response.tool_calls
    [whole] = engine.chat(request).tool_calls
    assert (streamed.name, streamed.raw_arguments) == (whole.name, whole.raw_arguments)


def test_schema_output_validates(engine: LlamaCpp) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["answer"],
    }
    for seed in range(RUNS):
        response = engine.chat("Pick.", response_format=schema, seed=seed, max_tokens=40)
        assert response.finish_reason == "stop"
        assert validate(json.loads(response.message.text), schema) == []


def test_unconstrained_random_output_never_breaks_the_stream(engine: LlamaCpp) -> None:
    # Random weights write anything, control tokens included: it still ends as a response.
    for seed in range(3):
        response = engine.chat("Hi", tools=[WEATHER], seed=seed, max_tokens=60)
        assert response.finish_reason in ("stop", "length", "tool_calls")
