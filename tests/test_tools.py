"""Tools from schemas, Pydantic models and typed functions; docstrings; strict schemas."""

from __future__ import annotations

import asyncio
from typing import Literal

import pydantic
import pytest
from pydantic import BaseModel, Field

from chatlane.errors import SchemaError
from chatlane.tools import (
    BUILTIN_TOOLS,
    Tool,
    brave_search,
    code_interpreter,
    parse_docstring,
    strict_schema,
    tool,
    wolfram_alpha,
)

# --- from a schema --------------------------------------------------------------------------


def test_from_schema() -> None:
    schema = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    made = Tool.from_schema("search", schema, "Search things.")
    assert (made.name, made.description, made.parameters, made.strict) == (
        "search",
        "Search things.",
        schema,
        False,
    )
    assert Tool.from_schema("ping").parameters == {"type": "object", "properties": {}}
    # A schema with properties but no type is an object schema.
    assert Tool.from_schema("t", {"properties": {}}).name == "t"


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"type": "string"}, "must be a JSON schema of type 'object', got type 'string'"),
        ({"type": "array", "items": {}}, "type 'array'"),
        ([1, 2], "must be a JSON schema \\(a dict\\), got list"),
        ({"type": "object", "properties": []}, "'properties' must be an object"),
        ({"type": "object", "required": "q"}, "'required' must be a list of property names"),
    ],
)
def test_a_tool_schema_that_is_not_an_object_schema(parameters: object, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        Tool.from_schema("bad", parameters)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "ünïcode"])
def test_a_tool_name_servers_would_reject(name: str) -> None:
    with pytest.raises(SchemaError, match="must be 1 to 64 letters"):
        Tool.from_schema(name)


# --- from a Pydantic model ------------------------------------------------------------------


class GetHTTPStatus(BaseModel):
    """Fetch a URL and report its HTTP status."""

    url: str = Field(description="The URL to fetch.")
    follow_redirects: bool = True


def test_from_model() -> None:
    made = Tool.from_model(GetHTTPStatus)
    assert made.name == "get_http_status"
    assert made.description == "Fetch a URL and report its HTTP status."
    assert made.parameters["properties"]["url"]["description"] == "The URL to fetch."
    assert made.parameters["required"] == ["url"]
    assert "description" not in made.parameters
    assert made.validate_arguments({"url": "https://x.test"}) == GetHTTPStatus(url="https://x.test")
    with pytest.raises(pydantic.ValidationError):
        made.validate_arguments({"follow_redirects": "maybe"})
    assert Tool.from_model(GetHTTPStatus, name="status", description="d").name == "status"


def test_an_undocumented_model_has_no_description() -> None:
    class Bare(BaseModel):
        x: int

    assert Tool.from_model(Bare).description is None


def test_from_model_needs_a_model() -> None:
    with pytest.raises(SchemaError, match="expected a Pydantic model class"):
        Tool.from_model(dict)


# --- from a function ------------------------------------------------------------------------


def google(city: str, days: int = 1, unit: Literal["C", "F"] = "C") -> str:
    """Forecast the weather.

    Looks it up in the forecast service.

    Args:
        city: The city to forecast,
            with its country.
        days (int): How many days ahead.
        unit: Celsius or Fahrenheit.

    Returns:
        The forecast.
    """
    return f"{city} {days} {unit}"


def numpy_style(city: str, days: int = 1) -> str:
    """Forecast the weather.

    Parameters
    ----------
    city : str
        The city to forecast.
    days : int
        How many days ahead.

    Returns
    -------
    str
    """
    return city


def sphinx(city: str, days: int = 1) -> str:
    """Forecast the weather.

    :param city: The city to forecast.
    :param int days: How many days ahead.
    :returns: the forecast
    """
    return city


@pytest.mark.parametrize("function", [google, numpy_style, sphinx])
def test_from_function_reads_every_docstring_style(function: object) -> None:
    made = Tool.from_function(function)  # type: ignore[arg-type]
    assert made.name == function.__name__  # type: ignore[attr-defined]
    assert made.description is not None
    assert made.description.startswith("Forecast the weather.")
    properties = made.parameters["properties"]
    assert properties["city"]["description"].startswith("The city to forecast")
    assert properties["days"]["description"] == "How many days ahead."
    assert properties["city"]["type"] == "string"
    assert properties["days"]["type"] == "integer"
    assert properties["days"]["default"] == 1
    assert made.parameters["required"] == ["city"]
    assert "title" not in made.parameters


