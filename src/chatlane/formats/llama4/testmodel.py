"""Llama 4's tiny test model: random weights with the real Llama 4 tokenizer.

A GGUF file with llama.cpp's ``llama4`` architecture (mixture-of-experts layers with a
shared expert interleaved with dense ones, chunked attention with a no-RoPE full-attention
layer every fourth layer, as in Scout and Maverick), tiny random weights and the real
tokenizer (200,000 BPE tokens plus the 2,048 special tokens). It says nothing sensible, but
llama.cpp loads it, tokenizes exactly as the real model does, and generates quickly on a
CPU. Building it needs the ``gguf`` package and Meta's ``llama-models`` package (which ships
the tokenizer file); both are in chatlane's ``dev`` extra.
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
from chatlane.formats.llama4.tokenizer import (
    SPECIAL_TOKENS,
    default_tokenizer_path,
)

__all__ = ["TINY_MODEL_NAME", "tiny_gguf"]

TINY_MODEL_NAME = "chatlane-tiny-random-llama-4"
"""The ``general.name`` written into the tiny model (it says the weights are random)."""

# Bump when the recipe changes so that cached files of an older recipe are not reused.
_RECIPE = 1

# The model's shape: four layers (three chunked-attention RoPE layers, then one full
# attention layer without RoPE: llama.cpp's default pattern for llama4), every second layer
# a mixture of experts, as in Maverick.
_LAYERS = 4
_EMBED = 64
_HEADS = 4
_KV_HEADS = 2
_FFN = 128
_EXPERT_FFN = 64
_EXPERTS = 4
_EXPERTS_USED = 1
_MOE_STEP = 2
_CONTEXT = 8192

_SPECIAL = list(SPECIAL_TOKENS)
_N_SPECIAL = len(_SPECIAL)

# A short Llama 4 chat template, so that the file looks like a Llama 4 model to tools that
# read it (chatlane renders prompts itself and does not use it).
_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|header_start|>' + message['role'] + '<|header_end|>\\n\\n' }}"
    "{{- message['content'] + '<|eot|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|header_start|>assistant<|header_end|>\\n\\n' }}"
    "{%- endif %}"
)


def tiny_gguf(cache_dir: str | os.PathLike[str] | None = None, *, seed: int = 0) -> Path:
    """The path of the tiny random-weight Llama 4 model, built on first use and cached; the
    same seed gives the same file."""

    def build(path: Path, gguf: Any, np: Any) -> None:
        tokens, merges = _llama4_vocabulary()
        _write_gguf(path, tokens, merges, seed, gguf, np)

    return cached_build(f"tiny-random-llama4-r{_RECIPE}-seed{seed}.gguf", cache_dir, build)


def _llama4_vocabulary() -> tuple[list[str], list[str]]:
    """Llama 4's tokens (GPT-2 byte-level spelling, special tokens last) and BPE merges."""
    return tiktoken_vocabulary(default_tokenizer_path, "Meta's Llama 4 tokenizer", _SPECIAL)


def _write_gguf(
    path: Path, tokens: list[str], merges: list[str], seed: int, gguf: Any, np: Any
) -> None:
    n_vocab = len(tokens)
    n_base = n_vocab - _N_SPECIAL
    head_dim = _EMBED // _HEADS
    out = TinyWriter(path, "llama4", gguf, np, seed)
    writer = out.writer
    writer.add_name(TINY_MODEL_NAME)
    writer.add_description("random weights with the real Llama 4 tokenizer; for tests only")
    writer.add_context_length(_CONTEXT)
    writer.add_embedding_length(_EMBED)
    writer.add_block_count(_LAYERS)
    writer.add_feed_forward_length(_FFN)
    writer.add_expert_feed_forward_length(_EXPERT_FFN)
    writer.add_expert_count(_EXPERTS)
    writer.add_expert_used_count(_EXPERTS_USED)
    writer.add_interleave_moe_layer_step(_MOE_STEP)
    writer.add_head_count(_HEADS)
    writer.add_head_count_kv(_KV_HEADS)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(500000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    out.add_bpe_vocabulary(
        "llama4",
        tokens,
        out.control_last(n_base, _N_SPECIAL),
        merges,
        bos=n_base + _SPECIAL.index("<|begin_of_text|>"),
        eos=n_base + _SPECIAL.index("<|eot|>"),
        template=_CHAT_TEMPLATE,
    )

    weights = out.weights
    out.add_q8("token_embd.weight", weights(n_vocab, _EMBED))
    kv = _KV_HEADS * head_dim
    for i in range(_LAYERS):
        out.add_attention(i, _EMBED, _EMBED, kv)
        if (i + 1) % _MOE_STEP == 0:
            writer.add_tensor(f"blk.{i}.ffn_norm.weight", out.ones(_EMBED))
            # (numpy shapes: llama.cpp's dimensions reversed)
            writer.add_tensor(f"blk.{i}.ffn_gate_inp.weight", weights(_EXPERTS, _EMBED))
            writer.add_tensor(
                f"blk.{i}.ffn_gate_exps.weight", weights(_EXPERTS, _EXPERT_FFN, _EMBED)
            )
            writer.add_tensor(f"blk.{i}.ffn_up_exps.weight", weights(_EXPERTS, _EXPERT_FFN, _EMBED))
            writer.add_tensor(
                f"blk.{i}.ffn_down_exps.weight", weights(_EXPERTS, _EMBED, _EXPERT_FFN)
            )
            writer.add_tensor(f"blk.{i}.ffn_gate_shexp.weight", weights(_EXPERT_FFN, _EMBED))
            writer.add_tensor(f"blk.{i}.ffn_up_shexp.weight", weights(_EXPERT_FFN, _EMBED))
            writer.add_tensor(f"blk.{i}.ffn_down_shexp.weight", weights(_EMBED, _EXPERT_FFN))
        else:
            out.add_feed_forward(i, _EMBED, _FFN)
    writer.add_tensor("output_norm.weight", out.ones(_EMBED))
    out.write()
