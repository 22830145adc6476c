"""The gpt-oss prompt format, harmony (registry name ``gpt-oss``).

The package's rooms: `_format` (the renderer and the tools' TypeScript namespace),
`tokenizer` (o200k_harmony over the ``o200k_base`` file), `parser` (channels, reasoning and
calls, whole or streamed) and `grammar` (forced calls). docs/harmony-format.md describes the
rules and the reference.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from chatlane.formats.harmony._format import Harmony

if TYPE_CHECKING:
    from chatlane.formats.base import ModelInfo

__all__ = ["Harmony", "create", "detect"]


def create(name: str, **settings: Any) -> Harmony:
    """The format registered as ``name``, with `Harmony`'s settings."""
    return Harmony(**settings)


_NAME = re.compile(r"(?i)gpt[-_ ]?oss")
_MARKERS = ("<|start|>", "<|channel|>", "<|message|>")


def detect(info: ModelInfo) -> str | None:
    """``gpt-oss`` for a harmony model: its GGUF architecture (``gpt-oss``), harmony's
    control tokens in its vocabulary, its chat template, or its name."""
    if (info.architecture or "").lower() in ("gpt-oss", "gptoss", "gpt_oss"):
        return "gpt-oss"
    if info.control_token is not None and all(info.has_control_token(m) for m in _MARKERS):
        return "gpt-oss"
    template = info.chat_template or ""
    if "<|channel|>" in template and "<|message|>" in template:
        return "gpt-oss"
    if any(_NAME.search(n) for n in info.names):
        return "gpt-oss"
    return None
