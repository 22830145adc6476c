"""The texts of the Llama 4 prompts: the pythonic tool-calling system prompt (meta), the
JSON tool instructions (hf), and how calls are written into the conversation.

The meta texts are those of llama-stack's Llama 4 prompt generator
(``llama_stack/models/llama/llama4/prompt_templates/system_prompts.py``,
``PythonListCustomToolGenerator``) and of ``llama_stack/providers/utils/inference/
prompt_adapter.py`` (``augment_messages_for_tools_llama``), as llama-stack 0.2.12 renders
them. The hf texts are those of the official chat template
(tests/conformance/data/meta-llama-Llama-4-Scout-17B-16E-Instruct.jinja).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from chatlane.messages import ToolCall
from chatlane.tools import Tool

__all__ = [
    "FIXED_TEXTS",
    "SYSTEM_PROMPT_HEAD",
    "function_description",
    "function_segments",
    "hf_call",
    "hf_tool_definition",
    "hf_tools_text",
    "meta_system_segments",
    "meta_system_text",
    "pythonic_call",
    "pythonic_calls",
    "tool_choice_prompt",
]

# llama-stack's DEFAULT_PROMPT up to its ``{{ function_description }}``.
SYSTEM_PROMPT_HEAD = (
    "You are a helpful assistant and an expert in function composition. You can answer general questions using your internal knowledge OR invoke functions when necessary. Follow these strict guidelines:\n"
    "\n"
    "1. FUNCTION CALLS:\n"
    "- ONLY use functions that are EXPLICITLY listed in the function list below\n"
    '- If NO functions are listed (empty function list []), respond ONLY with internal knowledge or "I don\'t have access to [Unavailable service] information"\n'
    '- If a function is not in the list, respond ONLY with internal knowledge or "I don\'t have access to [Unavailable service] information"\n'
    "- If ALL required parameters are present AND the query EXACTLY matches a listed function's purpose: output ONLY the function call(s)\n"
    "- Use exact format: [func_name1(param1=value1, param2=value2), func_name2(...)]\n"
    "Examples:\n"
    'CORRECT: [get_weather(location="Vancouver"), calculate_route(start="Boston", end="New York")] <- Only if get_weather and calculate_route are in function list\n'
    'INCORRECT: get_weather(location="New York")\n'
    'INCORRECT: Let me check the weather: [get_weather(location="New York")]\n'
    'INCORRECT: [get_events(location="Singapore")] <- If function not in list\n'
    "\n"
    "2. RESPONSE RULES:\n"
    "- For pure function requests matching a listed function: ONLY output the function call(s)\n"
    "- For knowledge questions: ONLY output text\n"
    "- For missing parameters: ONLY request the specific missing parameters\n"
    '- For unavailable services (not in function list): output ONLY with internal knowledge or "I don\'t have access to [Unavailable service] information". Do NOT execute a function call.\n'
    "- If the query asks for information beyond what a listed function provides: output ONLY with internal knowledge about your limitations\n"
    "- NEVER combine text and function calls in the same response\n"
    "- NEVER suggest alternative functions when the requested service is unavailable\n"
    "- NEVER create or invent new functions not listed below\n"
    "\n"
    "3. STRICT BOUNDARIES:\n"
    "- ONLY use functions from the list below - no exceptions\n"
    "- NEVER use a function as an alternative to unavailable information\n"
    "- NEVER call functions not present in the function list\n"
    "- NEVER add explanatory text to function calls\n"
    "- NEVER respond with empty brackets\n"
    "- Use proper Python/JSON syntax for function calls\n"
    "- Check the function list carefully before responding\n"
    "\n"
    "4. TOOL RESPONSE HANDLING:\n"
    "- When receiving tool responses: provide concise, natural language responses\n"
    "- Don't repeat tool response verbatim\n"
    "- Don't add supplementary information\n"
    "\n"
)

FUNCTION_PLACEHOLDER = "{{ function_description }}"
"""Where a replacing system prompt may put the function list (as llama-stack's does)."""

HF_CALL_INSTRUCTION = (
    'Respond in the format {"name": function name, "parameters": dictionary of argument '
    "name and its value}.Do not use variables.\n\n"
)
HF_USER_INTRO = (
    "Given the following functions, please respond with a JSON for a function call "
    "with its proper arguments that best answers the given prompt.\n\n"
)
HF_SYSTEM_INTRO = (
    "You have access to the following functions. To call a function, please respond "
    "with JSON for a function call."
)


def _jinja_str(value: Any) -> str:
    # What ``{{ value }}`` writes in a Jinja template: str() of the value.
    return str(value)


def _htmlsafe_json(value: Any) -> str:
    # Jinja's own ``tojson`` filter (llama-stack renders with a plain jinja2.Template).
    text = json.dumps(value, sort_keys=True)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("'", "\\u0027")
    )