def test_google_details() -> None:
    made = Tool.from_function(google)
    assert made.description == "Forecast the weather.\n\nLooks it up in the forecast service."
    assert (
        made.parameters["properties"]["city"]["description"]
        == "The city to forecast, with its country."
    )
    assert made.parameters["properties"]["unit"]["enum"] == ["C", "F"]


def test_the_decorator_keeps_the_function() -> None:
    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    assert isinstance(add, Tool)
    assert add(2, 3) == 5
    assert add.function is not None
    assert add.validate_arguments({"a": 1, "b": "2"}).b == 2

    @tool(name="plus", strict=True)
    def plus(a: int) -> int:
        return a

    assert (plus.name, plus.strict, plus.description) == ("plus", True, None)


def test_async_functions_become_tools() -> None:
    @tool
    async def fetch(url: str) -> str:
        """Fetch a page."""
        return url

    assert fetch.parameters["required"] == ["url"]
    assert asyncio.run(fetch("u")) == "u"


def test_a_parameter_without_a_type_hint() -> None:
    def lookup(query, limit: int = 3) -> str:  # type: ignore[no-untyped-def]
        return ""

    with pytest.raises(
        SchemaError, match="parameter 'query' of tool function 'lookup' has no type hint"
    ):
        Tool.from_function(lookup)


def test_star_args_are_not_tool_parameters() -> None:
    def spread(*values: int) -> int:
        return 0

    with pytest.raises(SchemaError, match="takes \\*values"):
        Tool.from_function(spread)


def test_a_tool_without_a_function_cannot_be_called() -> None:
    with pytest.raises(TypeError, match="has no function behind it"):
        Tool.from_schema("remote")()


def test_parse_docstring_stops_at_other_sections() -> None:
    doc = parse_docstring("Summary.\n\nArgs:\n    a: first\n\nRaises:\n    ValueError: never\n")
    assert doc.summary == "Summary."
    assert doc.params == {"a": "first"}
    assert parse_docstring("") == parse_docstring("   ")


# --- strict schemas -------------------------------------------------------------------------


class Address(BaseModel):
    street: str
    zip: str | None = None


class Person(BaseModel):
    name: str
    age: int = 0
    home: Address
    tags: list[str] = []


def test_strict_schema_requires_every_property_and_forbids_others() -> None:
    original = Person.model_json_schema()
    before = repr(original)
    strict = strict_schema(original)
    assert repr(original) == before  # the input is not changed
    assert strict["required"] == ["name", "age", "home", "tags"]
    assert strict["additionalProperties"] is False
    # Optional properties stay optional by allowing null.
    assert strict["properties"]["age"]["type"] == ["integer", "null"]
    assert "default" not in strict["properties"]["age"]
    # $defs are kept, and converted too.
    address = strict["$defs"]["Address"]
    assert address["required"] == ["street", "zip"]
    assert address["additionalProperties"] is False
    assert {"type": "null"} in address["properties"]["zip"]["anyOf"]
    assert strict["properties"]["home"] == {"$ref": "#/$defs/Address"}


def test_strict_tool_parameters() -> None:
    made = Tool.from_schema(
        "f", {"type": "object", "properties": {"a": {"type": "string"}}}, strict=True
    )
    assert made.strict_parameters()["required"] == ["a"]
    assert made.parameters == {"type": "object", "properties": {"a": {"type": "string"}}}


# --- built-in tools -------------------------------------------------------------------------


def test_builtin_tools() -> None:
    assert set(BUILTIN_TOOLS) == {"brave_search", "wolfram_alpha", "code_interpreter"}
    assert all(t.builtin for t in (brave_search, wolfram_alpha, code_interpreter))
    assert Tool.builtin_tool("code_interpreter") is code_interpreter
    assert code_interpreter.parameters["required"] == ["code"]
    with pytest.raises(SchemaError, match="'photo_gen' is not a built-in tool"):
        Tool.builtin_tool("photo_gen")
