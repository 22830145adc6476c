"""Parity with pharia-skill 0.20.0's llama3 module: what it does, chatlane does; its defects
stay behind (docs/migrating-from-pharia-skill.md)."""

from __future__ import annotations

import datetime as dt
import warnings
from typing import Any

import pytest
from pydantic import BaseModel

from chatlane.errors import MessageError
from chatlane.formats.llama3 import Llama3
from chatlane.messages import ToolCall, assistant, system, tool_result, user
from chatlane.request import ChatRequest
from chatlane.tools import Tool, brave_search

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from pharia_skill import llama3 as pharia


def test_a_plain_conversation_renders_the_same() -> None:
    theirs = pharia.ChatRequest(
        "llama-3.1-8b-instruct",
        [
            pharia.UserMessage("What is 2 + 2?"),
            pharia.AssistantMessage("4"),
            pharia.UserMessage("And 3 + 3?"),
        ],
        system="Be brief.",
    ).render()
    # (3.3: Meta's code writes 3.1's system text after a date block, 3.3's as it is)
    ours = Llama3("3.3").render(
        ChatRequest(
            (system("Be brief."), user("What is 2 + 2?"), assistant("4"), user("And 3 + 3?"))
        )
    )
    assert ours.text == theirs


def test_a_tool_result_turn_has_the_same_structure() -> None:
    call = ToolCall("1", "brave_search", {"query": "weather"})
    # (the hf profile: the templates, like pharia, tag every built-in call; Meta's ChatFormat
    # tags only code_interpreter's)
    ours = (
        Llama3(profile="hf")
        .render(
            ChatRequest(
                (user("Weather?"), assistant("", [call]), tool_result(call, "sunny")),
                tools=(brave_search,),
            )
        )
        .text
    )
    theirs = pharia.ChatRequest(
        "m",
        [
            pharia.UserMessage("Weather?"),
            pharia.AssistantMessage(
                tool_calls=[pharia.ToolCall("brave_search", {"query": "weather"})]
            ),
            pharia.ToolMessage("sunny"),
        ],
        tools=[pharia.BraveSearch],
    ).render()
    # Both: a python-tagged call ending with <|eom_id|>, then the result as the ipython role.
    for text in (ours, theirs):
        assert "<|start_header_id|>assistant<|end_header_id|>\n\n<|python_tag|>" in text
        assert "<|eom_id|><|start_header_id|>ipython<|end_header_id|>\n\n" in text
        assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


class GetHTTPStatus(BaseModel):
    """Get the HTTP status of a URL."""

    url: str
    title: str
    type: str


def test_tool_names_and_schemas() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")

        class PhariaTool(pharia.Tool):
            url: str
            title: str
            type: str

        PhariaTool.__name__ = "GetHTTPStatus"
    assert PhariaTool.name() == "get_h_t_t_p_status"
    # Its schema loses the property named "title" (a sibling "type" property is present).
    assert "title" not in PhariaTool.json_schema()["function"]["parameters"]["properties"]

    ours = Tool.from_model(GetHTTPStatus)
    assert ours.name == "get_http_status"
    assert "title" in ours.parameters["properties"]
    text = Llama3(profile="hf").render(ChatRequest((user("check"),), tools=(ours,))).text
    assert '"title": {' in text


def test_builtin_queries_are_escaped() -> None:
    call = ToolCall("1", "brave_search", {"query": 'say "hi"'})
    theirs = pharia.ToolCall("brave_search", pharia.BraveSearch(query='say "hi"')).render()
    assert theirs == 'brave_search.call(query="say "hi"")'
    # (the hf profile: the templates, like pharia, tag every built-in call; Meta's ChatFormat
    # tags only code_interpreter's)
    ours = (
        Llama3(profile="hf")
        .render(
            ChatRequest(
                (user("q"), assistant("", [call]), tool_result(call, "r")), tools=(brave_search,)
            )
        )
        .text
    )
    assert 'brave_search.call(query="say \\"hi\\"")' in ours


def test_several_calls_in_one_turn() -> None:
    raw = '{"name": "f", "parameters": {"a": 1}}; {"name": "g", "parameters": {"b": 2}}<|eot_id|>'
    tools: list[Any] = [
        pharia.JsonSchema(function=pharia.tool.Function(name=n, parameters={"type": "object"}))
        for n in ("f", "g")
    ]
    theirs = pharia.AssistantMessage.from_raw_response(raw, tools)
    assert theirs.tool_calls is None or len(theirs.tool_calls) <= 1
    request = ChatRequest((user("go"),), tools=(Tool.from_schema("f"), Tool.from_schema("g")))
    parsed = Llama3().parse(raw, request)
    assert [(c.name, dict(c.arguments)) for c in parsed.tool_calls] == [
        ("f", {"a": 1}),
        ("g", {"b": 2}),
    ]


def test_the_date_can_be_set() -> None:
    text = (
        Llama3(date=dt.date(2024, 12, 24))
        .render(ChatRequest((user("hi"),), tools=(brave_search,)))
        .text
    )
    assert "Today Date: 24 December 2024" in text


def test_message_order_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="First message must be a user message"):
        pharia.ChatRequest("m", [pharia.AssistantMessage("x")])
    with pytest.raises(MessageError, match="follows no assistant tool call"):
        Llama3().render(ChatRequest((user("a"), tool_result("nope", "r"))))
