"""Mistral's tiny test model: random weights with Mistral's real tekken vocabulary.

A small GGUF file with the architecture of Mistral (llama.cpp's ``llama``), random weights
and the tekken vocabulary of mistral-common's shipped ``tekken_240718.json``: 1,000 control
tokens first (the 20 every tekken file has, ``[ARGS]``, ``[CALL_ID]``, ``[THINK]``,
``[/THINK]`` at 32-35, fillers), then 130,072 byte-level BPE tokens, read by llama.cpp's
``gpt2`` tokenizer with its ``tekken`` pre-tokenizer. It says nothing sensible, but llama.cpp
loads it, tokenizes as the real models do, and runs constrained calls. Building it needs
``gguf`` and ``mistral-common`` (for the vocabulary file), both in chatlane's ``dev`` extra.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from chatlane.errors import ChatlaneError
from chatlane.formats._testmodel import TinyWriter, cached_build, tiktoken_to_bpe
from chatlane.formats.mistral.tokenizer import TekkenTokenizer, TokenizerNotFound, shipped_file

__all__ = ["TINY_MODEL_NAME", "tiny_gguf"]

TINY_MODEL_NAME = "chatlane-tiny-random-mistral-tekken"
"""The ``general.name`` written into the tiny model (it says the weights are random)."""

_RECIPE = 1
_LAYERS = 2
_EMBED = 64
_HEADS = 4
_KV_HEADS = 2
_FFN = 128
_CONTEXT = 4096

_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{- '[INST]' + message['content'] + '[/INST]' }}"
    "{%- elif message['role'] == 'system' %}"
    "{{- '[SYSTEM_PROMPT]' + message['content'] + '[/SYSTEM_PROMPT]' }}"
    "{%- else %}{{- message['content'] + eos_token }}{%- endif %}"
    "{%- endfor %}"
)


def tiny_gguf(cache_dir: str | os.PathLike[str] | None = None, *, seed: int = 0) -> Path:
    """The path of the tiny random-weight Mistral (tekken) model, built on first use and
    cached; the same seed gives the same file."""

    def build(path: Path, gguf: Any, np: Any) -> None:
        tokens, types, merges = _vocabulary(gguf)
        _write_gguf(path, tokens, types, merges, seed, gguf, np)

    return cached_build(f"tiny-random-mistral-tekken-r{_RECIPE}-seed{seed}.gguf", cache_dir, build)


def _vocabulary(gguf: Any) -> tuple[list[str], list[int], list[str]]:
    path = shipped_file("tekken_240718.json")
    if path is None:
        raise ChatlaneError(
            "building the tiny Mistral model needs mistral-common's tekken file: "
            "pip install 'chatlane[dev]'"
        )
    try:
        tekken = TekkenTokenizer(path, modern=True)
    except TokenizerNotFound as e:
        raise ChatlaneError(f"building the tiny Mistral model: {e}") from e
    by_id = {i: text for text, i in tekken.special_tokens.items()}
    specials = [by_id.get(i, f"<SPECIAL_{i}>") for i in range(tekken.num_special)]
    bpe, merges = tiktoken_to_bpe(tekken.ranks())
    # Fillers (<SPECIAL_n>) are control tokens too: llama.cpp wants every token text unique.
    if len(set(specials)) != len(specials) or not all(bpe):
        raise ChatlaneError(f"{path} has duplicate control tokens or gaps in its ranks")
    tokens = [*specials, *bpe]
    types = [gguf.TokenType.CONTROL] * len(specials) + [gguf.TokenType.NORMAL] * len(bpe)
    return tokens, types, merges


def _write_gguf(
    path: Path,
    tokens: list[str],
    types: list[int],
    merges: list[str],
    seed: int,
    gguf: Any,
    np: Any,
) -> None:
    n_vocab = len(tokens)
    head_dim = _EMBED // _HEADS
    out = TinyWriter(path, "llama", gguf, np, seed)
    writer = out.writer
    writer.add_name(TINY_MODEL_NAME)
    writer.add_description("random weights with Mistral's tekken vocabulary; for tests only")
    writer.add_context_length(_CONTEXT)
    writer.add_embedding_length(_EMBED)
    writer.add_block_count(_LAYERS)
    writer.add_feed_forward_length(_FFN)
    writer.add_head_count(_HEADS)
    writer.add_head_count_kv(_KV_HEADS)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(1000000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    out.add_bpe_vocabulary(
        "tekken", tokens, types, merges, bos=1, eos=2, unk=0, pad=11, add_bos=True,
        template=_CHAT_TEMPLATE,
    )  # fmt: skip

    out.add_q8("token_embd.weight", out.weights(n_vocab, _EMBED))
    for i in range(_LAYERS):
        out.add_attention(i, _EMBED, _EMBED, _KV_HEADS * head_dim)
        out.add_feed_forward(i, _EMBED, _FFN)
    writer.add_tensor("output_norm.weight", out.ones(_EMBED))
    out.write()
