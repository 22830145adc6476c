"""Llama 4's call forms as grammars, for forced tool calls on the embedded engine.

A forced call is written as the profile writes calls into the conversation: the meta
profile as a pythonic list (``[name(a=1)]``, what Meta's system prompt asks for), the hf
profile as JSON (``{"name": ..., "parameters": ...}``, as the chat template writes calls).
A response format's schema is plain JSON. An answer ends its turn (``<|eot|>``); a call may
also wait for its result (``<|eom|>``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatlane.formats import _grammar as G
from chatlane.formats.base import Grammar

if TYPE_CHECKING:
    from collections.abc import Mapping

    from chatlane.request import ChatRequest
    from chatlane.tools import Tool

__all__ = ["grammar"]

_ANSWER_ENDS = ("<|eot|>",)
_CALL_ENDS = ("<|eot|>", "<|eom|>")


def _json_call(tool: Tool, options: Mapping[str, Any]) -> str:
    # The parameters' local "$ref"s point at their root: lift its definitions to ours.
    closed = G.closed_schema(tool.parameters)
    inner = {k: v for k, v in closed.items() if k not in ("$defs", "definitions")}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "parameters": inner},
        "required": ["name", "parameters"],
        "additionalProperties": False,
        **{k: closed[k] for k in ("$defs", "definitions") if k in closed},
    }
    return G.json_value(schema, options)


def grammar(request: ChatRequest, profile: str, *, flexible_whitespace: bool) -> Grammar | None:
    """The grammar for ``request`` in the profile's call form (see the module docstring)."""
    options = G.json_options(flexible_whitespace)
    tools = G.forced_tools(request)
    if tools is not None:
        if profile == "meta":
            rules = [G.pythonic_call_rule(t, options) for t in tools]
            return Grammar(G.call_alternatives(rules, before="[", after="]"), True, _CALL_ENDS)
        rules = [_json_call(t, options) for t in tools]
        return Grammar(G.call_alternatives(rules), True, _CALL_ENDS)
    schema = G.schema_grammar(request, options)
    return None if schema is None else Grammar(schema, False, _ANSWER_ENDS)
