"""A chat request: the conversation, the tools, the output format and the sampling settings."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from chatlane.errors import InputError, MessageError, SchemaError
from chatlane.messages import Message
from chatlane.tools import Tool, model_schema, strict_schema

__all__ = ["ChatRequest", "ResponseFormat", "StreamOptions", "ToolChoice"]


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """What the model's text must be: JSON for a schema (from a Pydantic model or a dict),
    or any JSON object."""

    schema: Mapping[str, Any] | None
    """The JSON schema, or None for any JSON object."""
    name: str = "response"
    strict: bool = True
    model: type[Any] | None = field(default=None, compare=False, repr=False)
    """The Pydantic model the output validates against, when built from one."""
    description: str | None = None
    """What the output is, for the model (the schema's own description when not given)."""

    @classmethod
    def from_model(cls, model: type[Any], *, strict: bool = True) -> ResponseFormat:
        schema = model_schema(model)
        return cls(schema, name=model.__name__, strict=strict, model=model)

    @classmethod
    def from_schema(
        cls,
        schema: Mapping[str, Any],
        *,
        name: str | None = None,
        strict: bool = True,
        description: str | None = None,
    ) -> ResponseFormat:
        if not isinstance(schema, Mapping):
            raise SchemaError(
                f"a response format schema must be a dict, got {type(schema).__name__}"
            )
        return cls(
            dict(schema),
            name=name or str(schema.get("title") or "response"),
            strict=strict,
            description=description,
        )

    @classmethod
    def json_object(cls) -> ResponseFormat:
        """Any JSON object, no schema."""
        return cls(None, name="json_object", strict=False)

    @classmethod
    def coerce(cls, value: Any) -> ResponseFormat | None:
        """A ResponseFormat from a Pydantic model class, a schema dict, or a ResponseFormat."""
        if value is None or isinstance(value, ResponseFormat):
            return value
        if isinstance(value, type):
            return cls.from_model(value)
        if isinstance(value, Mapping):
            # Accept OpenAI's own shapes too.
            if value.get("type") == "json_object" and "schema" not in value:
                return cls.json_object()
            if value.get("type") == "json_schema" and isinstance(value.get("json_schema"), Mapping):
                inner = value["json_schema"]
                description = inner.get("description")
                return cls.from_schema(
                    inner.get("schema", {}),
                    name=inner.get("name"),
                    strict=bool(inner.get("strict", True)),
                    description=description if isinstance(description, str) else None,
                )
            return cls.from_schema(value)
        raise SchemaError(
            f"response_format must be a Pydantic model class or a JSON schema, got {type(value).__name__}"
        )

    def strict_schema(self) -> dict[str, Any] | None:
        return None if self.schema is None else strict_schema(self.schema)

    def parse(self, text: str) -> Any:
        """Parse and validate a model's output: the model instance, or the JSON value.

        Raises `StructuredOutputError` with the text and the errors when it does not fit.
        """
        from chatlane.errors import StructuredOutputError

        if self.model is not None:
            from pydantic import ValidationError

            try:
                return self.model.model_validate_json(text)
            except ValidationError as e:
                raise StructuredOutputError(
                    f"the output does not validate as {self.model.__name__}: "
                    f"{e.error_count()} error(s), first: {e.errors()[0]['msg']}",
                    text=text,
                    errors=list(e.errors(include_url=False)),
                ) from e
        try:
            value = json.loads(text)
        except ValueError as e:
            raise StructuredOutputError(
                f"the output is not valid JSON: {e}", text=text, errors=[str(e)]
            ) from e
        if self.schema is not None:
            from chatlane._jsonschema import validate

            problems = validate(value, self.schema)
            if problems:
                raise StructuredOutputError(
                    f"the output does not match the schema: {problems[0]}",
                    text=text,
                    errors=problems,
                )
        return value


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """Options for a streamed request."""

    include_usage: bool = True
    """Ask the server to report usage at the end of a stream."""


ToolChoice = Literal["auto", "none", "required"] | str
"""``"auto"``, ``"none"``, ``"required"``, or the name of the one tool the model must call."""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """Everything a backend needs for one model call.

    ``messages`` may be given as any sequence; it is kept as a tuple. ``tools`` accepts `Tool`
    objects and plain functions (turned into tools). ``response_format`` accepts a Pydantic
    model class, a JSON schema dict, or a `ResponseFormat`.
    """

    messages: tuple[Message, ...]
    model: str | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    n: int | None = None
    """How many choices to generate, where the server supports it."""
    steering_concepts: tuple[str, ...] = ()
    """Aleph Alpha steering concept ids."""
    logprobs: bool | None = None
    top_logprobs: int | None = None
    user: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Extra body fields, sent as they are (and overriding what chatlane would send)."""

    def __post_init__(self) -> None:
        messages = self.messages
        if isinstance(messages, Message):
            messages = (messages,)
        if isinstance(messages, str) or not isinstance(messages, Sequence):
            raise MessageError(
                f"messages must be a sequence of Message, got {type(messages).__name__}"
            )
        for i, m in enumerate(messages):
            if not isinstance(m, Message):
                raise MessageError(f"messages[{i}] is a {type(m).__name__}, not a Message")
        object.__setattr__(self, "messages", tuple(messages))
        tools: list[Tool] = []
        for t in self.tools or ():
            if isinstance(t, Tool):
                tools.append(t)
            elif callable(t):
                tools.append(Tool.from_function(t))
            else:
                raise SchemaError(
                    f"tools must be Tool objects or functions, got {type(t).__name__}"
                )
        names = [t.name for t in tools]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SchemaError(f"two tools share the name {duplicates[0]!r}")
        object.__setattr__(self, "tools", tuple(tools))
        object.__setattr__(self, "response_format", ResponseFormat.coerce(self.response_format))
        stop = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        if stop is not None and not isinstance(stop, Iterable):
            raise InputError(f"stop must be a string or a sequence of strings, got {stop!r}")
        stop = tuple(stop or ())
        if not all(isinstance(s, str) for s in stop):
            raise InputError("stop must be a string or a sequence of strings")
        object.__setattr__(self, "stop", stop)
        steering = self.steering_concepts
        if steering is not None and not isinstance(steering, Iterable):
            raise InputError(f"steering_concepts must be a sequence of strings, got {steering!r}")
        steering = (steering,) if isinstance(steering, str) else tuple(steering or ())
        if not all(isinstance(s, str) for s in steering):
            raise InputError("steering_concepts must be a sequence of concept ids (strings)")
        object.__setattr__(self, "steering_concepts", steering)
        if not isinstance(self.extra, Mapping):
            raise InputError(
                f"extra must be a dict of body fields, got {type(self.extra).__name__}"
            )
        choice = self.tool_choice
        if choice is not None:
            if not isinstance(choice, str):
                raise InputError(f"tool_choice must be a str, got {type(choice).__name__}")
            if choice not in ("auto", "none", "required") and choice not in names:
                raise InputError(
                    f"tool_choice {choice!r} names no tool of this request"
                    + (f" (tools: {', '.join(names)})" if names else " (it has no tools)")
                )
        for name, kinds in _FIELD_TYPES:
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
            ):
                raise InputError(
                    f"{name} must be {_KIND_NAMES[kinds]}, got {type(value).__name__} {value!r}"
                )
        if self.max_tokens is not None and self.max_tokens < 1:
            raise InputError(f"max_tokens must be at least 1, got {self.max_tokens}")

    @classmethod
    def coerce(
        cls, request: ChatRequest | Sequence[Message] | str, /, **params: Any
    ) -> ChatRequest:
        """A request from a request, a list of messages, or a user's text, with fields replaced
        by ``params`` (``None`` values are ignored)."""
        if isinstance(request, ChatRequest):
            updates = {k: v for k, v in params.items() if v is not None}
            unknown = set(updates) - _FIELD_NAMES
            if unknown:
                raise InputError(f"unknown request parameter {sorted(unknown)[0]!r}")
            return replace(request, **updates) if updates else request
        if isinstance(request, str):
            from chatlane.messages import user

            request = [user(request)]
        unknown = set(params) - _FIELD_NAMES
        if unknown:
            raise InputError(f"unknown request parameter {sorted(unknown)[0]!r}")
        return cls(tuple(request), **{k: v for k, v in params.items() if v is not None})

    def tool(self, name: str) -> Tool | None:
        """The request's tool with that name, if any."""
        for t in self.tools:
            if t.name == name:
                return t
        return None


_FIELD_NAMES = frozenset(f.name for f in fields(ChatRequest)) - {"messages"}

_INT = (int,)
_NUMBER = (int, float)
_BOOL = (bool,)
_STR = (str,)
_KIND_NAMES: dict[tuple[type, ...], str] = {
    _INT: "an integer",
    _NUMBER: "a number",
    _BOOL: "true or false",
    _STR: "a string",
}
# Settings a server reads as numbers, flags or names: a wrong type is the caller's mistake,
# reported by name here rather than as a TypeError later or an HTTP 400 from the server.
_FIELD_TYPES: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("model", _STR),
    ("max_tokens", _INT),
    ("temperature", _NUMBER),
    ("top_p", _NUMBER),
    ("top_k", _INT),
    ("seed", _INT),
    ("frequency_penalty", _NUMBER),
    ("presence_penalty", _NUMBER),
    ("n", _INT),
    ("logprobs", _BOOL),
    ("top_logprobs", _INT),
    ("user", _STR),
    ("parallel_tool_calls", _BOOL),
)