INTRO = "Here is a list of functions in JSON format that you can invoke:\n[\n"
"""The function list's opening line and bracket."""


def _line(indent: int, rest: str, out: list[str]) -> None:
    # One line of the function list as two segments: its indentation but the last space,
    # and the rest from that space to the line's end (see `function_segments`).
    out.append(_INDENTS[indent])
    out.append(rest)


_INDENTS = {n: " " * (n - 1) for n in (4, 8, 12, 16, 20)}


def function_segments(tools: Sequence[Tool]) -> list[str]:
    """The function list of llama-stack's Llama 4 system prompt, cut where Llama 4's
    tokenizer always ends a piece, whatever the values: after each line's newline (every
    line ends in punctuation, which takes the newline into its piece and stops at the next
    line's indentation) and before the last space of each indentation (a run of spaces
    before a non-space is a piece of its own). Tokenizing the segments one by one gives the
    tokens of their join, and most segments are fixed texts (`FIXED_TEXTS`).

    A tool's JSON schema is read as llama-stack's tool definitions hold it: each property's
    ``type`` (as text), ``description``, whether ``required`` lists it, and its ``default``
    (written only when truthy, as the template does).
    """
    out: list[str] = []
    for i, tool in enumerate(tools):
        properties: Mapping[str, Any] = tool.parameters.get("properties") or {}
        required_names = tool.parameters.get("required") or []
        required = [name for name in properties if name in required_names]
        _line(4, " {\n", out)
        _line(8, f' "name": "{tool.name}",\n', out)
        _line(8, f' "description": "{_jinja_str(tool.description)}",\n', out)
        _line(8, ' "parameters": {\n', out)
        _line(12, ' "type": "dict",\n', out)
        _line(12, f' "required": {_htmlsafe_json(required)},\n', out)
        _line(12, ' "properties": {\n', out)
        items = list(properties.items())
        for j, (name, schema) in enumerate(items):
            schema = schema if isinstance(schema, Mapping) else {}
            default = schema.get("default")
            _line(16, f' "{name}": {{\n', out)
            _line(20, f' "type": "{_jinja_str(schema.get("type"))}",\n', out)
            description = f' "description": "{_jinja_str(schema.get("description"))}"'
            if default:
                _line(20, description + ",\n", out)
                _line(20, f' "default": "{_jinja_str(default)}"\n', out)
            else:
                _line(20, description + "\n", out)
            _line(16, " },\n" if j < len(items) - 1 else " }\n", out)
        _line(12, " }\n", out)
        _line(8, " }\n", out)
        _line(4, " },\n" if i < len(tools) - 1 else " }\n", out)
    return out


def function_description(tools: Sequence[Tool]) -> str:
    """The function list of llama-stack's Llama 4 system prompt (see `function_segments`)."""
    return INTRO + "".join(function_segments(tools)) + "]"


def tool_choice_prompt(choice: str | None) -> str:
    """The sentence llama-stack adds for ``tool_choice`` (empty for auto and none)."""
    if choice in (None, "auto", "none"):
        return ""
    if choice == "required":
        return "You MUST use one of the provided functions/tools to answer the user query."
    return f"You MUST use the tool `{choice}` to answer the user query."


