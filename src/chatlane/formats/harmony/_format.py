"""The gpt-oss prompt format (harmony): token-exact with openai-harmony's renderer.

A `ChatRequest` becomes harmony messages: the system message (model identity, knowledge
cutoff, date, reasoning effort, channels), a developer message with the system prompt as
``# Instructions`` and the tools as a TypeScript namespace, then the conversation. An
assistant message's reasoning is an ``analysis`` message, its text a ``final`` message (a
``commentary`` preamble when it made calls), each call a ``commentary`` message to
``functions.NAME`` with ``<|constrain|>json``; tool results come from ``functions.NAME``.
Analysis before the first final answer is dropped once the conversation's last assistant
message is a final answer, as openai-harmony's ``auto_drop_analysis`` does.
docs/harmony-format.md has the details.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from chatlane.errors import InputError, MessageError
from chatlane.formats.base import Prompt, misread_control_text
from chatlane.formats.harmony.parser import STOP_TOKENS, HarmonyStreamParser, parse_output
from chatlane.formats.harmony.tokenizer import (
    HarmonyTokenizer,
    TokenizerNotFound,
    load_tokenizer,
)
from chatlane.messages import Message, Role
from chatlane.request import ChatRequest

if TYPE_CHECKING:
    import os

    from chatlane.formats.base import Grammar, ModelInfo, ParsedOutput
    from chatlane.tools import Tool

__all__ = ["MODEL_IDENTITY", "Harmony", "tools_typescript"]

MODEL_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
"""openai-harmony's default model identity (the system message's first line)."""
_CONTROL_SPELLING = re.compile(r"<\|[a-z0-9_]+\|>")

Effort = Literal["low", "medium", "high"]


def _lines(text: str) -> list[str]:
    """Lines as Rust's ``str::lines`` gives them (only ``\\n`` ends a line)."""
    parts = text.split("\n")
    if parts and parts[-1] == "":
        parts.pop()
    return [p[:-1] if p.endswith("\r") else p for p in parts]


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _get(node: Any, key: str) -> Any:
    return node.get(key) if isinstance(node, Mapping) else None


def _is_enum(node: Any) -> bool:
    values = _get(node, "enum")
    return isinstance(values, list) and bool(values)


def _default_note(node: Any, quoted: bool) -> str:
    """A default as the TypeScript comments write it."""
    default = node["default"]
    if isinstance(default, str):
        if not _is_enum(node):
            return f'default: "{default}"'
        return f"default: {default}" if quoted else f"default: {_compact(default)}"
    return f"default: {_compact(default)}"


def _nullable(node: Any, text: str) -> str:
    if _get(node, "nullable") is True and "null" not in text:
        return f"{text} | null"
    return text


def _variants(variants: list[Any], indent: str) -> str:
    out: list[str] = []
    for variant in variants:
        out.append(f"\n{indent} | ")
        out.append(_nullable(variant, _typescript(variant, indent + "   ")))
        notes = []
        description = _get(variant, "description")
        if isinstance(description, str):
            notes.append(description)
        if isinstance(variant, Mapping) and "default" in variant:
            notes.append(_default_note(variant, quoted=False))
        if notes:
            out.append(" // " + " ".join(notes))
    return "".join(out)


