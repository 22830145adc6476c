"""Helpers for the engine's tests."""

from __future__ import annotations

from pathlib import Path


def write_byte_level_model(path: Path) -> Path:
    """A tiny GGUF that llama.cpp loads but that is no Llama 3: 256 byte tokens, <s> and </s>."""
    import gguf
    import numpy as np

    from chatlane.formats._testmodel import bytes_to_unicode

    spell = bytes_to_unicode()
    tokens = [spell[b] for b in range(256)] + ["ab", "<s>", "</s>"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("byte-model")
    writer.add_context_length(256)
    writer.add_embedding_length(32)
    writer.add_block_count(1)
    writer.add_feed_forward_length(64)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_rope_dimension_count(16)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.NORMAL] * 257 + [gguf.TokenType.CONTROL] * 2)
    writer.add_token_merges(["a b"])
    writer.add_bos_token_id(257)
    writer.add_eos_token_id(258)
    writer.add_chat_template("{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}")
    rng = np.random.default_rng(0)
    writer.add_tensor(
        "token_embd.weight", rng.standard_normal((len(tokens), 32)).astype(np.float32)
    )
    shapes = {
        "attn_norm": (32,),
        "attn_q": (32, 32),
        "attn_k": (32, 32),
        "attn_v": (32, 32),
        "attn_output": (32, 32),
        "ffn_norm": (32,),
        "ffn_gate": (64, 32),
        "ffn_up": (64, 32),
        "ffn_down": (32, 64),
    }
    for name, shape in shapes.items():
        writer.add_tensor(f"blk.0.{name}.weight", rng.standard_normal(shape).astype(np.float32))
    writer.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