def meta_system_segments(
    system_text: str | None,
    tools: Sequence[Tool],
    tool_choice: str | None,
    behavior: str,
) -> list[str]:
    """The system message llama-stack writes for Llama 4 (``augment_messages_for_tools_llama``
    with the Llama 4 generator): the pythonic tool prompt when there are tools, the caller's
    system text appended (or, with ``behavior="replace"``, in place of the default prompt),
    the tool_choice sentence; stripped of newlines at both ends.

    In segments whose tokens, one by one, are those of the whole text (the default prompt
    and the function list's opening, one fixed text; the function list's lines; the rest).
    """
    choice = tool_choice_prompt(tool_choice if tools else None)
    tail = ""
    if system_text is not None and (behavior == "append" or not tools):
        tail += system_text
    if choice:
        tail += "\n" + choice
    if not tools:
        return [tail.strip("\n")]
    if system_text and behavior == "replace":
        # llama-stack renders the replacing prompt as a Jinja template with the function
        # list as its variable (an empty one falls back to the default prompt): only that
        # placeholder is filled in here (the caller's text is never run as a template),
        # and Jinja drops one trailing newline.
        head = system_text[:-1] if system_text.endswith("\n") else system_text
        text = head.replace(FUNCTION_PLACEHOLDER, function_description(tools)) + "\n" + tail
        return [text.strip("\n")]
    # The function list ends with "]": the rest is one segment with it ("]" takes the
    # newlines and slashes that follow into its piece).
    return [PROMPT_PREFIX, *function_segments(tools), ("]\n" + tail).rstrip("\n")]


def meta_system_text(
    system_text: str | None,
    tools: Sequence[Tool],
    tool_choice: str | None,
    behavior: str,
) -> str:
    """The text of `meta_system_segments`."""
    return "".join(meta_system_segments(system_text, tools, tool_choice, behavior))


def _py_value(value: Any) -> str:
    # A Python literal, written as Meta's ToolUtils writes the values they agree on
    # (strings in double quotes, True/False/None, lists); strings are escaped and mappings
    # are dict literals, which Meta's writer leaves unescaped or writes as {k=v}.
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None or isinstance(value, bool | int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else json.dumps(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_py_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return (
            "{" + ", ".join(f"{_py_value(str(k))}: {_py_value(v)}" for k, v in value.items()) + "}"
        )
    return json.dumps(str(value), ensure_ascii=False)


def pythonic_call(call: ToolCall) -> str:
    """``name(a=1, b="x")``: one call as the Llama 4 system prompt asks for it."""
    if not call.valid:
        # Arguments that never parsed: kept as the model wrote them.
        return f"{call.name}({call.raw_arguments})"
    args = ", ".join(f"{k}={_py_value(v)}" for k, v in call.arguments.items())
    return f"{call.name}({args})"


def pythonic_calls(calls: Sequence[ToolCall]) -> str:
    """``[f(a=1), g()]``: a turn's calls in one list."""
    return "[" + ", ".join(pythonic_call(c) for c in calls) + "]"


def hf_tool_definition(tool: Tool) -> dict[str, Any]:
    """A tool as transformers hands it to a chat template (``{"type": "function", ...}``)."""
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    function["parameters"] = dict(tool.parameters)
    return {"type": "function", "function": function}


def hf_tools_text(tools: Sequence[Tool]) -> str:
    """The template's tool list: each definition as ``tojson(indent=4)`` and a blank line."""
    return "".join(
        json.dumps(hf_tool_definition(t), ensure_ascii=False, indent=4) + "\n\n" for t in tools
    )


def hf_call(call: ToolCall) -> str:
    """``{"name": "f", "parameters": {...}}``: a call as the template writes it."""
    arguments = (
        json.dumps(dict(call.arguments), ensure_ascii=False) if call.valid else call.raw_arguments
    )
    return '{"name": "' + call.name + '", "parameters": ' + arguments + "}"


PROMPT_PREFIX = SYSTEM_PROMPT_HEAD + INTRO
"""The system prompt up to its first tool: a fixed text, tokenized once."""

FIXED_TEXTS: tuple[str, ...] = (
    PROMPT_PREFIX,
    *_INDENTS.values(),
    " {\n",
    " }\n",
    " },\n",
    ' "parameters": {\n',
    ' "type": "dict",\n',
    ' "properties": {\n',
    ' "type": "string",\n',
    ' "type": "integer",\n',
    ' "type": "boolean",\n',
    ' "type": "number",\n',
    ' "type": "array",\n',
    ' "type": "object",\n',
    ' "required": [],\n',
    ' "description": "None"\n',
)
"""The texts every tool prompt repeats, whose tokens the tokenizer computes when it loads."""
