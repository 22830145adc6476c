"""The Mistral prompt formats (registry names ``mistral-v3``, ``mistral-v3-tekken``,
``mistral-v7``, ``mistral-v7-tekken``, ``mistral-v11``, ``mistral-v13``; ``mistral`` is v11).

The numbers are mistral-common's tokenizer versions, which is what decides a Mistral prompt:
v3 (Mistral 7B v0.3, Nemo, Ministral), v7 (Large 2411, Small 3 and 3.1: system prompts of
their own), v11 (Small 3.2, Devstral: ``[TOOL_CALLS]name[CALL_ID]id[ARGS]{...}``), v13
(Magistral: ``[THINK]`` reasoning, tools at the first user message, no call ids). The rooms:
`_format` (settings and rendering), `tokenizer` (tekken and SentencePiece), `parser` (whole
and incremental parsing), `grammar` (constrained calls), `testmodel` (the tiny GGUF).
docs/mistral-format.md describes every rule and how each is checked.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from chatlane.formats.mistral._format import Mistral, is_valid_call_id, random_call_id

if TYPE_CHECKING:
    from chatlane.formats.base import ModelInfo

__all__ = ["NAMES", "Mistral", "create", "detect", "is_valid_call_id", "random_call_id"]

_SETTINGS: dict[str, tuple[int, bool]] = {
    "mistral": (11, True),
    "mistral-v3": (3, False),
    "mistral-v3-tekken": (3, True),
    "mistral-v7": (7, False),
    "mistral-v7-tekken": (7, True),
    "mistral-v11": (11, True),
    "mistral-v13": (13, True),
}
NAMES = tuple(_SETTINGS)


def create(name: str, **settings: Any) -> Mistral:
    """The format registered as ``name``, with `Mistral`'s settings."""
    version, tekken = _SETTINGS[name]
    return Mistral(version, tekken=tekken, name=name, **settings)  # type: ignore[arg-type]


# Model names to formats, first match wins (Mistral's model cards and mistral-common's
# own model table).
_BY_NAME: tuple[tuple[re.Pattern[str], str | None], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), found)
    for pattern, found in (
        (r"mistral[-_ ]?7b.*v0\.[12]\b", None),  # v1/v2 prompts: not these formats
        (r"magistral.*2506", "mistral-v11"),
        (r"magistral", "mistral-v13"),
        (r"devstral.*2505", "mistral-v7-tekken"),
        (r"devstral", "mistral-v11"),
        (r"small[-_ ]?3\.2|small.*2506", "mistral-v11"),
        (r"small[-_ ]?3\.1|small.*(2501|2503)|small[-_ ]?24b", "mistral-v7-tekken"),
        (r"large.*2411|pixtral[-_ ]?large", "mistral-v7"),
        (r"nemo|ministral|pixtral|small.*2409|2407", "mistral-v3-tekken"),
        (r"mistral[-_ ]?7b|mixtral|codestral[-_ ]?22b|mathstral|large.*2407", "mistral-v3"),
        (r"mistral", "mistral"),
    )
)
_MARKERS = ("[INST]", "[/INST]", "[TOOL_CALLS]")


def _from_vocabulary(info: ModelInfo) -> str:
    has = info.has_control_token
    if has("[THINK]") and has("[/THINK]"):
        return "mistral-v13"
    if has("[ARGS]"):
        return "mistral-v11"
    model = str(info.metadata.get("tokenizer.ggml.model", ""))
    pre = str(info.metadata.get("tokenizer.ggml.pre", ""))
    tekken = model == "gpt2" or pre == "tekken"
    version = "mistral-v7" if has("[SYSTEM_PROMPT]") else "mistral-v3"
    return f"{version}-tekken" if tekken else version


def detect(info: ModelInfo) -> str | None:
    """The Mistral format of a model: its vocabulary has ``[INST]`` and ``[TOOL_CALLS]`` as
    control tokens (the version from its name when it says, else from the control tokens
    it has), or, with no vocabulary to look at, its name says Mistral."""
    if info.control_token is not None:
        if not all(info.has_control_token(m) for m in _MARKERS):
            return None
        for name in info.names:
            for pattern, found in _BY_NAME[:-1]:
                if found is not None and pattern.search(name):
                    return found
        return _from_vocabulary(info)
    template = info.chat_template or ""
    for name in info.names:
        for pattern, found in _BY_NAME:
            if pattern.search(name):
                return found
    if "[TOOL_CALLS]" in template and "[INST]" in template:
        if "[ARGS]" in template:
            return "mistral-v13" if "[THINK]" in template else "mistral-v11"
        return "mistral-v7-tekken" if "[SYSTEM_PROMPT]" in template else "mistral-v3"
    return None
