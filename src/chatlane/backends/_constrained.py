"""Constrained decoding for the embedded engine, with llguidance.

A request's ``response_format`` (a JSON schema) or a forced tool call (``tool_choice`` set to
``"required"`` or a tool's name) becomes an llguidance grammar; at each step the grammar's
token mask is applied to the logits, so the output always parses and validates.

Why llguidance and not llama-cpp-python's own JSON-schema converter: that converter lets raw
control characters into strings (its outputs failed a strict ``json.loads`` 4 times in 10)
and ignores ``minimum``/``maximum`` (measured with llama-cpp-python 0.3.36, see ENGINE.md).

Forced calls are written in the prompt format's own syntax: JSON (``{"name": ...,
"parameters": ...}``, with ``"type": "function"`` first as Meta writes it), the function tag
(``<function=name>{...}</function>``) or the pythonic list (``[name(a=1)]``).

Whitespace is strict by default (one space after ``:`` and ``,``, as ``json.dumps`` writes):
with flexible whitespace a weak model can emit whitespace forever.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from chatlane.errors import InputError, SchemaError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from chatlane.request import ChatRequest
    from chatlane.tools import Tool

__all__ = ["Constraint", "grammar_for", "json_options"]


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


def _forced_tools(request: ChatRequest) -> list[Tool] | None:
    """The tools one of which the model must call, or None when no call is forced."""
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


def _call_rule(
    tool: Tool, tool_format: str, options: Mapping[str, Any], typed_json_calls: bool
) -> str:
    """A Lark rule body for one call of ``tool`` in the prompt format's own syntax."""
    closed = closed_schema(tool.parameters)
    parameters = {**closed, "x-guidance": dict(options)}
    if tool_format == "json":
        # Llama 3's JSON tool calls, as the format writes them into the conversation:
        # {"type": "function", "name": ..., "parameters": {...}} (llama-models' ChatFormat)
        # or {"name": ..., "parameters": {...}} (the Hugging Face templates).
        # The parameters' local "$ref"s point at their root: lift its definitions to ours.
        inner = {k: v for k, v in closed.items() if k not in ("$defs", "definitions")}
        properties: dict[str, Any] = {}
        if typed_json_calls:
            properties["type"] = {"const": "function"}
        properties["name"] = {"const": tool.name}
        properties["parameters"] = inner
        schema: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
            **{k: closed[k] for k in ("$defs", "definitions") if k in closed},
            "x-guidance": dict(options),
        }
        return f"%json {json.dumps(schema)}"
    if tool_format == "function_tag":
        # <function=get_weather>{"city": "Paris"}</function> (Llama 3.1's custom tool format).
        return (
            f'{json.dumps(f"<function={tool.name}>")} %json {json.dumps(parameters)} "</function>"'
        )
    if tool_format == "pythonic":
        return _pythonic_rule(tool, closed, options)
    raise InputError(
        f"the embedded engine cannot force tool calls in the {tool_format!r} tool format yet "
        "(it can in 'json', 'function_tag' and 'pythonic'); use tool_choice='auto'"
    )


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _pythonic_rule(tool: Tool, closed: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    """``get_weather(city="Paris", unit="celsius")``: Llama 3.2/3.3's pythonic call.

    Every property is written, in the schema's order, as ``name=<JSON value>``: JSON values
    read as Python literals (chatlane's pythonic reader also takes ``true``/``null``), so each
    value is constrained by its own schema. ``$defs`` are carried into every value's schema.
    """
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
        value["x-guidance"] = dict(options)
        prefix = f"{', ' if i else ''}{name}="
        parts.append(f"{json.dumps(prefix)} %json {json.dumps(value)}")
    parts.append('")"')
    return " ".join(parts)


def grammar_for(
    request: ChatRequest,
    tool_format: str,
    *,
    flexible_whitespace: bool = False,
    typed_json_calls: bool = False,
) -> tuple[str, bool] | None:
    """The llguidance grammar a request needs, and whether it is a tool call; None if free.

    A forced tool call wins over ``response_format`` (the answer is then a call, not text).
    ``typed_json_calls`` puts ``"type": "function"`` first in JSON calls, as Meta's reference
    writes them.
    """
    import llguidance

    options = json_options(flexible_whitespace)
    tools = _forced_tools(request)
    if tools is not None:
        rules = [
            f"call_{i}: {_call_rule(t, tool_format, options, typed_json_calls)}"
            for i, t in enumerate(tools)
        ]
        calls = " | ".join(f"call_{i}" for i in range(len(tools)))
        # A pythonic answer is a list of calls: [get_weather(city="Paris")].
        start = f'start: "[" ({calls}) "]"' if tool_format == "pythonic" else f"start: {calls}"
        return llguidance.LLMatcher.grammar_from_lark("\n".join([start, *rules])), True
    response_format = request.response_format
    if response_format is None:
        return None
    if response_format.schema is None:
        # Any JSON object was asked for: keys too are the model's choice.
        schema: dict[str, Any] = {"type": "object"}
    else:
        schema = closed_schema(response_format.schema)
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=options)  # type: ignore[arg-type]
    except ValueError as e:
        raise SchemaError(f"the response format's schema cannot be used: {e}") from e
    return grammar, False


class Constraint:
    """One request's grammar state: masks the logits, follows the sampled tokens.

    Args:
        tokenizer: llguidance's view of the model's vocabulary (built once per model).
        grammar: from `grammar_for`.
        n_vocab: the model's vocabulary size (the logits' length).
        end_tokens: the tokens that may end the output once the grammar is complete.
        eog_tokens: every token that ends generation (only ``end_tokens`` of them are allowed).
        what: named in errors ("the response format", "the forced tool call").
        is_call: the grammar is a forced tool call (else a response format).
    """

    def __init__(
        self,
        tokenizer: Any,
        grammar: str,
        n_vocab: int,
        end_tokens: Sequence[int],
        eog_tokens: Sequence[int],
        what: str,
        *,
        is_call: bool = False,
    ) -> None:
        import llguidance
        import numpy

        self._numpy = numpy
        self.matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if self.matcher.is_error():
            raise SchemaError(f"{what} cannot be turned into a grammar: {self.matcher.get_error()}")
        self._n_vocab = n_vocab
        self._end_tokens = list(end_tokens)
        self._eog_tokens = list(eog_tokens)
        self._what = what
        self.is_call = is_call

    def __call__(
        self, input_ids: npt.NDArray[np.intc], logits: npt.NDArray[np.single]
    ) -> npt.NDArray[np.single]:
        """A llama-cpp-python logits processor: forbid every token the grammar forbids."""
        numpy = self._numpy
        mask = numpy.frombuffer(self.matcher.compute_bitmask(), dtype=numpy.uint8)
        allowed = numpy.unpackbits(mask, bitorder="little", count=self._n_vocab).astype(bool)
        if self.matcher.is_accepting():
            # The grammar allows its own end token(s); end only with ours (e.g. <|eot_id|>
            # for an answer, so that it never reads as waiting for a tool result).
            allowed[self._eog_tokens] = False
            allowed[self._end_tokens] = True
        out: npt.NDArray[np.single] = numpy.where(allowed, logits, -numpy.inf).astype(numpy.single)
        return out

    def consume(self, token: int) -> None:
        """Follow the sampled token (the mask makes any other impossible)."""
        if not self.matcher.consume_token(token):
            from chatlane.errors import EngineError

            raise EngineError(
                f"{self._what}: the grammar rejected a sampled token: {self.matcher.get_error()}"
            )

    @property
    def complete(self) -> bool:
        """The output is complete: the grammar accepts nothing but its end."""
        return self.matcher.is_stopped()
