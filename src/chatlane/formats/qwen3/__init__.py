"""The Qwen 3 and Qwen 2.5 prompt formats (registry names ``qwen3``, ``qwen3-no-thinking``,
``qwen2.5``), with Hermes-style ``<tool_call>`` blocks.

The package's rooms: `_format` (the renderer), `tokenizer` (the Qwen 2 vocabulary, read from
a GGUF or tokenizer.json the user has), `parser` (reasoning, text and calls, whole or
streamed), `grammar` (forced calls) and `testmodel` (a tiny random-weight model).
docs/qwen3-format.md describes the rules and the references.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from chatlane.formats.qwen3._format import Qwen

if TYPE_CHECKING:
    from chatlane.formats.base import ModelInfo

__all__ = ["Qwen", "create", "detect"]


def create(name: str, **settings: Any) -> Qwen:
    """The format registered as ``name``, with `Qwen`'s settings."""
    if name == "qwen3-no-thinking":
        settings.setdefault("enable_thinking", False)
        return Qwen("qwen3", **settings)
    if name == "qwen2.5":
        return Qwen("qwen2.5", **settings)
    return Qwen("qwen3", **settings)


_QWEN3_NAME = re.compile(r"(?i)qwen[-_ ]?3(?![.\d])")
_QWEN25_NAME = re.compile(r"(?i)qwen[-_ ]?2(?:\.5)?(?!\d)")


def detect(info: ModelInfo) -> str | None:
    """``qwen3`` or ``qwen2.5`` for a Qwen model: by its GGUF architecture (``qwen3``,
    ``qwen3moe``, ``qwen2``), by ``<|im_start|>`` and ``<tool_call>`` in its vocabulary with a
    Qwen name or template, or by its name."""
    arch = (info.architecture or "").lower()
    if arch in ("qwen3", "qwen3moe"):
        return "qwen3"
    if arch in ("qwen2", "qwen2moe"):
        return "qwen2.5"
    template = info.chat_template or ""
    if info.control_token is not None and not info.has_control_token("<|im_start|>"):
        return None
    if "<think>" in template and "<tool_call>" in template:
        return "qwen3"
    for name in info.names:
        if _QWEN3_NAME.search(name):
            return "qwen3"
        if _QWEN25_NAME.search(name):
            return "qwen2.5"
    if "<tool_call>" in template and "<|im_start|>" in template:
        return "qwen2.5"
    return None
