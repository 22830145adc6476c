"""The texts Llama 3.x prompts put around tools: system-prompt blocks and tool calls.

Two sources define them, and chatlane follows each exactly where it is exact:

- ``meta``: the prompt templates of Meta's ``llama-models`` (the generators behind the
  published prompt_format.md pages for 3.1, 3.2 and 3.3) and its ``ToolUtils`` call encoding;
- ``hf``: the official Hugging Face chat templates.

Where a source produces broken output (a quote inside a description ending a JSON string
early, a pythonic dict written ``{k=v}``), chatlane writes the valid form instead; for every
input the sources render correctly the text is identical. docs/llama3-format.md lists each
such choice.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from chatlane.messages import ToolCall
from chatlane.tools import Tool

BUILTIN_NAMES = ("brave_search", "wolfram_alpha", "code_interpreter")
KNOWLEDGE_CUTOFF = "Cutting Knowledge Date: December 2023"


# -- dates -----------------------------------------------------------------------------


def meta_date(date: _dt.date) -> str:
    """Meta's date style, ``21 September 2024`` (``%d %B %Y``, as llama-models writes it)."""
    return f"{date.day:02d} {_MONTHS[date.month - 1]} {date.year}"


def hf_date(date: _dt.date) -> str:
    """The Hugging Face templates' date style, ``26 Jul 2024`` (``%d %b %Y``)."""
    return f"{date.day:02d} {_MONTHS[date.month - 1][:3]} {date.year}"


# Spelled out rather than strftime'd: strftime follows the process locale.
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


# -- JSON helpers ------------------------------------------------------------------------

# The C encoders behind json.dumps(str, ensure_ascii=False) and json.dumps(str).
_encode_str = json.encoder.encode_basestring
_encode_ascii = json.encoder.encode_basestring_ascii


def _make_dumps() -> Callable[[Any], str]:
    # json.dumps(value) with its default settings, on an encoder built once: json.dumps
    # builds a new C encoder on every call, which costs more than encoding a small object.
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return json.dumps
    # (no markers for the circular-reference check: the C encoder leaves stale ones behind
    # after an error; a circular value fails on the recursion limit and goes to json.dumps)
    encode = make(
        None, json.JSONEncoder().default, _encode_ascii, None, ": ", ", ", False, False, True
    )

    def dumps(value: Any) -> str:
        try:
            return "".join(encode(value, 0))
        except Exception:
            # json.dumps raises the error it always raised (or encodes what the C encoder
            # alone cannot, such as a Mapping that is not a dict).
            return json.dumps(value)

    return dumps


dumps = _make_dumps()
"""``json.dumps(value)`` (the default settings: ASCII, ``", "`` and ``": "``), faster."""


def json_inner(text: str) -> str:
    """``text`` as the inside of a JSON string (quotes, backslashes and controls escaped)."""
    # json.dumps(text, ensure_ascii=False) without its Python-level dispatch.
    return str(_encode_str(text))[1:-1]


def jinja_tojson(value: Any) -> str:
    """What Jinja's own ``tojson`` filter writes (sorted keys, ASCII, HTML-safe), which
    llama-models' templates use for parameter lists."""
    text = None
    if type(value) is list:
        # A list of names (the "required" list): what json.dumps writes, without building an
        # encoder for sort_keys on each call (a non-str item takes json.dumps).
        with contextlib.suppress(TypeError):
            text = "[" + ", ".join(map(_encode_ascii, value)) + "]"
    if text is None:
        text = json.dumps(value, sort_keys=True)
    if "<" in text or ">" in text or "&" in text or "'" in text:
        text = (
            text.replace("<", "\\u003c")
            .replace(">", "\\u003e")
            .replace("&", "\\u0026")
            .replace("'", "\\u0027")
        )
    return text


def param_type(schema: Mapping[str, Any]) -> str:
    """A parameter's type as llama-stack's tool definitions carry it: ``str()`` of the
    schema's ``type`` (``"None"`` when it has none), as its OpenAI adapter converts them."""
    return str(schema.get("type"))


def _properties(tool: Tool) -> list[tuple[str, Mapping[str, Any], bool]]:
    props = tool.parameters.get("properties", {})
    required = set(tool.parameters.get("required", []))
    return [
        # (the dict test first: an isinstance against the Mapping ABC is slow)
        (
            name,
            schema if type(schema) is dict or isinstance(schema, Mapping) else {},
            name in required,
        )
        for name, schema in props.items()
    ]


