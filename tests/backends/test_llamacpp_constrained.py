"""Constrained decoding on the embedded engine: with random weights, every output still parses
and validates, because the grammar leaves the model no other choice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from chatlane._jsonschema import validate
from chatlane.errors import InputError, SchemaError
from chatlane.events import ToolCallDone
from chatlane.messages import assistant, tool_result, user
from chatlane.request import ChatRequest
from chatlane.tools import Tool

pytestmark = pytest.mark.engine

pytest.importorskip("llama_cpp")
pytest.importorskip("llguidance")

from chatlane.backends.llamacpp import LlamaCpp  # noqa: E402
from chatlane.formats._grammar import closed_schema  # noqa: E402
from chatlane.formats.llama3 import Llama3  # noqa: E402

RUNS = 20


@pytest.fixture
def engine(tiny_engine: LlamaCpp) -> LlamaCpp:
    return tiny_engine


SCHEMAS: dict[str, dict[str, Any]] = {
    "bounded strings": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "minLength": 2, "maxLength": 6},
            "note": {"type": "string", "maxLength": 12},
        },
        "required": ["code", "note"],
    },
    "enums and booleans": {
        "type": "object",
        "properties": {
            "unit": {"enum": ["celsius", "fahrenheit", "kelvin"]},
            "level": {"enum": [1, 2, 3]},
            "ok": {"type": "boolean"},
        },
        "required": ["unit", "level", "ok"],
    },
    "bounded integers and numbers": {
        "type": "object",
        "properties": {
            "count": {"type": "integer", "minimum": -3, "maximum": 7},
            "age": {"type": "integer", "minimum": 18, "maximum": 120},
            "ratio": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["count", "age", "ratio"],
    },
    "nested objects": {
        "type": "object",
        "properties": {
            "place": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 8},
                    "geo": {
                        "type": "object",
                        "properties": {
                            "north": {"type": "boolean"},
                            "zone": {"type": "integer", "minimum": 0, "maximum": 23},
                        },
                        "required": ["north", "zone"],
                    },
                },
                "required": ["city", "geo"],
            }
        },
        "required": ["place"],
    },
    "arrays": {
        "type": "object",
        "properties": {
            "tags": {
                "type": "array",
                "items": {"enum": ["a", "b", "c"]},
                "minItems": 1,
                "maxItems": 4,
            },
            "points": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 9}},
                    "required": ["x"],
                },
                "maxItems": 3,
            },
        },
        "required": ["tags", "points"],
    },
}


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_constrained_outputs_always_parse_and_validate(engine: LlamaCpp, name: str) -> None:
    schema = SCHEMAS[name]
    for seed in range(RUNS):
        response = engine.chat("Answer in JSON.", response_format=schema, seed=seed, max_tokens=200)
        assert response.finish_reason == "stop", response.text
        assert response.stop_sequence == "<|eot_id|>"  # an answer, never "waiting for a tool"
        value = json.loads(response.text)  # strict: no raw control characters in strings
        assert validate(value, schema) == [], response.text
        assert response.parsed == value


class Forecast(BaseModel):
    city: str = Field(max_length=10)
    unit: Literal["celsius", "fahrenheit"]
    days: int = Field(ge=1, le=7)
    rain: bool = False


def test_a_pydantic_response_format_gives_a_validated_object(engine: LlamaCpp) -> None:
    for seed in range(5):
        response = engine.chat("Forecast?", response_format=Forecast, seed=seed, max_tokens=200)
        forecast = response.parsed
        assert isinstance(forecast, Forecast)
        assert 1 <= forecast.days <= 7


def test_whitespace_is_strict_by_default(engine: LlamaCpp) -> None:
    schema = SCHEMAS["enums and booleans"]
    for seed in range(5):
        text = engine.chat("JSON", response_format=schema, seed=seed, max_tokens=100).text
        # Exactly json.dumps's layout: nothing for a weak model to fill with whitespace.
        assert text == json.dumps(json.loads(text))


def test_the_streamed_constrained_output_is_the_same(engine: LlamaCpp) -> None:
    request = ChatRequest.coerce(
        [user("JSON")], response_format=SCHEMAS["arrays"], seed=5, max_tokens=200
    )
    assert engine.stream(request).response.text == engine.chat(request).text


WEATHER = Tool.from_schema(
    "get_weather",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 10},
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


@pytest.mark.parametrize("choice", ["required", "get_time"])
def test_forced_tool_calls_parse_back_into_valid_calls(engine: LlamaCpp, choice: str) -> None:
    tools = {t.name: t for t in (WEATHER, TIME)}
    for seed in range(RUNS // 2):
        response = engine.chat(
            "Help.", tools=[WEATHER, TIME], tool_choice=choice, seed=seed, max_tokens=120
        )
        assert response.finish_reason == "tool_calls", response
        [call] = response.tool_calls
        assert call.valid, call
        assert call.name in tools
        assert validate(dict(call.arguments), tools[call.name].parameters) == []
        if choice != "required":
            assert call.name == choice


class Place(BaseModel):
    city: str = Field(max_length=8)
    zone: int = Field(ge=0, le=23)


class Trip(BaseModel):
    """Plan a trip."""

    start: Place
    stops: list[Place] = Field(max_length=2)
    mode: Literal["train", "bike"]


def test_forced_calls_of_a_tool_with_nested_models_validate(engine: LlamaCpp) -> None:
    trip = Tool.from_model(Trip)
    assert "$defs" in trip.parameters  # nested models are references
    for seed in range(5):
        response = engine.chat("Plan.", tools=[trip], tool_choice="trip", seed=seed, max_tokens=200)
        [call] = response.tool_calls
        assert isinstance(trip.validate_arguments(call.arguments), Trip)


def test_a_streamed_forced_call_is_the_same_call(engine: LlamaCpp) -> None:
    request = ChatRequest.coerce(
        "Help.", tools=[WEATHER, TIME], tool_choice="required", seed=4, max_tokens=120
    )
    [streamed] = engine.stream(request).response.tool_calls
    [whole] = engine.chat(request).tool_calls
    assert (streamed.name, streamed.raw_arguments) == (whole.name, whole.raw_arguments)


@pytest.fixture(
    scope="module",
    params=[
        {"profile": "hf"},
        {"tool_format": "function_tag"},
    ],
    ids=["hf-json", "meta-function-tag"],
)
def other_format_engine(request: pytest.FixtureRequest, tiny_model: Path) -> Iterator[LlamaCpp]:
    from chatlane.formats.llama3 import Llama3

    with LlamaCpp(tiny_model, n_ctx=1024, n_threads=1, format=Llama3(**request.param)) as engine:
        yield engine


def test_forced_calls_follow_each_tool_format(other_format_engine: LlamaCpp) -> None:
    engine = other_format_engine
    request = ChatRequest.coerce("Help.", tools=[WEATHER, TIME], tool_choice="get_weather")
    for seed in range(5):
        with engine.stream(request, seed=seed, max_tokens=120) as stream:
            events = list(stream)
            response = stream.response
        [call] = response.tool_calls
        assert call.name == "get_weather"
        assert validate(dict(call.arguments), WEATHER.parameters) == []
        assert sum(isinstance(e, ToolCallDone) for e in events) == 1
    # The conversation goes on: the call renders back into the prompt in the same syntax.
    history = [*request.messages, assistant(response.text, response.tool_calls)]
    history.append(tool_result(call, {"ok": True}))
    assert engine.render(history, tools=[WEATHER, TIME]).tokens


def test_a_response_format_that_looks_like_a_tool_call_stays_text(engine: LlamaCpp) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"const": "get_weather"},
            "parameters": WEATHER.parameters,
        },
        "required": ["name", "parameters"],
    }
    response = engine.chat("x", tools=[WEATHER], response_format=schema, seed=1, max_tokens=120)
    assert response.tool_calls == ()
    assert response.finish_reason == "stop"
    assert json.loads(response.text)["name"] == "get_weather"


def test_a_json_object_response_format_allows_any_object(engine: LlamaCpp) -> None:
    import llguidance

    from chatlane.request import ResponseFormat

    request = ChatRequest((user("x"),), response_format=ResponseFormat.json_object())
    found = Llama3().grammar(request)
    assert found is not None
    assert not found.is_call
    matcher = llguidance.LLMatcher(
        engine._tokenizer(), llguidance.LLMatcher.grammar_from_lark(found.lark)
    )
    text = '{"any": ["keys", 1, true], "at": {"all": null}}'
    assert matcher.consume_tokens(engine.llama.tokenize(text.encode(), add_bos=False))
    assert matcher.is_accepting()


def test_closed_schema_forbids_extra_keys_and_changes_nothing_else() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "a": {"type": "object", "properties": {}},
            "b": {"type": "string"},
            # Properties named like keywords stay properties.
            "properties": {"type": "integer"},
            "type": {"enum": ["x"]},
            "list": {"type": "array", "items": {"type": "object"}},
            "either": {"anyOf": [{"type": "object"}, {"type": "null"}]},
        },
        "required": ["b"],
        "$defs": {"Inner": {"type": "object", "properties": {"c": {"type": "integer"}}}},
    }
    closed = closed_schema(schema)
    assert closed["additionalProperties"] is False
    props = closed["properties"]
    assert props["a"]["additionalProperties"] is False
    assert props["properties"] == {"type": "integer"}
    assert props["type"] == {"enum": ["x"]}
    assert props["list"]["items"]["additionalProperties"] is False
    assert props["either"]["anyOf"][0]["additionalProperties"] is False
    assert closed["$defs"]["Inner"]["additionalProperties"] is False
    assert closed["required"] == ["b"]
    assert schema["properties"]["a"] == {"type": "object", "properties": {}}  # not mutated
    assert closed_schema({"type": "object", "additionalProperties": True})["additionalProperties"]


def test_forced_pythonic_calls_parse_back_into_valid_calls(tiny_model: Path) -> None:
    pythonic = Llama3("3.2", tool_format="pythonic")
    nested = Tool.from_schema(
        "plan",
        {
            "type": "object",
            "properties": {
                "steps": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
                "urgent": {"type": "boolean"},
                "where": {
                    "type": "object",
                    "properties": {"zone": {"type": "integer", "minimum": 0, "maximum": 9}},
                    "required": ["zone"],
                },
            },
            "required": ["steps", "urgent", "where"],
        },
    )
    tools = {t.name: t for t in (WEATHER, nested)}
    with LlamaCpp(tiny_model, n_ctx=1024, n_threads=1, format=pythonic) as engine:
        for seed in range(6):
            response = engine.chat(
                "Help.",
                tools=list(tools.values()),
                tool_choice="required",
                seed=seed,
                max_tokens=150,
            )
            [call] = response.tool_calls
            assert call.valid, call
            assert validate(dict(call.arguments), tools[call.name].parameters) == []


def test_a_parameter_name_that_is_no_identifier_cannot_be_a_pythonic_call() -> None:
    odd = Tool.from_schema("odd", {"type": "object", "properties": {"a-b": {"type": "integer"}}})
    request = ChatRequest((user("x"),), tools=(odd,), tool_choice="required")
    with pytest.raises(InputError, match="'a-b', which is not a Python identifier"):
        Llama3("3.2", tool_format="pythonic").grammar(request)


def test_an_unknown_tool_format_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="tool_format must be"):
        Llama3(tool_format="xml")  # type: ignore[arg-type]


def test_forcing_a_builtin_tool_is_a_clear_error() -> None:
    from chatlane.tools import brave_search

    request = ChatRequest((user("x"),), tools=(brave_search,), tool_choice="brave_search")
    with pytest.raises(InputError, match="built-in tool 'brave_search'"):
        Llama3().grammar(request)


def test_an_unusable_schema_is_a_schema_error(engine: LlamaCpp) -> None:
    bad = {"type": "object", "properties": {"x": {"$ref": "#/$defs/missing"}}, "required": ["x"]}
    with pytest.raises(SchemaError, match="cannot be turned into a grammar"):
        engine.chat("x", response_format=bad, max_tokens=5)


def test_a_nested_pydantic_response_format_validates(engine: LlamaCpp) -> None:
    for seed in range(3):
        response = engine.chat("Plan.", response_format=Trip, seed=seed, max_tokens=200)
        assert isinstance(response.parsed, Trip)


@pytest.mark.parametrize(("flexible", "accepted"), [(False, False), (True, True)])
def test_flexible_whitespace_is_a_choice(engine: LlamaCpp, flexible: bool, accepted: bool) -> None:
    import llguidance

    request = ChatRequest.coerce("x", response_format=SCHEMAS["enums and booleans"])
    found = Llama3().grammar(request, flexible_whitespace=flexible)
    assert found is not None
    matcher = llguidance.LLMatcher(
        engine._tokenizer(), llguidance.LLMatcher.grammar_from_lark(found.lark)
    )
    spaced = '{ "unit" : "kelvin",\n  "level": 2, "ok": true }'
    tokens = engine.llama.tokenize(spaced.encode(), add_bos=False)
    assert (matcher.consume_tokens(tokens) and matcher.is_accepting()) is accepted
