"""The Llama 3.1, 3.2 and 3.3 prompt format (registry names ``llama3``, ``llama3.1``,
``llama3.2``, ``llama3.3``; ``llama3`` is 3.1).

The package's rooms: `_format` (settings, the renderer and its cache), `prompts` (the system
prompt texts and call renderings), `tokenizer` (Meta's tiktoken vocabulary), `parser` (whole
and incremental parsing of the model's output) and `grammar` (constrained calls).
docs/llama3-format.md describes every rule and where the references disagree.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from chatlane.formats.llama3._format import (
    BEGIN_OF_TEXT,
    END_HEADER,
    END_OF_MESSAGE,
    END_OF_TURN,
    IMAGE_TOKEN,
    PYTHON_TAG,
    START_HEADER,
    Llama3,
)

if TYPE_CHECKING:
    from chatlane.formats.base import ModelInfo

__all__ = [
    "BEGIN_OF_TEXT",
    "END_HEADER",
    "END_OF_MESSAGE",
    "END_OF_TURN",
    "IMAGE_TOKEN",
    "PYTHON_TAG",
    "START_HEADER",
    "Llama3",
    "create",
    "detect",
]

_VERSIONS = {"llama3": "3.1", "llama3.1": "3.1", "llama3.2": "3.2", "llama3.3": "3.3"}


def create(name: str, **settings: Any) -> Llama3:
    """The format registered as ``name``, with `Llama3`'s settings."""
    return Llama3(version=_VERSIONS[name], **settings)  # type: ignore[arg-type]


_MARKERS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
_VERSION_IN_NAME = re.compile(r"(?i)llama[-_ ]?3\.([123])")
_ANY_VERSION = re.compile(r"3\.([123])")


def detect(info: ModelInfo) -> str | None:
    """``llama3.x`` for a Llama 3 model: its vocabulary has Llama 3's header and turn tokens,
    or (with no vocabulary to look at) its name says Llama 3. The version comes from the
    name (3.1 when it names none)."""
    if info.control_token is not None:
        if not all(info.has_control_token(m) for m in _MARKERS):
            return None
        for name in info.names:
            found = _ANY_VERSION.search(name)
            if found:
                return f"llama3.{found.group(1)}"
        return "llama3.1"
    for name in info.names:
        found = _VERSION_IN_NAME.search(name)
        if found:
            return f"llama3.{found.group(1)}"
        if re.search(r"(?i)llama[-_ ]?3(?![.\d])", name):
            return "llama3.1"
    return None