# -- meta: tool definitions -----------------------------------------------------------------


def meta_system_default(date: str) -> str:
    """llama-stack's SystemDefaultGenerator: the knowledge cutoff and today's date."""
    return f"{KNOWLEDGE_CUTOFF}\nToday Date: {date}"


def meta_builtin_block(tools: Sequence[Tool]) -> str:
    """llama-stack's BuiltinToolGenerator: ``Environment: ipython`` and, for the built-ins
    but code_interpreter (implied by the environment), a ``Tools:`` line."""
    listed = [t.name for t in tools if t.builtin and t.name != "code_interpreter"]
    if listed:
        return "Environment: ipython\nTools: " + ", ".join(listed)
    return "Environment: ipython\n"


_JSON_TOOLS_HEAD = (
    "Answer the user's question by making use of the following functions if needed.\n"
    "If none of the function can be used, please say so.\n"
    "Here is a list of functions in JSON format:\n"
)
_JSON_TOOLS_TAIL = "\nReturn function calls in JSON format."
# The fixed text between the variable values of JSON tool definitions. Each piece ends
# where Llama 3's regex ends a piece whatever follows: after ``":`` (a value follows after a
# space) or after an indent's first spaces (the last space goes with the value's quote).
_JSON_TOOL_OPEN = '{\n    "type": "function",\n    "function": {\n        "name":'
_JSON_DESCRIPTION = '        "description":'
_JSON_PARAMETERS = (
    '        "parameters": {\n            "type": "object",\n            "properties": ['
)
_JSON_PROPERTY_OPEN = "\n                {\n" + " " * 19
_JSON_PROPERTY_TYPE = (
    '                        "type": "object",\n                        "description":'
)
_JSON_PROPERTY_CLOSE = "                    }\n                }"
_JSON_REQUIRED = '\n            ],\n            "required":'
_JSON_TOOL_CLOSE = "        }\n    }\n}\n"

# The fixed texts as they stand between two values, built once: segments made of these very
# objects are found in the tokenizer's table by identity, without hashing a new string.
_HEAD_OPEN = _JSON_TOOLS_HEAD + _JSON_TOOL_OPEN
_HEAD_TAIL = _JSON_TOOLS_HEAD + _JSON_TOOLS_TAIL
_CLOSE_OPEN = _JSON_TOOL_CLOSE + _JSON_TOOL_OPEN
_CLOSE_TAIL = _JSON_TOOL_CLOSE + _JSON_TOOLS_TAIL
_PARAMETERS_OPEN = _JSON_PARAMETERS + _JSON_PROPERTY_OPEN
_PARAMETERS_REQUIRED = _JSON_PARAMETERS + _JSON_REQUIRED
_PROPERTY_NEXT = _JSON_PROPERTY_CLOSE + "," + _JSON_PROPERTY_OPEN
_PROPERTY_REQUIRED = _JSON_PROPERTY_CLOSE + _JSON_REQUIRED

FIXED_TEXTS = (
    _HEAD_OPEN,
    _HEAD_TAIL,
    _CLOSE_OPEN,
    _CLOSE_TAIL,
    _JSON_DESCRIPTION,
    _PARAMETERS_OPEN,
    _PARAMETERS_REQUIRED,
    _JSON_PROPERTY_TYPE,
    _PROPERTY_NEXT,
    _PROPERTY_REQUIRED,
)
"""The fixed texts of tool-definition prompts, whose tokens the tokenizer precomputes."""


def meta_json_tools(tools: Sequence[Tool]) -> str:
    """llama-models' JsonCustomToolGenerator (the 3.1 "JSON based tool calling" prompt)."""
    return "".join(meta_json_tools_segments(tools))


