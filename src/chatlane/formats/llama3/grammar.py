"""Llama 3's call syntaxes as grammars, for forced tool calls on the embedded engine.

A forced call is written as the format writes calls into the conversation: JSON
(``{"name": ..., "parameters": ...}``, with ``"type": "function"`` first as Meta's
ChatFormat writes it), the function tag (``<function=name>{...}</function>``) or the pythonic
list (``[name(a=1)]``). A response format's schema is plain JSON. An answer ends its turn
(``<|eot_id|>``); a call may also wait for its result (``<|eom_id|>``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from chatlane.formats import _grammar as G
from chatlane.formats.base import Grammar

if TYPE_CHECKING:
    from collections.abc import Mapping

    from chatlane.request import ChatRequest
    from chatlane.tools import Tool

__all__ = ["grammar"]

_ANSWER_ENDS = ("<|eot_id|>",)
_CALL_ENDS = ("<|eot_id|>", "<|eom_id|>")


def _json_call(tool: Tool, options: Mapping[str, Any], typed: bool) -> str:
    # The parameters' local "$ref"s point at their root: lift its definitions to ours.
    closed = G.closed_schema(tool.parameters)
    inner = {k: v for k, v in closed.items() if k not in ("$defs", "definitions")}
    properties: dict[str, Any] = {}
    if typed:
        properties["type"] = {"const": "function"}
    properties["name"] = {"const": tool.name}
    properties["parameters"] = inner
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
        **{k: closed[k] for k in ("$defs", "definitions") if k in closed},
    }
    return G.json_value(schema, options)


def _function_tag_call(tool: Tool, options: Mapping[str, Any]) -> str:
    parameters = G.json_value(G.closed_schema(tool.parameters), options)
    return f'{json.dumps(f"<function={tool.name}>")} {parameters} "</function>"'


def grammar(
    request: ChatRequest, tool_format: str, profile: str, *, flexible_whitespace: bool
) -> Grammar | None:
    """The grammar for ``request`` in the given tool format (see the module docstring)."""
    options = G.json_options(flexible_whitespace)
    tools = G.forced_tools(request)
    if tools is not None:
        if tool_format == "pythonic":
            rules = [G.pythonic_call_rule(t, options) for t in tools]
            return Grammar(G.call_alternatives(rules, before="[", after="]"), True, _CALL_ENDS)
        if tool_format == "function_tag":
            rules = [_function_tag_call(t, options) for t in tools]
        else:
            rules = [_json_call(t, options, typed=profile == "meta") for t in tools]
        return Grammar(G.call_alternatives(rules), True, _CALL_ENDS)
    schema = G.schema_grammar(request, options)
    return None if schema is None else Grammar(schema, False, _ANSWER_ENDS)
