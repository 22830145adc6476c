"""Qwen 3's tiny test model: random weights with the real Qwen 2 / 3 vocabulary.

A GGUF file with the ``qwen3`` architecture (two layers, 64-wide), random weights and the
real vocabulary: the 151,643 BPE tokens and merges of llama.cpp's ``ggml-vocab-qwen2.gguf``
(from the llama-cpp-python sdist, or any Qwen GGUF) with Qwen 3's 26 added tokens in their
places. llama.cpp loads it and tokenizes as the real model does. Building it needs the
``gguf`` package (chatlane's ``dev`` extra) and that vocabulary file: the ``vocab``
argument or ``CHATLANE_QWEN_VOCAB``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from chatlane.errors import ChatlaneError
from chatlane.formats._testmodel import TinyWriter, cached_build
from chatlane.formats.qwen3.tokenizer import (
    ADDED_TOKENS,
    N_BASE_TOKENS,
    TokenizerNotFound,
    default_vocab_path,
)

__all__ = ["TINY_MODEL_NAME", "tiny_gguf"]

TINY_MODEL_NAME = "chatlane-tiny-random-qwen3"
_RECIPE = 1
_LAYERS = 2
_EMBED = 64
_HEADS = 4
_KV_HEADS = 2
_HEAD_DIM = 16
_FFN = 128
_CONTEXT = 8192
_N_VOCAB = 151936  # Qwen's embedding rows (the padded vocabulary size)

# Added tokens that Qwen's tokenizer marks special are control tokens; the others
# (<tool_call>, <think>, ...) are user-defined, as llama.cpp's converter writes them.
_USER_DEFINED = {
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
}
_USER_DEFINED |= {"<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>"}
_USER_DEFINED |= {"<|repo_name|>", "<|file_sep|>"}

# A short Qwen 3 chat template, so that the file looks like a Qwen 3 model to tools that read
# it (chatlane renders prompts itself).
_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    "{# <tool_call> <think> #}"
)


def tiny_gguf(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    vocab: str | os.PathLike[str] | None = None,
) -> Path:
    """The path of the tiny random-weight Qwen 3 model, built on first use and cached."""

    def build(path: Path, gguf: Any, np: Any) -> None:
        try:
            source = Path(vocab) if vocab is not None else default_vocab_path()
        except TokenizerNotFound as e:
            raise ChatlaneError(
                f"building the tiny Qwen 3 model needs a Qwen vocabulary: {e}"
            ) from e
        tokens, merges = _vocabulary(source, gguf)
        _write(path, tokens, merges, seed, gguf, np)

    return cached_build(f"tiny-random-qwen3-r{_RECIPE}-seed{seed}.gguf", cache_dir, build)


def _vocabulary(source: Path, gguf: Any) -> tuple[list[str], list[str]]:
    reader = gguf.GGUFReader(str(source))

    def strings(key: str) -> list[str]:
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    tokens = strings("tokenizer.ggml.tokens")[:N_BASE_TOKENS]
    merges = strings("tokenizer.ggml.merges")
    if len(tokens) != N_BASE_TOKENS:
        raise ChatlaneError(f"{source} holds {len(tokens)} tokens, not Qwen's {N_BASE_TOKENS}")
    tokens += list(ADDED_TOKENS)
    tokens += [f"[PAD{i}]" for i in range(len(tokens), _N_VOCAB)]
    return tokens, merges


def _write(path: Path, tokens: list[str], merges: list[str], seed: int, gguf: Any, np: Any) -> None:
    T = gguf.TokenType
    types = [T.NORMAL] * N_BASE_TOKENS
    types += [T.USER_DEFINED if t in _USER_DEFINED else T.CONTROL for t in ADDED_TOKENS]
    types += [T.UNUSED] * (len(tokens) - len(types))
    out = TinyWriter(path, "qwen3", gguf, np, seed)
    writer = out.writer
    writer.add_name(TINY_MODEL_NAME)
    writer.add_description("random weights with the real Qwen vocabulary; for tests only")
    writer.add_context_length(_CONTEXT)
    writer.add_embedding_length(_EMBED)
    writer.add_block_count(_LAYERS)
    writer.add_feed_forward_length(_FFN)
    writer.add_head_count(_HEADS)
    writer.add_head_count_kv(_KV_HEADS)
    writer.add_key_length(_HEAD_DIM)
    writer.add_value_length(_HEAD_DIM)
    writer.add_rope_freq_base(1000000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    out.add_bpe_vocabulary(
        "qwen2",
        tokens,
        types,
        merges,
        bos=ADDED_TOKENS["<|endoftext|>"],
        eos=ADDED_TOKENS["<|im_end|>"],
        pad=ADDED_TOKENS["<|endoftext|>"],
        add_bos=False,
        template=_CHAT_TEMPLATE,
    )

    weights, ones = out.weights, out.ones(_EMBED)
    out.add_q8("token_embd.weight", weights(len(tokens), _EMBED))
    q, kv = _HEADS * _HEAD_DIM, _KV_HEADS * _HEAD_DIM
    for i in range(_LAYERS):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.attn_q.weight", weights(q, _EMBED))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weights(kv, _EMBED))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weights(kv, _EMBED))
        # Qwen 3 normalises q and k per head before attention.
        writer.add_tensor(f"blk.{i}.attn_q_norm.weight", out.ones(_HEAD_DIM))
        writer.add_tensor(f"blk.{i}.attn_k_norm.weight", out.ones(_HEAD_DIM))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weights(_EMBED, q))
        out.add_feed_forward(i, _EMBED, _FFN)
    writer.add_tensor("output_norm.weight", ones)
    out.write()