def meta_json_tools_segments(tools: Sequence[Tool]) -> list[str]:
    """`meta_json_tools` cut where Llama 3's regex always ends a piece: fixed texts (from
    `FIXED_TEXTS`, at even places) and values (at odd places), so that the tokens of the
    whole text are the tokens of its segments, each tokenized on its own.

    Each value starts with a space before a quote or bracket and, where a line follows,
    ends with its line break. A fixed text before a value ends with ``":`` (no piece runs
    from punctuation across a space) or with all but the last space of an indent (a run of
    spaces before a non-space leaves its last space to the next piece); a line after a line
    break always starts a piece. tests/formats/test_tokenizer_paths.py checks the cuts
    against Meta's tokenizer on the whole text.
    """
    out: list[str] = []
    append = out.append
    fixed = _HEAD_OPEN
    for tool in tools:
        parameters = tool.parameters
        props = parameters.get("properties", {})
        required = parameters.get("required", [])
        append(fixed)
        append(f" {_encode_str(tool.name)},\n")
        append(_JSON_DESCRIPTION)
        # (a missing description is written "None", as the template's {{tdesc}} writes it)
        append(f" {_encode_str(str(tool.description))},\n")
        fixed = _PARAMETERS_OPEN if props else _PARAMETERS_REQUIRED
        names = []
        for name, schema in props.items():
            append(fixed)
            append(f" {_encode_str(name)}: {{\n")
            append(_JSON_PROPERTY_TYPE)
            # (the dict test first: an isinstance against the Mapping ABC is slow)
            description = (
                schema.get("description")
                if type(schema) is dict or isinstance(schema, Mapping)
                else None
            )
            append(f" {_encode_str(str(description))}\n")
            fixed = _PROPERTY_NEXT
            if name in required:
                names.append(name)
        if props:
            fixed = _PROPERTY_REQUIRED
        append(fixed)
        append(f" {jinja_tojson(names)}\n")
        fixed = _CLOSE_OPEN
    append(_CLOSE_TAIL if tools else _HEAD_TAIL)
    return out


def meta_function_tag_tools(tools: Sequence[Tool]) -> str:
    """llama-models' FunctionTagCustomToolGenerator (the ``<function=name>`` prompt)."""
    out = ["You have access to the following functions:\n\n"]
    for tool in tools:
        params = {
            name: {
                "description": schema.get("description"),
                "param_type": param_type(schema),
                "required": required,
            }
            for name, schema, required in _properties(tool)
        }
        desc = json_inner(str(tool.description))
        name = json_inner(tool.name)
        out.append(
            f"Use the function '{name}' to '{desc}':\n"
            f'{{"name": "{name}", "description": "{desc}", "parameters": {jinja_tojson(params)}}}\n\n'
        )
    out.append(
        "Think very carefully before calling functions.\n"
        "If you choose to call a function ONLY reply in the following format with no prefix or suffix:\n"
        "\n"
        '<function=example_function_name>{"example_name": "example_value"}</function>\n'
        "\n"
        "Reminder:\n"
        "- If looking for real time information use relevant functions before falling back to brave_search\n"
        "- Function calls MUST follow the specified format, start with <function= and end with </function>\n"
        "- Required parameters MUST be specified\n"
        "- Only call one function at a time\n"
        "- Put the entire function call reply on one line"
    )
    return "".join(out)


PYTHONIC_PROMPT = (
    "You are a helpful assistant. You have access to functions, but you should only use them if they are required.\n"
    "You are an expert in composing functions. You are given a question and a set of possible functions.\n"
    "Based on the question, you may or may not need to make one function/tool call to achieve the purpose.\n"
    "\n"
    "If you decide to invoke any of the function(s), you MUST put it in the format of [func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]\n"
    "If you decide to invoke a function, you SHOULD NOT include any other text in the response. besides the function call in the above format.\n"
    "For a boolean parameter, be sure to use `True` or `False` (capitalized) for the value.\n"
    "\n"
    "\n"
)
"""llama-stack's PythonListCustomToolGenerator.DEFAULT_PROMPT, before its function list."""

_PLACEHOLDER = re.compile(r"\{\{\s*function_description\s*\}\}")


def meta_pythonic_tools(tools: Sequence[Tool], system_text: str | None = None) -> str:
    """llama-stack's PythonListCustomToolGenerator (the 3.2/3.3 system prompt): its default
    prompt and the function list, or, for ``system_message_behavior="replace"``, the
    caller's system text with the list where it says ``{{ function_description }}``.

    llama-stack renders that text as a Jinja template; chatlane substitutes the placeholder
    alone (other template syntax stays text) and does what Jinja does to a template's text:
    line breaks become ``\\n`` and one trailing line break is dropped.
    """
    listed = _pythonic_function_list(tools)
    if system_text is None:
        return PYTHONIC_PROMPT + listed
    text = system_text.replace("\r\n", "\n").replace("\r", "\n")
    if text.endswith("\n"):
        text = text[:-1]
    return _PLACEHOLDER.sub(lambda _: listed, text)


