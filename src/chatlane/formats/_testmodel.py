"""Pieces every family's tiny test model is built from: a cached, atomic build of a GGUF
file, and the conversion of a tiktoken vocabulary to GPT-2 byte-level BPE.

A family's package has a ``testmodel`` module with ``tiny_gguf(cache_dir, seed) -> Path``:
random weights with the family's real vocabulary, built at test time (never downloaded,
never committed). `chatlane.testing.tiny_gguf` reaches it through the registry.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatlane.errors import ChatlaneError

__all__ = [
    "bytes_to_unicode",
    "cached_build",
    "model_cache_dir",
    "read_tiktoken_ranks",
    "tiktoken_to_bpe",
]


def model_cache_dir() -> Path:
    """Where built test models are kept: ``$CHATLANE_CACHE/models`` or ``~/.cache/chatlane/models``."""
    root = os.environ.get("CHATLANE_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "chatlane"
    return base / "models"


def cached_build(
    file_name: str,
    cache_dir: str | os.PathLike[str] | None,
    build: Callable[[Path, Any, Any], None],
) -> Path:
    """The cached file ``file_name``, built with ``build(path, gguf, numpy)`` when missing.

    The file is written next to its target and renamed, so that a concurrent reader never
    sees half a file.
    """
    directory = Path(cache_dir) if cache_dir is not None else model_cache_dir()
    path = directory / file_name
    if path.is_file():
        return path
    try:
        import gguf
        import numpy as np
    except ImportError as e:
        raise ChatlaneError(
            "building a tiny test model needs the 'gguf' package: "
            "pip install 'chatlane[dev]' (or pip install gguf==0.19.0)"
        ) from e
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        build(Path(tmp), gguf, np)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is for every user
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (byte-level BPE vocabularies)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, codes, strict=True)}


def _merges_of(ranks: dict[bytes, int], token: bytes) -> list[tuple[bytes, bytes]]:
    """Every way to build ``token`` from two tokens of the vocabulary, most frequent first.

    tiktoken has ranks, not merges, and Llama 3's extra tokens cannot all be reached by
    replaying BPE, so every split into two known tokens becomes a merge of this token's rank
    (the algorithm of transformers' ``TikTokenConverter``).
    """
    splits = [
        (token[:i], token[i:])
        for i in range(1, len(token))
        if token[:i] in ranks and token[i:] in ranks
    ]
    splits.sort(key=lambda pair: (ranks[pair[0]], ranks[pair[1]]))
    return splits


def read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """A tiktoken BPE file's ranks (one ``base64-token rank`` line each)."""
    from chatlane.formats._tiktoken import read_ranks

    return read_ranks(path, "tiktoken")


def tiktoken_to_bpe(ranks: dict[bytes, int]) -> tuple[list[str], list[str]]:
    """The tokens (GPT-2 byte-level spelling, in rank order) and BPE merges of a tiktoken
    vocabulary, as llama.cpp's ``gpt2`` tokenizer reads them."""
    spell = bytes_to_unicode()
    tokens = [""] * len(ranks)
    merges: list[str] = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        tokens[rank] = "".join(spell[b] for b in token)
        for left, right in _merges_of(ranks, token):
            merges.append("".join(spell[b] for b in left) + " " + "".join(spell[b] for b in right))
    return tokens, merges
