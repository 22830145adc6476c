"""Mistral's call syntaxes as grammars, for forced tool calls on the embedded engine.

A forced call is written as the format writes calls: ``[TOOL_CALLS]`` (the control token, by
its id) then ``[{"name": ..., "arguments": {...}}]`` (v3, v7) or ``name[ARGS]{...}`` (v11+).
A response format's schema is plain JSON. Either ends with ``</s>``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chatlane.formats import _grammar as G
from chatlane.formats.base import Grammar

if TYPE_CHECKING:
    from chatlane.request import ChatRequest
    from chatlane.tools import Tool

__all__ = ["grammar"]

_ENDS = ("</s>",)


def _parameters(tool: Tool) -> dict[str, Any]:
    return G.closed_schema(tool.parameters)


def _json_call(tool: Tool, options: Mapping[str, Any]) -> str:
    closed = _parameters(tool)
    inner = {k: v for k, v in closed.items() if k not in ("$defs", "definitions")}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": inner},
        "required": ["name", "arguments"],
        "additionalProperties": False,
        **{k: closed[k] for k in ("$defs", "definitions") if k in closed},
    }
    return G.json_value(schema, options)


def grammar(
    request: ChatRequest,
    version: int,
    specials: Mapping[str, int],
    *,
    flexible_whitespace: bool,
) -> Grammar | None:
    """The grammar for ``request`` (see the module docstring); ``specials`` are the
    tokenizer's control tokens (the grammar names them by id)."""
    options = G.json_options(flexible_whitespace)
    tools = G.forced_tools(request)
    if tools is not None:
        calls = f"<[{specials['[TOOL_CALLS]']}]>"
        if version < 11:
            rules = [_json_call(t, options) for t in tools]
            body = G.call_alternatives(rules, before="[", after="]")
        else:
            args = f"<[{specials['[ARGS]']}]>"
            rules = [
                f"{json.dumps(t.name)} {args} {G.json_value(_parameters(t), options)}"
                for t in tools
            ]
            body = G.call_alternatives(rules)
        # The call opens with the control token, not its text.
        first, _, rest = body.partition("\n")
        head = first.removeprefix("start: ")
        return Grammar(f"start: {calls} {head}\n{rest}", True, _ENDS)
    schema = G.schema_grammar(request, options)
    return None if schema is None else Grammar(schema, False, _ENDS)
