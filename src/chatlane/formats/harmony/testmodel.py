"""gpt-oss's tiny test model: random weights with the real o200k_harmony vocabulary.

A GGUF file with llama.cpp's ``gpt-oss`` architecture at toy size (two layers, 64 wide,
four experts of which two are used, attention sinks, a sliding window on every other layer),
random weights, and the real vocabulary: the 199,998 ``o200k_base`` tokens as byte-level BPE
(merges rebuilt from the ranks) and the 1,090 harmony control tokens. llama.cpp loads it and
tokenizes as gpt-oss does. Building it needs the ``gguf`` package and the ``o200k_base`` file
(see `chatlane.formats.harmony.tokenizer`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from chatlane.errors import ChatlaneError
from chatlane.formats._testmodel import (
    TinyWriter,
    cached_build,
    read_tiktoken_ranks,
    tiktoken_to_bpe,
)
from chatlane.formats.harmony.tokenizer import (
    N_BASE_TOKENS,
    SPECIAL_TOKENS,
    TokenizerNotFound,
    find_o200k_base,
)

__all__ = ["TINY_MODEL_NAME", "tiny_gguf"]

TINY_MODEL_NAME = "chatlane-tiny-random-gpt-oss"
_RECIPE = 1
_LAYERS = 2
_EMBED = 64
_HEADS = 4
_KV_HEADS = 2
_HEAD_DIM = 16
_EXPERTS = 4
_EXPERTS_USED = 2
_FFN_EXPERT = 64
_CONTEXT = 8192
_WINDOW = 128

_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|start|>' + message['role'] + '<|message|>' + message['content'] + '<|end|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start|>assistant' }}{%- endif %}"
    "{# <|channel|> #}"
)


def tiny_gguf(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    vocab: str | os.PathLike[str] | None = None,
) -> Path:
    """The path of the tiny random-weight gpt-oss model, built on first use and cached."""

    def build(path: Path, gguf: Any, np: Any) -> None:
        try:
            source = Path(vocab) if vocab is not None else find_o200k_base()
        except TokenizerNotFound as e:
            raise ChatlaneError(f"building the tiny gpt-oss model needs o200k_base: {e}") from e
        tokens, merges = tiktoken_to_bpe(read_tiktoken_ranks(source))
        if len(tokens) != N_BASE_TOKENS:
            raise ChatlaneError(f"{source} holds {len(tokens)} tokens, not o200k_base's")
        specials = sorted(SPECIAL_TOKENS.items(), key=lambda item: item[1])
        assert [i for _, i in specials] == list(range(N_BASE_TOKENS, N_BASE_TOKENS + len(specials)))
        _write(path, [*tokens, *(t for t, _ in specials)], merges, len(specials), seed, gguf, np)

    return cached_build(f"tiny-random-gpt-oss-r{_RECIPE}-seed{seed}.gguf", cache_dir, build)


def _write(
    path: Path, tokens: list[str], merges: list[str], n_special: int, seed: int, gguf: Any, np: Any
) -> None:
    out = TinyWriter(path, "gpt-oss", gguf, np, seed)
    writer = out.writer
    writer.add_name(TINY_MODEL_NAME)
    writer.add_description("random weights with the real o200k_harmony vocabulary; for tests only")
    writer.add_context_length(_CONTEXT)
    writer.add_embedding_length(_EMBED)
    writer.add_block_count(_LAYERS)
    writer.add_feed_forward_length(_FFN_EXPERT)
    writer.add_head_count(_HEADS)
    writer.add_head_count_kv(_KV_HEADS)
    writer.add_key_length(_HEAD_DIM)
    writer.add_value_length(_HEAD_DIM)
    writer.add_rope_dimension_count(_HEAD_DIM)
    writer.add_rope_freq_base(150000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_expert_count(_EXPERTS)
    writer.add_expert_used_count(_EXPERTS_USED)
    writer.add_expert_feed_forward_length(_FFN_EXPERT)
    writer.add_sliding_window(_WINDOW)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    out.add_bpe_vocabulary(
        "gpt-4o",
        tokens,
        out.control_last(N_BASE_TOKENS, n_special),
        merges,
        bos=SPECIAL_TOKENS["<|startoftext|>"],
        eos=SPECIAL_TOKENS["<|return|>"],
        pad=SPECIAL_TOKENS["<|endoftext|>"],
        add_bos=False,
        template=_CHAT_TEMPLATE,
    )

    w, big = out.weights, out.add_q8
    n_vocab = len(tokens)
    ones = out.ones(_EMBED)
    big("token_embd.weight", w(n_vocab, _EMBED))
    big("output.weight", w(n_vocab, _EMBED))
    writer.add_tensor("output_norm.weight", ones)
    q, kv = _HEADS * _HEAD_DIM, _KV_HEADS * _HEAD_DIM
    for i in range(_LAYERS):
        b = f"blk.{i}."
        writer.add_tensor(b + "attn_norm.weight", ones)
        writer.add_tensor(b + "post_attention_norm.weight", ones)
        writer.add_tensor(b + "attn_q.weight", w(q, _EMBED))
        writer.add_tensor(b + "attn_k.weight", w(kv, _EMBED))
        writer.add_tensor(b + "attn_v.weight", w(kv, _EMBED))
        writer.add_tensor(b + "attn_q.bias", w(q))
        writer.add_tensor(b + "attn_k.bias", w(kv))
        writer.add_tensor(b + "attn_v.bias", w(kv))
        writer.add_tensor(b + "attn_output.weight", w(_EMBED, q))
        writer.add_tensor(b + "attn_output.bias", w(_EMBED))
        writer.add_tensor(b + "attn_sinks.weight", w(_HEADS))
        writer.add_tensor(b + "ffn_gate_inp.weight", w(_EXPERTS, _EMBED))
        writer.add_tensor(b + "ffn_gate_inp.bias", w(_EXPERTS))
        writer.add_tensor(b + "ffn_gate_exps.weight", w(_EXPERTS, _FFN_EXPERT, _EMBED))
        writer.add_tensor(b + "ffn_gate_exps.bias", w(_EXPERTS, _FFN_EXPERT))
        writer.add_tensor(b + "ffn_up_exps.weight", w(_EXPERTS, _FFN_EXPERT, _EMBED))
        writer.add_tensor(b + "ffn_up_exps.bias", w(_EXPERTS, _FFN_EXPERT))
        writer.add_tensor(b + "ffn_down_exps.weight", w(_EXPERTS, _EMBED, _FFN_EXPERT))
        writer.add_tensor(b + "ffn_down_exps.bias", w(_EXPERTS, _EMBED))
    out.write()
