"""Pieces every family's tiny test model is built from: a cached, atomic build of a GGUF
file, and the conversion of a tiktoken vocabulary to GPT-2 byte-level BPE.

A family's package has a ``testmodel`` module with ``tiny_gguf(cache_dir, seed) -> Path``:
random weights with the family's real vocabulary, built at test time (never downloaded,
never committed). `chatlane.testing.tiny_gguf` reaches it through the registry.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
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


def tiktoken_vocabulary(
    default_path: Callable[[], Path], what: str, specials: Sequence[str]
) -> tuple[list[str], list[str]]:
    """A tiktoken tokenizer's tokens (GPT-2 byte-level spelling, ``specials`` after them) and
    BPE merges; ``default_path`` finds its file and ``what`` names it in errors ("Meta's Llama 3
    tokenizer")."""
    from chatlane.errors import TokenizerNotFound

    try:
        path = default_path()
    except TokenizerNotFound as e:
        raise ChatlaneError(f"building the tiny test model needs {what}: {e}") from e
    tokens, merges = tiktoken_to_bpe(read_tiktoken_ranks(path))
    return [*tokens, *specials], merges


class TinyWriter:
    """A GGUF writer for a tiny random-weight model: its vocabulary, weights drawn from one
    seeded generator (so a seed always gives the same bytes), and the file.

    A family's ``testmodel`` writes its own architecture's keys on ``writer`` and its own
    tensors, with `weights`, `ones` and `add_q8`; the shared pieces are here.
    """

    def __init__(self, path: Path, architecture: str, gguf: Any, np: Any, seed: int) -> None:
        self.gguf = gguf
        self.np = np
        self.writer: Any = gguf.GGUFWriter(str(path), architecture)
        self._rng = np.random.default_rng(seed)

    def weights(self, *shape: int) -> Any:
        """Random float32 weights of ``shape`` (numpy order: llama.cpp's dimensions reversed)."""
        return (self._rng.standard_normal(shape) * 0.5).astype(self.np.float32)

    def ones(self, n: int) -> Any:
        """A norm's weights."""
        return self.np.ones(n, dtype=self.np.float32)

    def add_q8(self, name: str, array: Any) -> None:
        """A tensor stored as Q8_0 (the large ones: embeddings, output)."""
        q8 = self.gguf.GGMLQuantizationType.Q8_0
        self.writer.add_tensor(name, self.gguf.quants.quantize(array, q8), raw_dtype=q8)

    def control_last(self, n_base: int, n_special: int) -> list[Any]:
        """Token types: ``n_base`` ordinary tokens, then ``n_special`` control tokens."""
        kinds = self.gguf.TokenType
        return [kinds.NORMAL] * n_base + [kinds.CONTROL] * n_special

    def add_bpe_vocabulary(
        self,
        pre: str,
        tokens: list[str],
        types: list[Any],
        merges: list[str],
        *,
        bos: int,
        eos: int,
        template: str,
        unk: int | None = None,
        pad: int | None = None,
        add_bos: bool | None = None,
    ) -> None:
        """A byte-level BPE vocabulary (llama.cpp's ``gpt2`` tokenizer with the pre-tokenizer
        ``pre``), its special ids, and a chat template for tools that read the file."""
        w = self.writer
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_bos_token_id(bos)
        w.add_eos_token_id(eos)
        if unk is not None:
            w.add_unk_token_id(unk)
        if pad is not None:
            w.add_pad_token_id(pad)
        if add_bos is not None:
            w.add_add_bos_token(add_bos)
        w.add_chat_template(template)

    def add_attention(self, block: int, embed: int, q: int, kv: int) -> None:
        """A dense block's attention: its norm, q, k, v and output projections."""
        b, add = f"blk.{block}.", self.writer.add_tensor
        add(b + "attn_norm.weight", self.ones(embed))
        add(b + "attn_q.weight", self.weights(q, embed))
        add(b + "attn_k.weight", self.weights(kv, embed))
        add(b + "attn_v.weight", self.weights(kv, embed))
        add(b + "attn_output.weight", self.weights(embed, q))

    def add_feed_forward(self, block: int, embed: int, ffn: int) -> None:
        """A dense block's feed-forward: its norm and the gate, up and down projections."""
        b, add = f"blk.{block}.", self.writer.add_tensor
        add(b + "ffn_norm.weight", self.ones(embed))
        add(b + "ffn_gate.weight", self.weights(ffn, embed))
        add(b + "ffn_up.weight", self.weights(ffn, embed))
        add(b + "ffn_down.weight", self.weights(embed, ffn))

    def write(self) -> None:
        """Write the header, the key/values and the tensors, and close the file."""
        w = self.writer
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
