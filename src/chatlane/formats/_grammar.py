"""Grammar pieces every format builds its constraints from (llguidance's Lark dialect).

A format's `grammar` writes a forced call in its own syntax out of these: the JSON options,
schemas closed to invented keys, the tools a request forces, a pythonic call, and the grammar
for a response format's JSON schema. Nothing here knows a format.

Whitespace is strict by default (one space after ``:`` and ``,``, as ``json.dumps`` writes):
with flexible whitespace a weak model can emit whitespace forever.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from chatlane.errors import InputError

if TYPE_CHECKING:
    from chatlane.request import ChatRequest
    from chatlane.tools import Tool

__all__ = [
    "call_alternatives",
    "closed_schema",
    "forced_tools",
    "json_options",
    "json_value",
    "pythonic_call_rule",
    "schema_grammar",
]


def json_options(flexible_whitespace: bool) -> dict[str, Any]:
    """llguidance's JSON options: json.dumps separators, whitespace only where allowed."""
    if flexible_whitespace:
        return {"whitespace_flexible": True}
    return {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def closed_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema with every object that does not say otherwise closed to extra properties.

    JSON Schema allows unlisted properties by default, and a grammar built from it lets the
    model invent keys without end. Every output of the closed schema still validates against
    the original one (nothing else changes: optional properties stay optional).
    """

    def close(node: Any) -> Any:
        if not isinstance(node, Mapping):
            return node
        out = dict(node)
        # Recurse only where JSON Schema keeps subschemas, so that a property that happens
        # to be called "properties" or "type" is never taken for a keyword.
        for key in _SCHEMA_MAPS:
            if isinstance(out.get(key), Mapping):
                out[key] = {name: close(sub) for name, sub in out[key].items()}
        for key in _SCHEMA_LISTS:
            if isinstance(out.get(key), list):
                out[key] = [close(sub) for sub in out[key]]
        for key in _SCHEMA_ONE:
            if isinstance(out.get(key), Mapping):
                out[key] = close(out[key])
        if out.get("type") == "object" or "properties" in out:
            out.setdefault("additionalProperties", False)
        return out

    result: dict[str, Any] = close(schema)
    return result


_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains")


def forced_tools(request: ChatRequest) -> list[Tool] | None:
    """The tools one of which the model must call, or None when no call is forced.

    Built-in tools are left to the model's free choice: forcing one raises, and
    ``"required"`` forces one of the others.
    """
    choice = request.tool_choice
    if not request.tools or choice in (None, "auto", "none"):
        return None
    tools = (
        list(request.tools)
        if choice == "required"
        else [t for t in request.tools if t.name == choice]
    )
    builtin = [t.name for t in tools if t.builtin]
    if builtin and choice != "required":
        raise InputError(
            f"the embedded engine cannot force a call of the built-in tool {builtin[0]!r} yet; "
            "use tool_choice='auto'"
        )
    tools = [t for t in tools if not t.builtin]
    if not tools:
        raise InputError(
            "tool_choice='required' needs at least one tool that is not built-in "
            "(the embedded engine cannot force built-in tool calls yet)"
        )
    return tools


def json_value(schema: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    """A Lark term for one JSON value that validates against ``schema``."""
    return f"%json {json.dumps({**schema, 'x-guidance': dict(options)})}"


def call_alternatives(rules: Sequence[str], *, before: str = "", after: str = "") -> str:
    """A grammar whose start is one of ``rules`` (Lark rule bodies), between two literals."""
    names = " | ".join(f"call_{i}" for i in range(len(rules)))
    start = " ".join(part for part in (json.dumps(before) if before else "", f"({names})") if part)
    if after:
        start += f" {json.dumps(after)}"
    return "\n".join([f"start: {start}", *(f"call_{i}: {r}" for i, r in enumerate(rules))])


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def pythonic_call_rule(tool: Tool, options: Mapping[str, Any]) -> str:
    """``get_weather(city="Paris", unit="celsius")``: one pythonic call of ``tool``.

    Every property is written, in the schema's order, as ``name=<JSON value>``: JSON values
    read as Python literals (chatlane's pythonic reader also takes ``true``/``null``), so each
    value is constrained by its own schema. ``$defs`` are carried into every value's schema.
    """
    closed = closed_schema(tool.parameters)
    properties = closed.get("properties") or {}
    defs = {k: closed[k] for k in ("$defs", "definitions") if k in closed}
    parts = [json.dumps(f"{tool.name}(")]
    for i, (name, schema) in enumerate(properties.items()):
        if not _IDENTIFIER.match(name):
            raise InputError(
                f"tool {tool.name!r} has the parameter {name!r}, which is not a Python "
                "identifier and cannot be written as a pythonic call"
            )
        value = {**(schema if isinstance(schema, Mapping) else {}), **defs}
        prefix = f"{', ' if i else ''}{name}="
        parts.append(f"{json.dumps(prefix)} {json_value(value, options)}")
    parts.append('")"')
    return " ".join(parts)


def schema_grammar(request: ChatRequest, options: Mapping[str, Any]) -> str | None:
    """The grammar for the request's response format (a JSON schema), or None if it has none."""
    response_format = request.response_format
    if response_format is None:
        return None
    if response_format.schema is None:
        # Any JSON object was asked for: keys too are the model's choice.
        schema: dict[str, Any] = {"type": "object"}
    else:
        schema = closed_schema(response_format.schema)
    return f"start: {json_value(schema, options)}"
