"""gpt-oss's call syntax as a grammar, for forced tool calls on the embedded engine.

A forced call is the message the model writes for one:
``<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}<|call|>``, its
arguments constrained by the tool's schema. A response format is its JSON alone (the
engine reads it as text), ending with ``<|return|>``. The control tokens are named by id
(``<[id]>``): llguidance cannot produce a special token from a literal string.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from chatlane.formats import _grammar as G
from chatlane.formats.base import Grammar
from chatlane.formats.harmony.tokenizer import SPECIAL_TOKENS

if TYPE_CHECKING:
    from chatlane.request import ChatRequest

__all__ = ["grammar"]


def _t(text: str) -> str:
    return f"<[{SPECIAL_TOKENS[text]}]>"


def grammar(request: ChatRequest, *, flexible_whitespace: bool = False) -> Grammar | None:
    """The grammar for ``request`` (see the module docstring)."""
    options = G.json_options(flexible_whitespace)
    tools = G.forced_tools(request)
    if tools is not None:
        rules = [
            f"{_t('<|channel|>')} {json.dumps(f'commentary to=functions.{t.name} ')} "
            f'{_t("<|constrain|>")} "json" {_t("<|message|>")} '
            f"{G.json_value(G.closed_schema(t.parameters), options)} {_t('<|call|>')}"
            for t in tools
        ]
        return Grammar(G.call_alternatives(rules), True, ("<|call|>",))
    # A response format's output is read as plain text (the engine does not parse it), so it
    # is the JSON alone, without a channel header, ended by <|return|>.
    schema = G.schema_grammar(request, options)
    return None if schema is None else Grammar(schema, False, ("<|return|>",))
