"""Test helpers for chatlane and its users: a tiny random-weight Llama 3 model.

`tiny_llama3_gguf()` returns the path of a 17 MB GGUF file with the architecture of Llama 3,
random weights and the *real* Llama 3 tokenizer (128,000 BPE tokens plus the 256 special
tokens). It says nothing sensible, but llama.cpp loads it, tokenizes exactly as the real
model does, and generates several hundred tokens per second on a laptop CPU: enough to test
everything that is true for any weights (prompt token ids, streaming, constrained decoding,
cancellation) without downloading a model.

The file is built on first use and cached (``~/.cache/chatlane/models`` or
``$CHATLANE_CACHE/models``); it is byte-identical for a given seed. Building it needs the
``gguf`` package and Meta's ``llama-models`` package (which ships the tokenizer file); both
are in chatlane's ``dev`` extra.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
from typing import Any

from chatlane.errors import ChatlaneError
from chatlane.formats.tokenizer import SPECIAL_TOKENS, TokenizerNotFound, default_tokenizer_path

__all__ = ["TINY_MODEL_NAME", "model_cache_dir", "tiny_llama3_gguf"]

TINY_MODEL_NAME = "chatlane-tiny-random-llama-3.1"
"""The ``general.name`` written into the tiny model (it says the weights are random)."""

# Bump when the recipe changes so that cached files of an older recipe are not reused.
_RECIPE = 1

# The model's shape: the smallest Llama that llama.cpp runs with grouped-query attention.
_LAYERS = 2
_EMBED = 64
_HEADS = 4
_KV_HEADS = 2
_FFN = 128
_CONTEXT = 8192

# Llama 3's 256 special tokens follow the 128,000 BPE tokens, in id order.
_SPECIAL = list(SPECIAL_TOKENS)
_N_SPECIAL = len(_SPECIAL)

# A short Llama 3 chat template, so that the file looks like a Llama 3 model to tools that
# read it (chatlane renders prompts itself and does not use it).
_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{- message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)


def model_cache_dir() -> Path:
    """Where built test models are kept: ``$CHATLANE_CACHE/models`` or ``~/.cache/chatlane/models``."""
    root = os.environ.get("CHATLANE_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "chatlane"
    return base / "models"


def tiny_llama3_gguf(cache_dir: str | os.PathLike[str] | None = None, *, seed: int = 0) -> Path:
    """The path of the tiny random-weight Llama 3 model, built on first use (see the module doc).

    Args:
        cache_dir: where to keep the file (default: `model_cache_dir()`).
        seed: the random seed of the weights; the same seed gives the same file.

    Raises:
        ChatlaneError: when ``gguf`` or ``llama-models`` is not installed.
    """
    directory = Path(cache_dir) if cache_dir is not None else model_cache_dir()
    path = directory / f"tiny-random-llama3-r{_RECIPE}-seed{seed}.gguf"
    if path.is_file():
        return path
    try:
        import gguf
        import numpy as np
    except ImportError as e:
        raise ChatlaneError(
            "building the tiny test model needs the 'gguf' package: "
            "pip install 'chatlane[dev]' (or pip install gguf==0.19.0)"
        ) from e
    tokens, merges = _llama3_vocabulary()
    directory.mkdir(parents=True, exist_ok=True)
    # Write next to the target and rename, so that a concurrent reader never sees half a file.
    fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        _write_gguf(Path(tmp), tokens, merges, seed, gguf, np)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is for every user
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _tokenizer_file() -> Path:
    try:
        return default_tokenizer_path()
    except TokenizerNotFound as e:
        raise ChatlaneError(
            f"building the tiny test model needs Meta's Llama 3 tokenizer: {e}"
        ) from e


def _bytes_to_unicode() -> dict[int, str]:
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


def _llama3_vocabulary() -> tuple[list[str], list[str]]:
    """Llama 3's tokens (GPT-2 byte-level spelling, special tokens last) and BPE merges."""
    ranks: dict[bytes, int] = {}
    for line in _tokenizer_file().read_text("ascii").splitlines():
        if line:
            encoded, number = line.split()
            ranks[base64.b64decode(encoded)] = int(number)
    spell = _bytes_to_unicode()
    tokens = [""] * len(ranks)
    merges: list[str] = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        tokens[rank] = "".join(spell[b] for b in token)
        for left, right in _merges_of(ranks, token):
            merges.append("".join(spell[b] for b in left) + " " + "".join(spell[b] for b in right))
    tokens += _SPECIAL
    return tokens, merges


def _write_gguf(
    path: Path, tokens: list[str], merges: list[str], seed: int, gguf: Any, np: Any
) -> None:
    n_vocab = len(tokens)
    n_base = n_vocab - _N_SPECIAL
    head_dim = _EMBED // _HEADS
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(TINY_MODEL_NAME)
    writer.add_description("random weights with the real Llama 3 tokenizer; for tests only")
    writer.add_context_length(_CONTEXT)
    writer.add_embedding_length(_EMBED)
    writer.add_block_count(_LAYERS)
    writer.add_feed_forward_length(_FFN)
    writer.add_head_count(_HEADS)
    writer.add_head_count_kv(_KV_HEADS)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(500000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.NORMAL] * n_base + [gguf.TokenType.CONTROL] * _N_SPECIAL)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(n_base)  # <|begin_of_text|>
    writer.add_eos_token_id(n_base + _SPECIAL.index("<|eot_id|>"))
    writer.add_chat_template(_CHAT_TEMPLATE)

    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> Any:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    ones = np.ones(_EMBED, dtype=np.float32)
    embedding = weights(n_vocab, _EMBED)
    writer.add_tensor(
        "token_embd.weight",
        gguf.quants.quantize(embedding, gguf.GGMLQuantizationType.Q8_0),
        raw_dtype=gguf.GGMLQuantizationType.Q8_0,
    )
    kv = _KV_HEADS * head_dim
    for i in range(_LAYERS):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.attn_q.weight", weights(_EMBED, _EMBED))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weights(kv, _EMBED))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weights(kv, _EMBED))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weights(_EMBED, _EMBED))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weights(_FFN, _EMBED))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weights(_FFN, _EMBED))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weights(_EMBED, _FFN))
    writer.add_tensor("output_norm.weight", ones)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
