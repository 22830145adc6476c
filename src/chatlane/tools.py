"""Tools a model can call: from a JSON schema, a Pydantic model, or a typed Python function.

pydantic is imported only where a model or a function is turned into a schema.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from chatlane.errors import SchemaError

__all__ = [
    "BUILTIN_TOOLS",
    "Tool",
    "brave_search",
    "code_interpreter",
    "strict_schema",
    "tool",
    "wolfram_alpha",
]

F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the model may call.

    Build one with `Tool.from_schema`, `Tool.from_model`, `Tool.from_function` or the
    `@tool` decorator; the built-in Llama tools are `brave_search`, `wolfram_alpha` and
    `code_interpreter`.
    """

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    """A JSON schema of type object for the call's arguments."""
    strict: bool = False
    """Ask servers with a strict mode to follow the schema exactly (see `strict_schema`)."""
    function: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    """The Python function behind the tool, which the agent loop runs."""
    builtin: bool = False
    """A tool the Llama models know by name (brave_search, wolfram_alpha, code_interpreter)."""
    model: type[Any] | None = field(default=None, compare=False, repr=False)
    """The Pydantic model the arguments validate against, when the tool was built from one."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise SchemaError(
                f"tool name {self.name!r} must be 1 to 64 letters, digits, '_', '-' or '.'"
            )
        check_object_schema(self.parameters, what=f"tool {self.name!r}'s parameters")

    @classmethod
    def from_schema(
        cls,
        name: str,
        parameters: Mapping[str, Any] | None = None,
        description: str | None = None,
        *,
        strict: bool = False,
    ) -> Tool:
        """A tool from a JSON schema of its arguments (an object schema)."""
        if parameters is None:
            parameters = {"type": "object", "properties": {}}
        check_object_schema(parameters, what=f"tool {name!r}'s parameters")
        return cls(name, description, dict(parameters), strict=strict)

    @classmethod
    def from_model(
        cls,
        model: type[Any],
        *,
        name: str | None = None,
        description: str | None = None,
        strict: bool = False,
    ) -> Tool:
        """A tool whose arguments are a Pydantic model; name and description come from it."""
        schema = model_schema(model)
        schema_description = schema.pop("description", None)
        return cls(
            name or _snake_name(model.__name__),
            description if description is not None else schema_description,
            schema,
            strict=strict,
            model=model,
        )

    @classmethod
    def from_function(
        cls,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        strict: bool = False,
    ) -> Tool:
        """A tool from a typed Python function (sync or async).

        The type hints give the schema (through Pydantic); the docstring gives the tool's
        description and each parameter's description (Google, NumPy or Sphinx style).
        Every parameter needs a type hint.
        """
        from chatlane._schema import function_arguments_model

        doc = parse_docstring(inspect.getdoc(function) or "")
        model = function_arguments_model(function, doc.params)
        schema = model_schema(model)
        schema.pop("description", None)
        schema.pop("title", None)
        return cls(
            name or function.__name__,
            description if description is not None else (doc.summary or None),
            schema,
            strict=strict,
            function=function,
            model=model,
        )

    @classmethod
    def builtin_tool(cls, name: str) -> Tool:
        """One of the tools the Llama 3 models know by name."""
        try:
            return BUILTIN_TOOLS[name]
        except KeyError:
            known = ", ".join(BUILTIN_TOOLS)
            raise SchemaError(f"{name!r} is not a built-in tool; they are {known}") from None

    def strict_parameters(self) -> dict[str, Any]:
        """The parameters in the form servers' strict modes require (see `strict_schema`)."""
        return strict_schema(self.parameters)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function behind the tool."""
        if self.function is None:
            raise TypeError(f"tool {self.name!r} has no function behind it")
        return self.function(*args, **kwargs)

    def validate_arguments(self, arguments: Mapping[str, Any]) -> Any:
        """Validate a call's arguments: the model instance for tools with a Pydantic model,
        else the arguments unchanged. Raises pydantic's ValidationError when they are invalid."""
        if self.model is None:
            return dict(arguments)
        return self.model.model_validate(dict(arguments))


@overload
def tool(function: F, /) -> Tool: ...
@overload
def tool(
    *, name: str | None = None, description: str | None = None, strict: bool = False
) -> Callable[[F], Tool]: ...
def tool(
    function: F | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    strict: bool = False,
) -> Tool | Callable[[F], Tool]:
    """Turn a typed function into a `Tool` (which keeps the function for the agent to run).

    Use as ``@tool`` or ``@tool(name=..., description=..., strict=True)``. The tool is
    callable and calls the function.
    """

    def wrap(fn: F) -> Tool:
        return Tool.from_function(fn, name=name, description=description, strict=strict)

    if function is not None:
        return wrap(function)
    return wrap


def check_object_schema(schema: Any, *, what: str) -> None:
    """Raise `SchemaError` unless ``schema`` is a JSON schema for an object."""
    if not isinstance(schema, Mapping):
        raise SchemaError(f"{what} must be a JSON schema (a dict), got {type(schema).__name__}")
    kind = schema.get("type", "object" if "properties" in schema else None)
    if kind != "object":
        raise SchemaError(f"{what} must be a JSON schema of type 'object', got type {kind!r}")
    properties = schema.get("properties", {})
    if not isinstance(properties, Mapping):
        raise SchemaError(f"{what}: 'properties' must be an object")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise SchemaError(f"{what}: 'required' must be a list of property names")


