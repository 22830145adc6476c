"""A deliberately small Llama 3 prompt format for the engine's tests.

It implements the `PromptFormat` protocol with the Llama 3 header layout and JSON tool calls
(``{"name": ..., "parameters": {...}}``), tokenizing with tiktoken and Meta's tokenizer file,
so the engine tests check the engine, not the full format (which has its own tests).
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chatlane.events import (
    ChatEvent,
    Finished,
    TextDelta,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStarted,
)
from chatlane.formats.base import ParsedOutput, Prompt, StreamParser
from chatlane.messages import ToolCall
from chatlane.request import ChatRequest

SPECIAL = {
    "<|begin_of_text|>": 128000,
    "<|start_header_id|>": 128006,
    "<|end_header_id|>": 128007,
    "<|eom_id|>": 128008,
    "<|eot_id|>": 128009,
    "<|python_tag|>": 128010,
}


@functools.cache
def encoding() -> Any:
    import llama_models.llama3 as package
    import tiktoken

    ranks = {}
    for line in (Path(package.__file__).parent / "tokenizer.model").read_text().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    pattern = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    return tiktoken.Encoding("llama3", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})


class MinimalLlama3:
    name = "minimal-llama3"
    tool_format = "json"
    stop_sequences: Sequence[str] = ("<|eot_id|>", "<|eom_id|>")

    def render(self, request: ChatRequest) -> Prompt:
        pieces: list[tuple[str, bool]] = [("<|begin_of_text|>", True)]
        messages = list(request.messages)
        if request.tools:
            listing = "\n".join(
                json.dumps({"name": t.name, "parameters": dict(t.parameters)})
                for t in request.tools
            )
            pieces += [
                ("<|start_header_id|>", True),
                ("system", False),
                ("<|end_header_id|>", True),
                ("\n\nCall a tool as JSON. Tools:\n" + listing, False),
                ("<|eot_id|>", True),
            ]
        for m in messages:
            text = m.text + "".join(
                json.dumps({"name": c.name, "parameters": dict(c.arguments)}) for c in m.tool_calls
            )
            role = "ipython" if m.role == "tool" else str(m.role)
            pieces += [
                ("<|start_header_id|>", True),
                (role, False),
                ("<|end_header_id|>", True),
                ("\n\n" + text, False),
                ("<|eot_id|>", True),
            ]
        pieces += [("<|start_header_id|>", True), ("assistant", False), ("<|end_header_id|>", True)]
        pieces.append(("\n\n", False))
        tokens: list[int] = []
        for text, special in pieces:
            tokens += [SPECIAL[text]] if special else encoding().encode(text, disallowed_special=())
        return Prompt("".join(t for t, _ in pieces), tuple(tokens))

    def parse(
        self, raw: str, request: ChatRequest | None = None, *, stop_sequence: str | None = None
    ) -> ParsedOutput:
        stripped = raw.strip()
        if stripped.startswith("{"):
            try:
                value = json.loads(stripped)
            except ValueError:
                value = None
            if isinstance(value, dict) and "name" in value:
                call = ToolCall.from_raw(
                    "call_0", str(value["name"]), json.dumps(value.get("parameters"))
                )
                return ParsedOutput("", (call,), stop_sequence)
        return ParsedOutput(raw, (), stop_sequence, truncated=False)

    def stream_parser(self, request: ChatRequest | None = None) -> StreamParser:
        return _Parser(self, request)


class _Parser:
    def __init__(self, fmt: MinimalLlama3, request: ChatRequest | None) -> None:
        self._fmt = fmt
        self._request = request
        self._held: list[str] = []
        self._call = False

    def feed(self, text: str) -> list[ChatEvent]:
        if (
            not self._held
            and not self._call
            and text.lstrip().startswith("{")
            and self._request
            and self._request.tools
        ):
            self._call = True
        if self._call:
            self._held.append(text)
            return []
        return [TextDelta(text)]

    def finish(
        self, stop_sequence: str | None = None, *, truncated: bool = False
    ) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        if self._call:
            parsed = self._fmt.parse(
                "".join(self._held), self._request, stop_sequence=stop_sequence
            )
            if parsed.tool_calls:
                call = parsed.tool_calls[0]
                events += [
                    ToolCallStarted(0, call.id, call.name),
                    ToolCallDelta(0, call.raw_arguments),
                    ToolCallDone(0, call),
                ]
            else:
                events.append(TextDelta(parsed.content))
            reason = ParsedOutput("", parsed.tool_calls, truncated=truncated).finish_reason
        else:
            reason = ParsedOutput("", truncated=truncated).finish_reason
        events.append(Finished(reason, stop_sequence=stop_sequence))
        return events


def write_byte_level_model(path: Path) -> Path:
    """A tiny GGUF that llama.cpp loads but that is no Llama 3: 256 byte tokens, <s> and </s>."""
    import gguf
    import numpy as np

    from chatlane.testing import _bytes_to_unicode

    spell = _bytes_to_unicode()
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
