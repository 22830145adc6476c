"""Chat requests and response formats."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from chatlane.errors import InputError, MessageError, SchemaError, StructuredOutputError
from chatlane.messages import Message, Role, user
from chatlane.request import ChatRequest, ResponseFormat
from chatlane.tools import Tool


class Answer(BaseModel):
    """An answer."""

    text: str
    confidence: float


def get_time(zone: str) -> str:
    """The time in a zone.

    Args:
        zone: An IANA zone name.
    """
    return zone


def test_messages_become_a_tuple() -> None:
    assert ChatRequest([user("a"), user("b")]).messages == (user("a"), user("b"))  # type: ignore[arg-type]
    assert ChatRequest(user("a")).messages == (user("a"),)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ("hello", "messages must be a sequence of Message, got str"),
        (3, "got int"),
        ([user("a"), {"role": "user"}], r"messages\[1\] is a dict, not a Message"),
    ],
)
def test_messages_that_are_not_messages(messages: object, message: str) -> None:
    with pytest.raises(MessageError, match=message):
        ChatRequest(messages)  # type: ignore[arg-type]


def test_functions_become_tools_and_names_must_be_unique() -> None:
    request = ChatRequest((user("t"),), tools=(get_time,))  # type: ignore[arg-type]
    (made,) = request.tools
    assert made.name == "get_time"
    assert made.parameters["properties"]["zone"]["description"] == "An IANA zone name."
    assert request.tool("get_time") is made
    assert request.tool("other") is None
    with pytest.raises(SchemaError, match="two tools share the name 'get_time'"):
        ChatRequest((user("t"),), tools=(get_time, Tool.from_schema("get_time")))  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="tools must be Tool objects or functions, got str"):
        ChatRequest((user("t"),), tools=("get_time",))  # type: ignore[arg-type]


def test_tool_choice_must_name_a_tool() -> None:
    request = ChatRequest((user("t"),), tools=(get_time,), tool_choice="get_time")  # type: ignore[arg-type]
    assert request.tool_choice == "get_time"
    for choice in ("auto", "none", "required"):
        assert ChatRequest((user("t"),), tool_choice=choice).tool_choice == choice
    with pytest.raises(
        InputError,
        match="tool_choice 'get_tme' names no tool of this request \\(tools: get_time\\)",
    ):
        ChatRequest((user("t"),), tools=(get_time,), tool_choice="get_tme")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="it has no tools"):
        ChatRequest((user("t"),), tool_choice="x")
    with pytest.raises(InputError, match="tool_choice must be a str"):
        ChatRequest((user("t"),), tool_choice=1)  # type: ignore[arg-type]


def test_settings_are_checked_and_normalised() -> None:
    request = ChatRequest((user("t"),), stop="END", steering_concepts=["a"])  # type: ignore[arg-type]
    assert request.stop == ("END",)
    assert request.steering_concepts == ("a",)
    with pytest.raises(InputError, match="max_tokens must be at least 1, got 0"):
        ChatRequest((user("t"),), max_tokens=0)


def test_coerce_from_text_messages_or_a_request() -> None:
    request = ChatRequest.coerce("hi", temperature=0.5, model=None)
    assert request.messages == (Message(Role.USER, "hi"),)
    assert request.temperature == 0.5
    assert request.model is None
    again = ChatRequest.coerce(request, model="m", temperature=None)
    assert (again.model, again.temperature) == ("m", 0.5)
    assert ChatRequest.coerce(request) is request
    assert ChatRequest.coerce([user("x")]).messages == (user("x"),)
    with pytest.raises(InputError, match="unknown request parameter 'temprature'"):
        ChatRequest.coerce("hi", temprature=1)
    with pytest.raises(InputError, match="unknown request parameter 'temprature'"):
        ChatRequest.coerce(request, temprature=1)


# --- response formats -----------------------------------------------------------------------


def test_response_format_from_a_model_a_schema_or_openai_shapes() -> None:
    from_model = ChatRequest.coerce("x", response_format=Answer).response_format
    assert from_model is not None
    assert (from_model.name, from_model.model, from_model.strict) == ("Answer", Answer, True)
    assert from_model.schema == Answer.model_json_schema()
    schema = {"type": "object", "title": "Thing", "properties": {"a": {"type": "integer"}}}
    from_schema = ResponseFormat.coerce(schema)
    assert from_schema is not None
    assert (from_schema.name, from_schema.schema, from_schema.model) == ("Thing", schema, None)
    openai_shape = ResponseFormat.coerce(
        {"type": "json_schema", "json_schema": {"name": "t", "schema": schema, "strict": False}}
    )
    assert openai_shape == ResponseFormat(schema, name="t", strict=False)
    assert ResponseFormat.coerce({"type": "json_object"}) == ResponseFormat.json_object()
    assert ResponseFormat.json_object().schema is None
    with pytest.raises(SchemaError, match="Pydantic model class or a JSON schema, got int"):
        ResponseFormat.coerce(3)
    with pytest.raises(SchemaError, match="expected a Pydantic model class"):
        ResponseFormat.coerce(int)
    with pytest.raises(SchemaError, match="must be a dict, got list"):
        ResponseFormat.from_schema([])  # type: ignore[arg-type]


def test_parse_with_a_model() -> None:
    fmt = ResponseFormat.from_model(Answer)
    assert fmt.parse('{"text": "yes", "confidence": 0.9}') == Answer(text="yes", confidence=0.9)
    with pytest.raises(StructuredOutputError, match="does not validate as Answer: 1 error") as info:
        fmt.parse('{"text": "yes"}')
    assert info.value.text == '{"text": "yes"}'
    assert info.value.errors[0]["loc"] == ("confidence",)


def test_parse_with_a_schema() -> None:
    fmt = ResponseFormat.from_schema(
        {
            "type": "object",
            "properties": {"n": {"type": "integer", "minimum": 1}, "tag": {"enum": ["a", "b"]}},
            "required": ["n"],
            "additionalProperties": False,
        }
    )
    assert fmt.parse('{"n": 2, "tag": "a"}') == {"n": 2, "tag": "a"}
    with pytest.raises(StructuredOutputError) as info:
        fmt.parse('{"n": 0, "tag": "c", "x": 1}')
    assert sorted(info.value.errors) == [
        "$.n: 0 is less than 1",
        "$.tag: 'c' is not one of ['a', 'b']",
        "$: unexpected property 'x'",
    ]
    with pytest.raises(StructuredOutputError, match="not valid JSON"):
        fmt.parse("{n: 1}")
    assert ResponseFormat.json_object().parse("[1]") == [1]


def test_strict_schema_of_a_format() -> None:
    fmt = ResponseFormat.from_model(Answer)
    strict = fmt.strict_schema()
    assert strict is not None
    assert strict["additionalProperties"] is False
    assert ResponseFormat.json_object().strict_schema() is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_tokens", "10", "max_tokens must be an integer, got str '10'"),
        ("max_tokens", True, "max_tokens must be an integer, got bool"),
        ("temperature", "hot", "temperature must be a number"),
        ("top_k", 2.5, "top_k must be an integer"),
        ("model", 3, "model must be a string"),
        ("parallel_tool_calls", "yes", "parallel_tool_calls must be true or false"),
        ("stop", 5, "stop must be a string or a sequence of strings"),
        ("stop", ["a", 1], "stop must be a string or a sequence of strings"),
        ("steering_concepts", [1], "steering_concepts must be a sequence"),
        ("extra", [("a", 1)], "extra must be a dict of body fields, got list"),
    ],
)
def test_settings_of_the_wrong_type_are_named(field: str, value: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        ChatRequest((user("t"),), **{field: value})  # type: ignore[arg-type]
    assert ChatRequest((user("t"),), temperature=1).temperature == 1


def test_a_description_beside_the_schema() -> None:
    schema = {"type": "object", "properties": {}}
    fmt = ResponseFormat.coerce(
        {
            "type": "json_schema",
            "json_schema": {"name": "n", "schema": schema, "description": "What it is."},
        }
    )
    assert fmt == ResponseFormat(schema, name="n", description="What it is.")
    assert ResponseFormat.from_schema(schema, description="d").description == "d"