def model_schema(model: type[Any]) -> dict[str, Any]:
    """The JSON schema of a Pydantic model class (a `SchemaError` for anything else)."""
    from pydantic import BaseModel

    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise SchemaError(f"expected a Pydantic model class, got {model!r}")
    schema = model.model_json_schema()
    # pydantic adds no description for a class without a docstring; never send a null one.
    if schema.get("description") is None:
        schema.pop("description", None)
    return schema


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema in the form strict modes (OpenAI, vLLM) require.

    Every object lists all its properties as required and forbids additional ones; an
    optional property keeps being optional by allowing null. ``$defs`` are kept and converted.
    """
    result = copy.deepcopy(dict(schema))
    _make_strict(result)
    return result


def _make_strict(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _make_strict(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "object" or "properties" in node:
        properties = node.setdefault("properties", {})
        required = set(node.get("required", []))
        for key, sub in properties.items():
            if key not in required and isinstance(sub, dict):
                properties[key] = _nullable(sub)
        node["required"] = list(properties)
        node["additionalProperties"] = False
    for key, value in node.items():
        if key in ("properties", "$defs", "definitions"):
            if isinstance(value, dict):
                for sub in value.values():
                    _make_strict(sub)
        elif isinstance(value, dict | list):
            _make_strict(value)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return schema
    if any(s.get("type") == "null" for s in schema.get("anyOf", []) if isinstance(s, dict)):
        return schema
    if isinstance(kind, str) and "$ref" not in schema:
        schema = dict(schema)
        schema["type"] = [kind, "null"]
        schema.pop("default", None)
        return schema
    rest = {k: v for k, v in schema.items() if k in ("description", "title")}
    inner = {k: v for k, v in schema.items() if k not in ("description", "title", "default")}
    return {**rest, "anyOf": [inner, {"type": "null"}]}


def _snake_name(name: str) -> str:
    # "GetHTTPStatus" -> "get_http_status": acronyms stay one word.
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return name.lower()


@dataclass(frozen=True, slots=True)
class Docstring:
    """What a docstring says: the summary and each parameter's description."""

    summary: str
    params: dict[str, str]


_GOOGLE_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params)\s*:\s*$")
_NUMPY_UNDERLINE = re.compile(r"^-{3,}\s*$")
_SPHINX_PARAM = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")
_ANY_SECTION = re.compile(
    r"^(Returns?|Yields?|Raises|Examples?|Notes?|See Also|Attributes|Warnings?|Todo|References)\s*:?\s*$"
)


def parse_docstring(doc: str) -> Docstring:
    """Read a Google, NumPy or Sphinx docstring: the summary and parameter descriptions."""
    lines = inspect.cleandoc(doc).splitlines() if doc else []
    summary_lines: list[str] = []
    params: dict[str, str] = {}
    i = 0
    # The summary: everything up to the first section or field list.
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if (
            _GOOGLE_SECTION.match(stripped)
            or _ANY_SECTION.match(stripped)
            or stripped.startswith(":")
            or (stripped and _NUMPY_UNDERLINE.match(nxt))
        ):
            break
        summary_lines.append(stripped)
        i += 1
    while i < len(lines):
        stripped = lines[i].strip()
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if _GOOGLE_SECTION.match(stripped):
            i = _read_google_params(lines, i + 1, params)
        elif stripped in ("Parameters", "Args", "Arguments") and _NUMPY_UNDERLINE.match(nxt):
            i = _read_numpy_params(lines, i + 2, params)
        elif m := _SPHINX_PARAM.match(stripped):
            text = [m.group(2).strip()]
            i += 1
            while i < len(lines) and lines[i].startswith((" ", "\t")) and lines[i].strip():
                text.append(lines[i].strip())
                i += 1
            params[m.group(1)] = " ".join(t for t in text if t)
        else:
            i += 1
    summary = "\n".join(summary_lines).strip()
    return Docstring(re.sub(r"\n{3,}", "\n\n", summary), params)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _read_google_params(lines: list[str], i: int, params: dict[str, str]) -> int:
    entry = re.compile(r"^\*{0,2}(\w+)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")
    base: int | None = None
    current: str | None = None
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        indent = _indent(line)
        if base is None:
            if indent == 0:
                return i
            base = indent
        if indent < base:
            return i
        m = entry.match(line.strip())
        if indent == base and m:
            current = m.group(1)
            params[current] = m.group(3).strip()
        elif current is not None and indent > base:
            params[current] = (params[current] + " " + line.strip()).strip()
        else:
            return i
        i += 1
    return i


def _read_numpy_params(lines: list[str], i: int, params: dict[str, str]) -> int:
    current: str | None = None
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if line.strip() and _indent(line) == 0 and _NUMPY_UNDERLINE.match(nxt):
            return i
        if not line.strip():
            i += 1
            continue
        if _indent(line) == 0:
            current = line.split(":", 1)[0].strip().lstrip("*")
            params[current] = ""
        elif current is not None:
            params[current] = (params[current] + " " + line.strip()).strip()
        i += 1
    return i


def _builtin(name: str, description: str, argument: str, argument_description: str) -> Tool:
    return Tool(
        name,
        description,
        {
            "type": "object",
            "properties": {argument: {"type": "string", "description": argument_description}},
            "required": [argument],
        },
        builtin=True,
    )


brave_search = _builtin(
    "brave_search", "Search the web with Brave Search.", "query", "The search query."
)
wolfram_alpha = _builtin(
    "wolfram_alpha", "Ask Wolfram Alpha a question.", "query", "The question to compute."
)
code_interpreter = _builtin(
    "code_interpreter", "Run Python code and see its output.", "code", "The Python code to run."
)
BUILTIN_TOOLS: dict[str, Tool] = {
    t.name: t for t in (brave_search, wolfram_alpha, code_interpreter)
}