def _typescript(node: Any, indent: str) -> str:
    """A JSON schema as the TypeScript type openai-harmony writes for it."""
    one_of = _get(node, "oneOf")
    if isinstance(one_of, list):
        return _variants(one_of, indent)
    kind = _get(node, "type")
    if isinstance(kind, list):
        names = ["number" if k == "integer" else k for k in kind if isinstance(k, str)]
        if names:
            return " | ".join(names)
        kind = None
    if not isinstance(kind, str):
        return "any"
    if kind == "object":
        return _object(node, indent)
    if kind == "string":
        values = [f'"{v}"' for v in _get(node, "enum") or () if isinstance(v, str)]
        return " | ".join(values) if values else "string"
    if kind in ("number", "integer"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "array":
        if isinstance(node, Mapping) and "items" in node:
            return _typescript(node["items"], indent) + "[]"
        return "Array<any>"
    return "any"


def _object(node: Mapping[str, Any], indent: str) -> str:
    out: list[str] = []
    description = node.get("description")
    if isinstance(description, str):
        out.append(f"{indent}// {description}\n")
    out.append("{\n")
    properties = node.get("properties")
    if isinstance(properties, Mapping):
        required_list = node.get("required")
        required = (
            {r for r in required_list if isinstance(r, str)}
            if isinstance(required_list, list)
            else set()
        )
        for key, value in properties.items():
            mark = "" if key in required else "?"
            title = _get(value, "title")
            if isinstance(title, str):
                out.append(f"{indent}// {title}\n{indent}//\n")
            one_of = _get(value, "oneOf")
            prop_description = _get(value, "description")
            if one_of is None and isinstance(prop_description, str):
                out.append(f"{indent}// {prop_description}\n")
            examples = _get(value, "examples")
            if isinstance(examples, list) and examples:
                out.append(f"{indent}// Examples:\n")
                out.extend(f'{indent}// - "{e}"\n' for e in examples if isinstance(e, str))
            if isinstance(one_of, list):
                out.append(_one_of_property(key, mark, value, one_of, indent))
                continue
            text = _nullable(value, _typescript(value, indent + "    "))
            out.append(f"{indent}{key}{mark}: {text},")
            if one_of is None and isinstance(value, Mapping) and "default" in value:
                out.append(" // " + _default_note(value, quoted=True))
            out.append("\n")
    out.append(f"{indent}}}")
    return "".join(out)


def _one_of_property(
    key: str, mark: str, value: Mapping[str, Any], variants: list[Any], indent: str
) -> str:
    out: list[str] = []
    description = value.get("description")
    described = description if isinstance(description, str) else None
    first = _get(variants[0], "description") if variants else None
    above = described is not None and described != first
    if above:
        out.append(f"{indent}// {described}\n")
    if "default" in value:
        out.append(f"{indent}// {_default_note(value, quoted=True)}\n")
    out.append(f"{indent}{key}{mark}:\n")
    for i, variant in enumerate(variants):
        out.append(f"{indent} | ")
        out.append(_nullable(variant, _typescript(variant, indent + "   ")))
        notes = []
        variant_description = _get(variant, "description")
        if (
            not (i == 0 and above)
            and isinstance(variant_description, str)
            and variant_description != described
        ):
            notes.append(variant_description)
        if isinstance(variant, Mapping) and "default" in variant:
            notes.append(_default_note(variant, quoted=True))
        if notes:
            out.append(" // " + " ".join(notes))
        out.append("\n")
    out.append(f"{indent},\n")
    return "".join(out)


def tools_typescript(tools: Sequence[Tool]) -> str:
    """The developer message's ``# Tools`` section: the ``functions`` namespace."""
    lines = ["## functions\n", "namespace functions {\n"]
    for tool in tools:
        lines.extend(f"// {line}" for line in _lines(tool.description or ""))
        if tool.parameters is None:
            lines.append(f"type {tool.name} = () => any;\n")
        else:
            lines.append(f"type {tool.name} = (_: {_typescript(tool.parameters, '')}) => any;\n")
    lines.append("} // namespace functions")
    return "# Tools\n\n" + "\n".join(lines)


class _Entry:
    """One harmony message: its header parts and body, before rendering."""

    __slots__ = ("author", "body", "channel", "constrain", "recipient", "role")

    def __init__(
        self,
        role: str,
        body: str,
        *,
        author: str | None = None,
        channel: str | None = None,
        recipient: str | None = None,
        constrain: bool = False,
    ) -> None:
        self.role = role
        self.author = author or role
        self.body = body
        self.channel = channel
        self.recipient = recipient
        self.constrain = constrain


class Harmony:
    """The gpt-oss prompt format (`PromptFormat`).

    Args:
        reasoning_effort: ``low``, ``medium`` (the default) or ``high``.
        date: the conversation's start date for the system message (``2025-06-28``), or
            None for none.
        model_identity: the system message's first line.
        knowledge_cutoff: the system message's knowledge cutoff.
        vocab: the ``o200k_base.tiktoken`` file (default: see
            `chatlane.formats.harmony.tokenizer`); without one, prompts are text only.
    """

    def __init__(
        self,
        *,
        reasoning_effort: Effort = "medium",
        date: str | None = None,
        model_identity: str = MODEL_IDENTITY,
        knowledge_cutoff: str = "2024-06",
        vocab: str | os.PathLike[str] | None = None,
    ) -> None:
        if reasoning_effort not in ("low", "medium", "high"):
            raise InputError(
                f"reasoning_effort must be low, medium or high, got {reasoning_effort!r}"
            )
        self.reasoning_effort = reasoning_effort
        self.date = date
        self.model_identity = model_identity
        self.knowledge_cutoff = knowledge_cutoff
        self._vocab = vocab
        self._tokenizer: HarmonyTokenizer | None = None
        self._tried = False

    @property
    def name(self) -> str:
        return "gpt-oss"

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        return STOP_TOKENS

    @property
    def tokenizer(self) -> HarmonyTokenizer | None:
        if not self._tried:
            self._tried = True
            try:
                self._tokenizer = load_tokenizer(self._vocab)
            except TokenizerNotFound:
                if self._vocab is not None:
                    raise
        return self._tokenizer

    @property
    def begin_text(self) -> None:
        return None

    def matches(self, info: ModelInfo) -> bool:
        from chatlane.formats.harmony import detect

        return detect(info) is not None

    def misread_text(self, prompt: Prompt) -> str | None:
        tokenizer = self.tokenizer
        if tokenizer is None:
            return None
        return misread_control_text(prompt, tokenizer, _CONTROL_SPELLING)

    def grammar(self, request: ChatRequest, *, flexible_whitespace: bool = False) -> Grammar | None:
        from chatlane.formats.harmony.grammar import grammar

        return grammar(request, flexible_whitespace=flexible_whitespace)

    # -- rendering ----------------------------------------------------------------------

    def system_text(self, has_tools: bool) -> str:
        """The system message's body."""
        top = [self.model_identity, f"Knowledge cutoff: {self.knowledge_cutoff}"]
        if self.date:
            top.append(f"Current date: {self.date}")
        channels = "# Valid channels: analysis, commentary, final. Channel must be included for every message."
        if has_tools:
            channels += "\nCalls to these tools must go to the commentary channel: 'functions'."
        return "\n\n".join(["\n".join(top), f"Reasoning: {self.reasoning_effort}", channels])

    def entries(self, request: ChatRequest) -> tuple[list[_Entry], bool]:
        """The harmony messages of ``request`` (analysis dropped as the format requires), and
        whether the last one is an assistant's final answer to continue."""
        messages = list(request.messages)
        if not messages:
            raise MessageError("a gpt-oss prompt needs at least one message")
        tools = list(request.tools)
        out = [_Entry("system", self.system_text(bool(tools)))]
        systems = [m for m in messages if m.role is Role.SYSTEM]
        if tools and not systems:
            out.append(_Entry("developer", tools_typescript(tools)))
        names: dict[str, str] = {}
        first_system = True
        for m in messages:
            if m.images:
                raise MessageError("the gpt-oss format takes no images")
            role = m.role
            if role is Role.SYSTEM:
                sections = ["# Instructions", m.text]
                if tools and first_system:
                    sections.append(tools_typescript(tools))
                first_system = False
                out.append(_Entry("developer", "\n\n".join(sections)))
            elif role is Role.USER:
                out.append(_Entry("user", m.text))
            elif role is Role.ASSISTANT:
                if m.reasoning:
                    out.append(_Entry("assistant", m.reasoning, channel="analysis"))
                if m.tool_calls:
                    if m.text:
                        out.append(_Entry("assistant", m.text, channel="commentary"))
                    for call in m.tool_calls:
                        names[call.id] = call.name
                        out.append(
                            _Entry(
                                "assistant",
                                call.raw_arguments,
                                channel="commentary",
                                recipient=f"functions.{call.name}",
                                constrain=True,
                            )
                        )
                else:
                    out.append(_Entry("assistant", m.text, channel="final"))
            else:
                name = m.name or names.get(m.tool_call_id or "")
                if not name:
                    raise MessageError(
                        "a gpt-oss tool result needs its tool's name: give the message a name "
                        "or answer a call made earlier in the conversation"
                    )
                out.append(
                    _Entry(
                        "tool",
                        m.text,
                        author=f"functions.{name}",
                        channel="commentary",
                        recipient="assistant",
                    )
                )
        continuing = messages[-1].role is Role.ASSISTANT
        if continuing and messages[-1].tool_calls:
            raise MessageError("cannot continue an assistant message that made tool calls")
        last_assistant = next((e for e in reversed(out) if e.role == "assistant"), None)
        if last_assistant is not None and last_assistant.channel == "final":
            first_final = next(i for i, e in enumerate(out) if e.channel == "final")
            out = [
                e for i, e in enumerate(out) if not (i < first_final and e.channel == "analysis")
            ]
        return out, continuing

    def _pieces(self, request: ChatRequest) -> list[tuple[str, bool]]:
        entries, continuing = self.entries(request)
        pieces: list[tuple[str, bool]] = []
        for k, e in enumerate(entries):
            pieces.append(("<|start|>", True))
            pieces.append((e.author, False))
            if e.recipient is not None:
                pieces.append((f" to={e.recipient}", False))
            if e.channel is not None:
                pieces.append(("<|channel|>", True))
                pieces.append((e.channel, False))
            if e.constrain:
                pieces += [(" ", False), ("<|constrain|>", True), ("json", False)]
            pieces.append(("<|message|>", True))
            pieces.append((e.body, False))
            if continuing and k == len(entries) - 1:
                return pieces
            end = "<|call|>" if e.role == "assistant" and e.recipient is not None else "<|end|>"
            pieces.append((end, True))
        pieces += [("<|start|>", True), ("assistant", False)]
        return pieces

    def render(self, request: ChatRequest | Sequence[Message]) -> Prompt:
        if not isinstance(request, ChatRequest):
            request = ChatRequest(tuple(request))
        pieces = self._pieces(request)
        text = "".join(t for t, _ in pieces)
        tokenizer = self.tokenizer
        if tokenizer is None:
            return Prompt(text, ())
        tokens: list[int] = []
        for piece, special in pieces:
            # Each piece is encoded on its own, as openai-harmony's renderer does.
            if special:
                tokens.append(tokenizer.special(piece))
            else:
                tokens += tokenizer.encode(piece)
        return Prompt(text, tuple(tokens))

    def render_text(self, request: ChatRequest | Sequence[Message]) -> str:
        if not isinstance(request, ChatRequest):
            request = ChatRequest(tuple(request))
        return "".join(t for t, _ in self._pieces(request))

    # -- parsing ------------------------------------------------------------------------

    def parse(
        self, raw: str, request: ChatRequest | None = None, *, stop_sequence: str | None = None
    ) -> ParsedOutput:
        tools = list(request.tools) if request is not None else None
        return parse_output(raw, tools=tools, stop_sequence=stop_sequence)

    def stream_parser(self, request: ChatRequest | None = None) -> HarmonyStreamParser:
        return HarmonyStreamParser(list(request.tools) if request is not None else None)

    def __repr__(self) -> str:
        return f"Harmony(reasoning_effort={self.reasoning_effort!r})"
