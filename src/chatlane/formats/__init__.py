"""Prompt formats: rendering prompts, tokenizing them, and parsing raw model output.

The registry below is the only way in: `get` makes a format by name, `detect` picks one for a
model (`ModelInfo`), `names` lists them. Each family lives in one package under this one and
exposes two functions, ``create(name, **settings) -> PromptFormat`` and
``detect(info) -> str | None`` (the registry name that fits the model, or None). Adding a
family is its package and one line in `_FAMILIES` (docs/adding-a-format.md).

Nothing here imports a family until it is asked for: ``import chatlane.formats`` stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chatlane.formats.base import ModelInfo, PromptFormat

__all__ = ["DEFAULT", "detect", "family", "get", "names", "register"]

# One line per family: its package and the names it answers to, most specific family first
# (`detect` asks them in this order).
_FAMILIES: list[tuple[str, tuple[str, ...]]] = [
    ("chatlane.formats.llama4", ("llama4",)),
    ("chatlane.formats.llama3", ("llama3", "llama3.1", "llama3.2", "llama3.3")),
    (
        "chatlane.formats.mistral",
        (
            "mistral",
            "mistral-v3",
            "mistral-v3-tekken",
            "mistral-v7",
            "mistral-v7-tekken",
            "mistral-v11",
            "mistral-v13",
        ),
    ),
    ("chatlane.formats.qwen3", ("qwen3", "qwen3-no-thinking", "qwen2.5")),
    ("chatlane.formats.harmony", ("gpt-oss",)),
]

DEFAULT = "llama3.1"
"""The format a raw completion backend uses when it is given none and cannot detect one."""

_loaded: dict[str, ModuleType] = {}


def register(package: str, format_names: tuple[str, ...], *, first: bool = False) -> None:
    """Add a family of formats from outside chatlane: ``package`` is importable and exposes
    ``create(name, **settings)`` and ``detect(info)`` as chatlane's own families do."""
    from chatlane.errors import InputError

    taken = set(names()).intersection(format_names)
    if taken:
        raise InputError(f"format names already registered: {', '.join(sorted(taken))}")
    entry = (package, tuple(format_names))
    if first:
        _FAMILIES.insert(0, entry)
    else:
        _FAMILIES.append(entry)


def names() -> tuple[str, ...]:
    """Every registered format name, family by family."""
    return tuple(name for _, family_names in _FAMILIES for name in family_names)


def family(name: str) -> str:
    """The package of the family that serves the format ``name``."""
    from chatlane.errors import InputError

    for package, family_names in _FAMILIES:
        if name in family_names:
            return package
    raise InputError(f"unknown prompt format {name!r}; chatlane knows {', '.join(names())}")


def _family(package: str) -> ModuleType:
    module = _loaded.get(package)
    if module is None:
        module = _loaded[package] = importlib.import_module(package)
    return module


def get(name: str, **settings: Any) -> PromptFormat:
    """The format registered as ``name`` (``"llama3.1"``, ...), made with ``settings``
    (a family's own options: ``profile="hf"``, ``tool_format="pythonic"``, ...).

    Raises:
        InputError: no format has that name, or a setting is not one the family knows.
    """
    from chatlane.errors import InputError

    create: Callable[..., PromptFormat] = _family(family(name)).create
    try:
        return create(name, **settings)
    except TypeError as e:
        raise InputError(f"format {name!r}: {e}") from e


def detect(info: ModelInfo, **settings: Any) -> PromptFormat | None:
    """The format of the model ``info`` describes, made with ``settings``; None when no
    registered family recognises it."""
    for package, _ in _FAMILIES:
        found: str | None = _family(package).detect(info)
        if found is not None:
            return get(found, **settings)
    return None