def _pythonic_function_list(tools: Sequence[Tool]) -> str:
    # PythonListCustomToolGenerator._gen_function_description, written out: its JSON is
    # built by hand in the template (values inserted raw; chatlane escapes what would end
    # a string early).
    entries = []
    for tool in tools:
        props = []
        required = []
        for name, schema, req in _properties(tool):
            if req:
                required.append(name)
            default = schema.get("default")
            prop = (
                f'                "{json_inner(name)}": {{\n'
                f'                    "type": "{json_inner(param_type(schema))}",\n'
                f'                    "description": "{json_inner(str(schema.get("description")))}"'
            )
            if default:
                prop += f',\n                    "default": "{json_inner(str(default))}"'
            props.append(prop + "\n                }")
        entries.append(
            "{\n"
            f'        "name": "{json_inner(tool.name)}",\n'
            f'        "description": "{json_inner(str(tool.description))}",\n'
            '        "parameters": {\n'
            '            "type": "dict",\n'
            f'            "required": {jinja_tojson(required)},\n'
            '            "properties": {' + ",".join("\n" + p for p in props) + "\n"
            "            }\n"
            "        }\n"
            "    }"
        )
    return (
        "Here is a list of functions in JSON format that you can invoke.\n\n[\n    "
        + ",\n    ".join(entries)
        + "\n]\n\n"
        "You can answer general questions or invoke tools when necessary.\n"
        "In addition to tool calls, you should also augment your responses by using the tool outputs."
    )


def tool_choice_prompt(choice: str | None) -> str:
    """The sentence llama-stack adds for ``tool_choice`` (empty for auto and none)."""
    if choice in (None, "auto", "none"):
        return ""
    if choice == "required":
        return "You MUST use one of the provided functions/tools to answer the user query."
    return f"You MUST use the tool `{choice}` to answer the user query."


# -- meta: tool calls ----------------------------------------------------------------------


def call_arguments(call: ToolCall) -> tuple[Mapping[str, Any] | None, str]:
    """The call's arguments: (the object, its raw text), or (None, raw text) when invalid."""
    if call.valid:
        return call.arguments, call.raw_arguments
    return None, call.raw_arguments


def builtin_call(call: ToolCall) -> str:
    """A built-in call as the models write it: ``brave_search.call(query="...")``, or the
    bare code for code_interpreter. Quotes and backslashes in values are escaped."""
    args, raw = call_arguments(call)
    if call.name == "code_interpreter":
        if args is not None and isinstance(args.get("code"), str):
            return str(args["code"])
        return raw
    if args is None:
        return f"{call.name}.call({raw})"
    parts = []
    for key, value in args.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        parts.append(f'{key}="{_escape_py(text)}"')
    return f"{call.name}.call({', '.join(parts)})"


def _escape_py(text: str) -> str:
    if not any(c in text for c in '"\\\n\r\t') and text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _escape_quotes(text: str) -> str:
    if '"' not in text and "\\" not in text:
        return text
    return text.replace("\\", "\\\\").replace('"', '\\"')


def meta_json_call(call: ToolCall) -> str:
    """llama-models' JSON call: ``{"type": "function", "name": ..., "parameters": ...}``
    (``json.dumps`` of that object)."""
    name = _encode_ascii(call.name)
    if call.arguments_error is not None:
        return f'{{"type": "function", "name": {name}, "parameters": {call.raw_arguments}}}'
    args = call.arguments
    text = dumps(args if type(args) is dict else dict(args))
    return f'{{"type": "function", "name": {name}, "parameters": {text}}}'


def function_tag_call(call: ToolCall) -> str:
    """``<function=name>{...}</function>``."""
    args, raw = call_arguments(call)
    text = raw if args is None else json.dumps(dict(args))
    return f"<function={call.name}>{text}</function>"


def pythonic_call(call: ToolCall) -> str:
    """One call of a pythonic list: ``name(a=1, b="x")``."""
    args, raw = call_arguments(call)
    if args is None:
        return f"{call.name}({raw})"
    return f"{call.name}({', '.join(f'{k}={pythonic_value(v)}' for k, v in args.items())})"


