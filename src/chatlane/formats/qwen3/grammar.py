"""Qwen's call syntax as a grammar, for forced tool calls on the embedded engine.

A forced call is written as the model writes calls: ``<tool_call>\\n{"name": ...,
"arguments": {...}}\\n</tool_call>``; a response format's schema is plain JSON. Either ends
the turn with ``<|im_end|>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatlane.formats import _grammar as G
from chatlane.formats.base import Grammar
from chatlane.formats.qwen3.tokenizer import ADDED_TOKENS

if TYPE_CHECKING:
    from collections.abc import Mapping

    from chatlane.request import ChatRequest
    from chatlane.tools import Tool

__all__ = ["grammar"]

_ENDS = ("<|im_end|>",)
# The call tags are added tokens: llguidance sees them as special tokens, which a literal
# string cannot produce, so they are named by id (``<[id]>``, llguidance's Lark syntax).
_OPEN = f'<[{ADDED_TOKENS["<tool_call>"]}]> "\\n"'
_CLOSE = f'"\\n" <[{ADDED_TOKENS["</tool_call>"]}]>'


def _call(tool: Tool, options: Mapping[str, Any]) -> str:
    closed = G.closed_schema(tool.parameters)
    inner = {k: v for k, v in closed.items() if k not in ("$defs", "definitions")}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": inner},
        "required": ["name", "arguments"],
        "additionalProperties": False,
        **{k: closed[k] for k in ("$defs", "definitions") if k in closed},
    }
    return f"{_OPEN} {G.json_value(schema, options)} {_CLOSE}"


def grammar(request: ChatRequest, *, flexible_whitespace: bool = False) -> Grammar | None:
    """The grammar for ``request`` (see the module docstring)."""
    options = G.json_options(flexible_whitespace)
    tools = G.forced_tools(request)
    if tools is not None:
        return Grammar(G.call_alternatives([_call(t, options) for t in tools]), True, _ENDS)
    schema = G.schema_grammar(request, options)
    return None if schema is None else Grammar(schema, False, _ENDS)
