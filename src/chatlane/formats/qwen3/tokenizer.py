"""The Qwen 2 / 2.5 / 3 tokenizer (151,643 byte-level BPE tokens plus the added tokens), on
tiktoken.

The vocabulary is read from a file the user has: a Qwen GGUF model (any Qwen 2, 2.5 or 3
model; the ``tokenizer.ggml.tokens`` array), or a Hugging Face ``tokenizer.json``. The path
is given to `load_tokenizer` or named by the environment variable ``CHATLANE_QWEN_VOCAB``.
Qwen's BPE was trained as tiktoken ranks (its first release shipped ``qwen.tiktoken``), so
token ids are the ranks and the merges need not be read.

Text is never encoded into added tokens: ``encode("<|im_end|>")`` or ``encode("<tool_call>")``
give the ordinary tokens of those characters. Added tokens enter a prompt only through the
renderer.
"""

from __future__ import annotations

import functools
import json
import os
import struct
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from chatlane.errors import TokenizerNotFound

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "ADDED_TOKENS",
    "ENV_VAR",
    "QwenTokenizer",
    "TokenizerNotFound",
    "default_vocab_path",
    "load_tokenizer",
]

ENV_VAR = "CHATLANE_QWEN_VOCAB"
"""The environment variable that may name the vocabulary file (a GGUF or tokenizer.json)."""

# Qwen 2's pre-tokenizer (tokenizer.json of the Qwen2 models; llama.cpp's "qwen2" pre-type):
# Llama 3's regex, but digits one at a time.
_PAT_STR = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

N_BASE_TOKENS = 151643
"""The byte-level BPE tokens; the added tokens follow them."""

# The added tokens of Qwen 2.5 and Qwen 3 (tokenizer_config.json's added_tokens_decoder);
# Qwen 3 added the last four. The Qwen 2 vocabulary file of llama.cpp has padding there.
_ADDED = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)
ADDED_TOKENS: dict[str, int] = {text: N_BASE_TOKENS + i for i, text in enumerate(_ADDED)}
"""Every added token's text and id (151643 to 151668)."""


def _byte_decoder() -> dict[str, int]:
    from chatlane.formats._testmodel import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def _ranks_from_tokens(tokens: Sequence[str], where: Path) -> dict[bytes, int]:
    decoder = _byte_decoder()
    ranks: dict[bytes, int] = {}
    try:
        for i in range(N_BASE_TOKENS):
            ranks[bytes(decoder[c] for c in tokens[i])] = i
    except (KeyError, IndexError) as e:
        raise TokenizerNotFound(
            f"{where} does not hold a Qwen 2 byte-level vocabulary ({N_BASE_TOKENS} tokens)"
        ) from e
    if len(ranks) != N_BASE_TOKENS:
        raise TokenizerNotFound(f"{where} holds repeated tokens: not a Qwen 2 vocabulary")
    return ranks


def _read_gguf_tokens(f: BinaryIO) -> list[str]:
    """The ``tokenizer.ggml.tokens`` array of a GGUF file (v2/v3), read without the ``gguf``
    package: only the key/value header is read, never the tensors."""

    def u32() -> int:
        return int(struct.unpack("<I", f.read(4))[0])

    def u64() -> int:
        return int(struct.unpack("<Q", f.read(8))[0])

    def string() -> str:
        return f.read(u64()).decode("utf-8", "replace")

    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def skip(kind: int) -> None:
        if kind == 8:
            f.seek(u64(), 1)
        elif kind == 9:
            inner, count = u32(), u64()
            if inner in sizes:
                f.seek(sizes[inner] * count, 1)
            else:
                for _ in range(count):
                    skip(inner)
        else:
            f.seek(sizes[kind], 1)

    if f.read(4) != b"GGUF":
        raise ValueError("not a GGUF file")
    if u32() < 2:
        raise ValueError("GGUF version 1 is not supported")
    u64()  # tensor count
    for _ in range(u64()):
        key = string()
        kind = u32()
        if key == "tokenizer.ggml.tokens" and kind == 9:
            inner, count = u32(), u64()
            if inner != 8:
                raise ValueError("tokenizer.ggml.tokens is not an array of strings")
            return [string() for _ in range(count)]
        skip(kind)
    raise ValueError("the file has no tokenizer.ggml.tokens")


def _read_ranks(path: Path) -> dict[bytes, int]:
    try:
        with path.open("rb") as f:
            head = f.read(4)
            f.seek(0)
            if head == b"GGUF":
                tokens = _read_gguf_tokens(f)
            else:
                vocab = json.load(f)["model"]["vocab"]
                tokens = [""] * len(vocab)
                for text, i in vocab.items():
                    tokens[i] = text
    except OSError as e:
        raise TokenizerNotFound(f"cannot read the Qwen vocabulary {path}: {e}") from e
    except (ValueError, KeyError, TypeError, IndexError, struct.error) as e:
        raise TokenizerNotFound(
            f"{path} is neither a GGUF model nor a tokenizer.json with a vocabulary: {e}"
        ) from e
    return _ranks_from_tokens(tokens, path)


class QwenTokenizer:
    """The Qwen tokenizer (the `Tokenizer` protocol); build one with `load_tokenizer`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import tiktoken

        self.path = Path(path)
        self.special_tokens: dict[str, int] = dict(ADDED_TOKENS)
        self._encoding: tiktoken.Encoding = tiktoken.Encoding(
            name=f"chatlane-qwen-{self.path.name}",
            pat_str=_PAT_STR,
            mergeable_ranks=_read_ranks(self.path),
            special_tokens=self.special_tokens,
        )
        self._by_id = {i: t for t, i in self.special_tokens.items()}

    def encode(self, text: str) -> list[int]:
        """The ids of ``text`` as plain text (Qwen's tokenizer normalizes to NFC first)."""
        if not text:
            return []
        return self._encoding.encode_ordinary(unicodedata.normalize("NFC", text))

    def special(self, text: str) -> int:
        """The id of the added token ``text`` (the renderer's only way to write one)."""
        return self.special_tokens[text]

    def decode(self, tokens: Sequence[int]) -> str:
        return self._encoding.decode(list(tokens), errors="replace")

    def decode_bytes(self, tokens: Sequence[int]) -> bytes:
        return self._encoding.decode_bytes(list(tokens))

    def is_special(self, token: int) -> bool:
        return token >= N_BASE_TOKENS

    def __repr__(self) -> str:
        return f"QwenTokenizer({str(self.path)!r})"


def default_vocab_path() -> Path:
    """The vocabulary named by ``CHATLANE_QWEN_VOCAB``.

    Raises:
        TokenizerNotFound: the variable is not set, or names no file.
    """
    named = os.environ.get(ENV_VAR)
    if not named:
        raise TokenizerNotFound(
            f"no Qwen vocabulary: set {ENV_VAR} to a Qwen GGUF model or tokenizer.json, "
            "or pass vocab=PATH to the format"
        )
    path = Path(named)
    if not path.is_file():
        raise TokenizerNotFound(f"{ENV_VAR}={named!r} names no file")
    return path


@functools.lru_cache(maxsize=4)
def _load(path: Path) -> QwenTokenizer:
    return QwenTokenizer(path)


def load_tokenizer(path: str | os.PathLike[str] | None = None) -> QwenTokenizer:
    """The Qwen tokenizer from ``path`` (or ``CHATLANE_QWEN_VOCAB``), loaded once per file."""
    return _load(Path(path).resolve() if path is not None else default_vocab_path().resolve())
