"""The Qwen 3 and Qwen 2.5 prompt formats: byte-exact rendering with the official chat
templates, Hermes-style tool calls, and ``<think>`` reasoning (Qwen 3).

`Qwen` renders a `ChatRequest` into the exact text the Hugging Face chat template of
Qwen3-0.6B (``qwen3``) or Qwen2.5-7B-Instruct (``qwen2.5``) gives with transformers, and its
token ids with the Qwen tokenizer when a vocabulary is at hand (docs/qwen3-format.md).
Added tokens (``<|im_start|>``, ``<tool_call>``, ``<think>``, ...) come only from the
renderer: text a user typed that looks like one is tokenized as ordinary text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from chatlane.errors import InputError, MessageError
from chatlane.formats.base import Prompt, misread_control_text
from chatlane.formats.qwen3 import grammar as _grammar
from chatlane.formats.qwen3.parser import STOP_TOKENS, QwenStreamParser, parse_output
from chatlane.formats.qwen3.tokenizer import (
    QwenTokenizer,
    TokenizerNotFound,
    load_tokenizer,
)
from chatlane.messages import Message, Role
from chatlane.request import ChatRequest
from chatlane.tools import Tool

if TYPE_CHECKING:
    import os

    from chatlane.formats.base import Grammar, ModelInfo, ParsedOutput

__all__ = ["DEFAULT_SYSTEM_QWEN25", "Qwen", "hf_tool_definition", "tools_system_text"]

Variant = Literal["qwen3", "qwen2.5"]

DEFAULT_SYSTEM_QWEN25 = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
"""The system prompt Qwen 2.5's template writes when the conversation has none."""

_TOOLS_HEAD = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)
_CONTROL_SPELLING = {
    "qwen3": re.compile(r"<\|[a-z_]+\|>|</?(?:tool_call|tool_response|think)>"),
    "qwen2.5": re.compile(r"<\|[a-z_]+\|>|</?tool_call>"),
}
# Qwen 2.5's vocabulary has no <think> or <tool_response> tokens: there they are plain text.
_SPECIAL = {
    "qwen3": re.compile(r"(<\|im_start\|>|<\|im_end\|>|</?tool_call>|</?tool_response>|</?think>)"),
    "qwen2.5": re.compile(r"(<\|im_start\|>|<\|im_end\|>|</?tool_call>)"),
}


def hf_tool_definition(tool: Tool) -> dict[str, Any]:
    """A tool in the shape transformers hands the templates."""
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    function["parameters"] = dict(tool.parameters)
    return {"type": "function", "function": function}


def tools_system_text(tools: Sequence[Tool]) -> str:
    """The tools section of the system prompt (after the user's system text)."""
    lines = "".join("\n" + json.dumps(hf_tool_definition(t), ensure_ascii=False) for t in tools)
    return _TOOLS_HEAD + lines + _TOOLS_TAIL