def pythonic_value(value: Any) -> str:
    """A JSON value as a Python literal. Strings are written as llama-models writes them
    (``"..."``) and escaped where they need it; dicts are real dict literals."""
    if isinstance(value, str):
        return f'"{_escape_py(value)}"'
    if value is None or isinstance(value, bool | int):
        return str(value)
    if isinstance(value, float):
        return str(value) if math.isfinite(value) else f'float("{value}")'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(pythonic_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = (f"{pythonic_value(str(k))}: {pythonic_value(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    return pythonic_value(str(value))


# -- hf ---------------------------------------------------------------------------------


def hf_tojson(value: Any, indent: int | None = None) -> str:
    """transformers' ``tojson`` for chat templates: ``json.dumps(ensure_ascii=False)``."""
    if indent is not None:
        return dumps_indented(value, " " * indent)
    return json.dumps(value, ensure_ascii=False)


def dumps_indented(value: Any, step: str, prefix: str = "") -> str:
    """``json.dumps(value, indent=len(step), ensure_ascii=False)``, written without the
    standard library's pure-Python indenting encoder (several times faster; tool
    definitions are indented on every render)."""
    if isinstance(value, str):
        return str(_encode_str(value))
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = prefix + step
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                return json.dumps(value, ensure_ascii=False, indent=len(step))
            items.append(f"{_encode_str(key)}: {dumps_indented(item, step, inner)}")
        return "{\n" + inner + (",\n" + inner).join(items) + "\n" + prefix + "}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        inner = prefix + step
        return (
            "[\n"
            + inner
            + (",\n" + inner).join(dumps_indented(v, step, inner) for v in value)
            + "\n"
            + prefix
            + "]"
        )
    return json.dumps(value, ensure_ascii=False)


def hf_tool_definition(tool: Tool) -> dict[str, Any]:
    """A tool in the shape transformers hands the templates."""
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    function["parameters"] = dict(tool.parameters)
    return {"type": "function", "function": function}


HF_TOOLS_INSTRUCTION = (
    'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.'
    "Do not use variables.\n\n"
)


def hf_tools_text(tools: Sequence[Tool]) -> str:
    return "".join(hf_tojson(hf_tool_definition(t), indent=4) + "\n\n" for t in tools)


def hf_system_text(
    builtins: Sequence[str], custom: Sequence[Tool], date: str, *, tools_in_system: bool
) -> str:
    """The templates' system text before the caller's: the environment and built-in lines,
    the date block and (``tools_in_user_message=false``) the tool definitions."""
    text = ""
    if builtins or custom:
        text += "Environment: ipython\n"
    if builtins:
        text += "Tools: " + ", ".join(n for n in builtins if n != "code_interpreter") + "\n\n"
    text += f"{KNOWLEDGE_CUTOFF}\nToday Date: {date}\n\n"
    if custom and tools_in_system:
        text += (
            "You have access to the following functions. To call a function, please "
            "respond with JSON for a function call." + HF_TOOLS_INSTRUCTION + hf_tools_text(custom)
        )
    return text


def hf_user_tools_text(custom: Sequence[Tool]) -> str:
    """The templates' tool definitions before the first user message's text."""
    return (
        "Given the following functions, please respond with a JSON for a function call "
        "with its proper arguments that best answers the given prompt.\n\n"
        + HF_TOOLS_INSTRUCTION
        + hf_tools_text(custom)
    )


def hf_json_call(call: ToolCall) -> str:
    args, raw = call_arguments(call)
    text = raw if args is None else hf_tojson(dict(args))
    return f'{{"name": "{call.name}", "parameters": {text}}}'


def hf_builtin_call(call: ToolCall) -> str:
    args, raw = call_arguments(call)
    if args is None:
        return f"{call.name}.call({raw})"
    parts = []
    for key, value in args.items():
        text = value if isinstance(value, str) else hf_tojson(value)
        # The templates write the value raw; a quote in it would end the string early, so
        # quotes and backslashes are escaped (anything else stays as the templates write it).
        parts.append(f'{key}="{_escape_quotes(text)}"')
    return f"{call.name}.call({', '.join(parts)})"


def hf_tool_content(text: str) -> str:
    """A tool result as the templates write it: the result's text through ``tojson``
    (the templates' ``content is iterable`` test is true for a string, and a chat endpoint
    hands the template the result as the string it received)."""
    return hf_tojson(text)
