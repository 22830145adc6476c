"""Turning Python signatures into Pydantic models (imported only when a function becomes a tool)."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from chatlane.errors import SchemaError


def function_arguments_model(
    function: Callable[..., Any], descriptions: Mapping[str, str]
) -> type[BaseModel]:
    """A Pydantic model of a function's parameters, described from its docstring."""
    name = getattr(function, "__name__", type(function).__name__)
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as e:
        raise SchemaError(f"cannot read the signature of {name!r}: {e}") from e
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception as e:  # a hint naming something that does not exist
        raise SchemaError(f"cannot resolve the type hints of {name!r}: {e}") from e
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise SchemaError(
                f"tool function {name!r} takes *{param.name}; a tool's parameters must be named"
            )
        if param.name not in hints:
            raise SchemaError(
                f"parameter {param.name!r} of tool function {name!r} has no type hint; "
                "every parameter needs one so the model knows what to send"
            )
        default = ... if param.default is inspect.Parameter.empty else param.default
        description = descriptions.get(param.name) or None
        fields[param.name] = (hints[param.name], Field(default, description=description))
    try:
        return create_model(
            f"{name}_arguments",
            __config__=ConfigDict(arbitrary_types_allowed=False),
            **fields,
        )
    except Exception as e:
        raise SchemaError(f"cannot build a schema for tool function {name!r}: {e}") from e
