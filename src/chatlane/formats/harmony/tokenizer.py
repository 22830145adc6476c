"""The gpt-oss tokenizer (``o200k_harmony``): tiktoken's ``o200k_base`` ranks with the
harmony control tokens, on tiktoken.

The ``o200k_base.tiktoken`` file is read from the path given to `load_tokenizer`, the file
named by ``CHATLANE_O200K_BASE``, ``$TIKTOKEN_ENCODINGS_BASE/o200k_base.tiktoken`` (the
variable openai-harmony reads), or tiktoken's own download cache (``$TIKTOKEN_CACHE_DIR``,
``$DATA_GYM_CACHE_DIR`` or the system temp dir's ``data-gym-cache``) when the user has used
``o200k_base`` with tiktoken before. Nothing is downloaded.

Text is never encoded into control tokens: control tokens enter a prompt only through the
renderer.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from chatlane.errors import TokenizerNotFound

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "ENV_VAR",
    "SPECIAL_TOKENS",
    "HarmonyTokenizer",
    "TokenizerNotFound",
    "find_o200k_base",
    "load_tokenizer",
]

ENV_VAR = "CHATLANE_O200K_BASE"
"""The environment variable that may name the ``o200k_base.tiktoken`` file."""

_CACHE_NAME = "fb374d419588a4632f3f557e76b4b70aebbca790"  # tiktoken's: sha1 of the file's URL
_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"

# o200k_base's pre-tokenizer (tiktoken_ext/openai_public.py).
_PAT_STR = "|".join(
    [
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)

_NAMED = {
    "<|startoftext|>": 199998,
    "<|endoftext|>": 199999,
    "<|return|>": 200002,
    "<|constrain|>": 200003,
    "<|channel|>": 200005,
    "<|start|>": 200006,
    "<|end|>": 200007,
    "<|message|>": 200008,
    "<|call|>": 200012,
}
SPECIAL_TOKENS: dict[str, int] = dict(_NAMED)
SPECIAL_TOKENS.update(
    {f"<|reserved_{i}|>": i for i in range(200000, 201088) if i not in _NAMED.values()}
)
"""Every harmony control token's text and id (o200k_harmony's table)."""
N_BASE_TOKENS = 199998


def find_o200k_base() -> Path:
    """Where the ``o200k_base`` file is (see the module docstring).

    Raises:
        TokenizerNotFound: it is in none of those places.
    """
    candidates: list[Path] = []
    named = os.environ.get(ENV_VAR)
    if named:
        candidates.append(Path(named))
    base = os.environ.get("TIKTOKEN_ENCODINGS_BASE")
    if base and "://" not in base:
        candidates.append(Path(base) / "o200k_base.tiktoken")
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        value = os.environ.get(var)
        if value:
            candidates.append(Path(value) / _CACHE_NAME)
    candidates.append(Path(tempfile.gettempdir()) / "data-gym-cache" / _CACHE_NAME)
    for path in candidates:
        if path.is_file():
            return path
    raise TokenizerNotFound(
        "no o200k_base vocabulary: set CHATLANE_O200K_BASE to an o200k_base.tiktoken file, "
        "or pass vocab=PATH to the format (looked in " + ", ".join(str(p) for p in candidates) + ")"
    )


def _read_ranks(path: Path) -> dict[bytes, int]:
    import base64

    try:
        data = path.read_bytes()
    except OSError as e:
        raise TokenizerNotFound(f"cannot read {path}: {e}") from e
    if hashlib.sha256(data).hexdigest() != _SHA256:
        raise TokenizerNotFound(f"{path} is not the o200k_base file (its sha256 differs)")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


class HarmonyTokenizer:
    """The o200k_harmony tokenizer (the `Tokenizer` protocol); build with `load_tokenizer`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import tiktoken

        self.path = Path(path)
        self.special_tokens: dict[str, int] = dict(SPECIAL_TOKENS)
        self._encoding: tiktoken.Encoding = tiktoken.Encoding(
            name="chatlane-o200k-harmony",
            pat_str=_PAT_STR,
            mergeable_ranks=_read_ranks(self.path),
            special_tokens=self.special_tokens,
        )

    def encode(self, text: str) -> list[int]:
        """The ids of ``text`` as plain text (control-token text stays text)."""
        return self._encoding.encode_ordinary(text) if text else []

    def encode_with_special(self, text: str) -> list[int]:
        """The ids of ``text`` with control-token text read as control tokens (for model
        output given as text; never for what a user wrote)."""
        return self._encoding.encode(text, allowed_special="all")

    def special(self, text: str) -> int:
        return self.special_tokens[text]

    def decode(self, tokens: Sequence[int]) -> str:
        return self._encoding.decode(list(tokens), errors="replace")

    def decode_bytes(self, tokens: Sequence[int]) -> bytes:
        return self._encoding.decode_bytes(list(tokens))

    def is_special(self, token: int) -> bool:
        return token >= N_BASE_TOKENS

    def __repr__(self) -> str:
        return f"HarmonyTokenizer({str(self.path)!r})"


@functools.lru_cache(maxsize=2)
def _load(path: Path) -> HarmonyTokenizer:
    return HarmonyTokenizer(path)


def load_tokenizer(path: str | os.PathLike[str] | None = None) -> HarmonyTokenizer:
    """The harmony tokenizer from ``path`` (or where `find_o200k_base` looks), loaded once."""
    return _load(Path(path).resolve() if path is not None else find_o200k_base().resolve())