class _Pieces:
    """Prompt text in pieces: structure (may hold added tokens) and message text (never)."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[tuple[str, bool]] = []

    def fixed(self, text: str) -> None:
        if text:
            self.parts.append((text, True))

    def user(self, text: str) -> None:
        if text:
            self.parts.append((text, False))


class Qwen:
    """The Qwen prompt format (`PromptFormat`).

    Args:
        variant: ``qwen3`` (Qwen 3's template, with reasoning) or ``qwen2.5``.
        enable_thinking: Qwen 3's switch; False ends the prompt with an empty
            ``<think></think>`` so that the model answers at once.
        vocab: a Qwen GGUF model or ``tokenizer.json`` to tokenize with (default: the
            ``CHATLANE_QWEN_VOCAB`` environment variable); without one, prompts are text
            only (``Prompt.tokens`` is empty).
    """

    def __init__(
        self,
        variant: Variant = "qwen3",
        *,
        enable_thinking: bool = True,
        vocab: str | os.PathLike[str] | None = None,
    ) -> None:
        if variant not in _SPECIAL:
            raise InputError(f"unknown Qwen variant {variant!r}; use 'qwen3' or 'qwen2.5'")
        self.variant: Variant = variant
        self.enable_thinking = bool(enable_thinking)
        self._vocab = vocab
        self._tokenizer: QwenTokenizer | None = None
        self._tokenizer_tried = False

    # -- the protocol's properties ----------------------------------------------------

    @property
    def name(self) -> str:
        if self.variant == "qwen3" and not self.enable_thinking:
            return "qwen3-no-thinking"
        return self.variant

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        return STOP_TOKENS

    @property
    def tokenizer(self) -> QwenTokenizer | None:
        """The Qwen tokenizer, or None when no vocabulary was given or configured."""
        if not self._tokenizer_tried:
            self._tokenizer_tried = True
            try:
                self._tokenizer = load_tokenizer(self._vocab)
            except TokenizerNotFound:
                if self._vocab is not None:
                    raise
                self._tokenizer = None
        return self._tokenizer

    @property
    def begin_text(self) -> None:
        return None  # Qwen prompts start with no begin-of-sequence token

    def matches(self, info: ModelInfo) -> bool:
        from chatlane.formats.qwen3 import detect

        found = detect(info)
        return found is not None and found.startswith(self.variant)

    def misread_text(self, prompt: Prompt) -> str | None:
        tokenizer = self.tokenizer
        if tokenizer is None:
            return None
        return misread_control_text(prompt, tokenizer, _CONTROL_SPELLING[self.variant])

    def grammar(self, request: ChatRequest, *, flexible_whitespace: bool = False) -> Grammar | None:
        return _grammar.grammar(request, flexible_whitespace=flexible_whitespace)

    # -- rendering ----------------------------------------------------------------------

    def render(self, request: ChatRequest | Sequence[Message]) -> Prompt:
        if not isinstance(request, ChatRequest):
            request = ChatRequest(tuple(request))
        pieces = self._render(request)
        text = "".join(t for t, _ in pieces.parts)
        tokenizer = self.tokenizer
        if tokenizer is None:
            return Prompt(text, ())
        return Prompt(text, tuple(self._encode(pieces, tokenizer)))

    def render_text(self, request: ChatRequest | Sequence[Message]) -> str:
        """The prompt's text only (no tokenizer needed)."""
        if not isinstance(request, ChatRequest):
            request = ChatRequest(tuple(request))
        return "".join(t for t, _ in self._render(request).parts)

    def _encode(self, pieces: _Pieces, tokenizer: QwenTokenizer) -> list[int]:
        # Plain text between added tokens is tokenized as one run, as Hugging Face's
        # tokenizer does with the template's output: pieces are joined before encoding.
        special = _SPECIAL[self.variant]
        tokens: list[int] = []
        run: list[str] = []
        for text, structural in pieces.parts:
            if not structural:
                run.append(text)
                continue
            for k, part in enumerate(special.split(text)):
                if k % 2:
                    tokens += tokenizer.encode("".join(run))
                    run = []
                    tokens.append(tokenizer.special(part))
                elif part:
                    run.append(part)
        tokens += tokenizer.encode("".join(run))
        return tokens

    def _render(self, request: ChatRequest) -> _Pieces:
        messages = list(request.messages)
        if not messages:
            raise MessageError("a Qwen prompt needs at least one message")
        for m in messages:
            if m.images:
                raise MessageError("the Qwen text format takes no images")
        tools = list(request.tools) if request.tools else []
        out = _Pieces()
        first_system = messages[0].role is Role.SYSTEM
        qwen3 = self.variant == "qwen3"
        if tools:
            out.fixed("<|im_start|>system\n")
            if first_system:
                out.user(messages[0].text)
                out.fixed("\n\n" if qwen3 else "")
            elif not qwen3:
                out.fixed(DEFAULT_SYSTEM_QWEN25)
            out.fixed(("" if qwen3 else "\n\n") + tools_system_text(tools) + "<|im_end|>\n")
        elif first_system:
            out.fixed("<|im_start|>system\n")
            out.user(messages[0].text)
            out.fixed("<|im_end|>\n")
        elif not qwen3:
            out.fixed(f"<|im_start|>system\n{DEFAULT_SYSTEM_QWEN25}<|im_end|>\n")

        continuing = messages[-1].role is Role.ASSISTANT
        last_query = len(messages) - 1
        for index in range(len(messages) - 1, -1, -1):
            m = messages[index]
            if m.role is Role.USER:
                text = m.text
                if not (text.startswith("<tool_response>") and text.endswith("</tool_response>")):
                    last_query = index
                    break
        for index, m in enumerate(messages):
            last = index == len(messages) - 1
            role = m.role
            if role is Role.USER or (role is Role.SYSTEM and index > 0):
                out.fixed(f"<|im_start|>{role.value}\n")
                out.user(m.text)
                out.fixed("<|im_end|>\n")
            elif role is Role.ASSISTANT:
                if qwen3:
                    self._qwen3_assistant(out, m, index > last_query, last, continuing)
                else:
                    self._qwen25_assistant(out, m, last and continuing)
            elif role is Role.TOOL:
                if index == 0 or messages[index - 1].role is not Role.TOOL:
                    out.fixed("<|im_start|>user")
                out.fixed("\n<tool_response>\n")
                out.user(m.text)
                out.fixed("\n</tool_response>")
                if last or messages[index + 1].role is not Role.TOOL:
                    out.fixed("<|im_end|>\n")
        if not continuing:
            out.fixed("<|im_start|>assistant\n")
            if qwen3 and not self.enable_thinking:
                out.fixed("<think>\n\n</think>\n\n")
        return out

    def _calls(self, out: _Pieces, m: Message, content: str, qwen3: bool) -> None:
        for k, call in enumerate(m.tool_calls):
            if qwen3:
                if (k == 0 and content) or k > 0:
                    out.fixed("\n")
            else:
                out.fixed("\n")
            out.fixed('<tool_call>\n{"name": "')
            out.user(call.name)
            out.fixed('", "arguments": ')
            if call.valid:
                out.user(json.dumps(dict(call.arguments), ensure_ascii=False))
            elif qwen3:
                out.user(call.raw_arguments)  # a string is written as it is
            else:
                out.user(json.dumps(call.raw_arguments, ensure_ascii=False))
            out.fixed("}\n</tool_call>")

    def _qwen3_assistant(
        self, out: _Pieces, m: Message, after_query: bool, last: bool, continuing: bool
    ) -> None:
        content = m.text
        if m.reasoning is not None:
            reasoning = m.reasoning
        elif "</think>" in content:
            # The template reads reasoning left in the content (transformers' behaviour).
            reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
            content = content.split("</think>")[-1].lstrip("\n")
        else:
            reasoning = ""
        out.fixed("<|im_start|>assistant\n")
        if after_query and (last or reasoning):
            out.fixed("<think>\n")
            out.user(reasoning.strip("\n"))
            out.fixed("\n</think>\n\n")
            content = content.lstrip("\n")
        if last and continuing:
            if m.tool_calls:
                raise MessageError("cannot continue an assistant message that made tool calls")
            out.user(content.rstrip())
            return
        out.user(content)
        self._calls(out, m, content, True)
        out.fixed("<|im_end|>\n")

    def _qwen25_assistant(self, out: _Pieces, m: Message, continuing: bool) -> None:
        content = m.text
        if continuing:
            if m.tool_calls:
                raise MessageError("cannot continue an assistant message that made tool calls")
            out.fixed("<|im_start|>assistant\n")
            out.user(content.rstrip())
            return
        if not m.tool_calls:
            out.fixed("<|im_start|>assistant\n")
            out.user(content)
            out.fixed("<|im_end|>\n")
            return
        out.fixed("<|im_start|>assistant")
        if content:
            out.fixed("\n")
            out.user(content)
        self._calls(out, m, content, False)
        out.fixed("<|im_end|>\n")

    # -- parsing ------------------------------------------------------------------------

    def parse(
        self, raw: str, request: ChatRequest | None = None, *, stop_sequence: str | None = None
    ) -> ParsedOutput:
        tools = list(request.tools) if request is not None else None
        return parse_output(raw, tools=tools, stop_sequence=stop_sequence)

    def stream_parser(self, request: ChatRequest | None = None) -> QwenStreamParser:
        return QwenStreamParser(list(request.tools) if request is not None else None)

    def __repr__(self) -> str:
        return f"Qwen({self.name!r})"
