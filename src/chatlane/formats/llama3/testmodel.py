"""Llama 3's tiny test model: random weights with the real Llama 3 tokenizer.

A 17 MB GGUF file with the architecture of Llama 3, random weights and the real tokenizer
(128,000 BPE tokens plus the 256 special tokens). It says nothing sensible, but llama.cpp
loads it, tokenizes exactly as the real model does, and generates several hundred tokens per
second on a CPU. Building it needs the ``gguf`` package and Meta's ``llama-models`` package
(which ships the tokenizer file); both are in chatlane's ``dev`` extra.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from chatlane.formats._testmodel import (
    TinyWriter,
    cached_build,
    tiktoken_vocabulary,
)
from chatlane.formats.llama3.tokenizer import (
    SPECIAL_TOKENS,
    default_tokenizer_path,
)

__all__ = ["TINY_MODEL_NAME", "tiny_gguf"]

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


def tiny_gguf(cache_dir: str | os.PathLike[str] | None = None, *, seed: int = 0) -> Path:
    """The path of the tiny random-weight Llama 3 model, built on first use and cached; the
    same seed gives the same file."""

    def build(path: Path, gguf: Any, np: Any) -> None:
        tokens, merges = _llama3_vocabulary()
        _write_gguf(path, tokens, merges, seed, gguf, np)

    return cached_build(f"tiny-random-llama3-r{_RECIPE}-seed{seed}.gguf", cache_dir, build)


def _llama3_vocabulary() -> tuple[list[str], list[str]]:
    """Llama 3's tokens (GPT-2 byte-level spelling, special tokens last) and BPE merges."""
    return tiktoken_vocabulary(default_tokenizer_path, "Meta's Llama 3 tokenizer", _SPECIAL)


def _write_gguf(
    path: Path, tokens: list[str], merges: list[str], seed: int, gguf: Any, np: Any
) -> None:
    n_vocab = len(tokens)
    n_base = n_vocab - _N_SPECIAL
    head_dim = _EMBED // _HEADS
    out = TinyWriter(path, "llama", gguf, np, seed)
    writer = out.writer
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
    out.add_bpe_vocabulary(
        "llama-bpe",
        tokens,
        out.control_last(n_base, _N_SPECIAL),
        merges,
        bos=n_base,  # <|begin_of_text|>
        eos=n_base + _SPECIAL.index("<|eot_id|>"),
        template=_CHAT_TEMPLATE,
    )
    out.add_q8("token_embd.weight", out.weights(n_vocab, _EMBED))
    for i in range(_LAYERS):
        out.add_attention(i, _EMBED, _EMBED, _KV_HEADS * head_dim)
        out.add_feed_forward(i, _EMBED, _FFN)
    writer.add_tensor("output_norm.weight", out.ones(_EMBED))
    out.write()
