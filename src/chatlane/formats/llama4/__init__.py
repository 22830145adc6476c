"""The Llama 4 prompt format (registry name ``llama4``: Scout and Maverick).

The package's rooms: `_format` (settings and the renderer), `prompts` (the system prompt
texts and call renderings), `tokenizer` (Meta's o200k-style tiktoken vocabulary), `parser`
(whole and incremental parsing of both call forms), `grammar` (constrained calls) and
`testmodel` (a tiny random-weight Llama 4 GGUF). docs/llama4-format.md describes every rule
and where the references disagree.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from chatlane.formats.llama4._format import Llama4

if TYPE_CHECKING:
    from chatlane.formats.base import ModelInfo

__all__ = ["Llama4", "create", "detect"]


def create(name: str, **settings: Any) -> Llama4:
    """The format registered as ``name`` (``llama4``), with `Llama4`'s settings."""
    return Llama4(**settings)


_MARKERS = ("<|header_start|>", "<|header_end|>", "<|eot|>")
_NAME = re.compile(r"(?i)llama[-_ ]?4(?![.\d])")


def detect(info: ModelInfo) -> str | None:
    """``llama4`` for a Llama 4 model: its vocabulary has Llama 4's header and turn tokens
    (GGUF architecture ``llama4`` or not), or, with no vocabulary to look at, its
    architecture or its name says Llama 4."""
    if info.control_token is not None:
        return "llama4" if all(info.has_control_token(m) for m in _MARKERS) else None
    if info.architecture == "llama4":
        return "llama4"
    return "llama4" if any(_NAME.search(name) for name in info.names) else None
