"""The format seam: everything a model family means, behind one protocol.

A format turns a `ChatRequest` into the exact prompt (text and token ids) and turns the
model's raw output back into text and tool calls, whole (`parse`) or incrementally
(`stream_parser`). It also owns what only it can know: its stop sequences, its tokenizer and
its control tokens, the grammar that constrains a forced call or a schema in its own syntax,
and whether a model (`ModelInfo`) speaks it. The completion-endpoint backend, the embedded
engine, the CLI and the gateway use only this protocol and the registry in
`chatlane.formats`; none of them names a format, a special token or a tokenizer.
docs/adding-a-format.md is the guide to adding a family.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from chatlane.events import ChatEvent
from chatlane.messages import Message, Role, ToolCall
from chatlane.request import ChatRequest
from chatlane.response import FinishReason

__all__ = [
    "FormatBase",
    "Grammar",
    "ModelInfo",
    "ParsedOutput",
    "Prompt",
    "PromptFormat",
    "StreamParser",
    "Tokenizer",
    "misread_control_text",
]


@dataclass(frozen=True, slots=True)
class Prompt:
    """A rendered prompt: its text and its token ids (special tokens included)."""

    text: str
    tokens: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ParsedOutput:
    """A model's raw output, read: its text, its tool calls, and how it ended."""

    content: str
    """The text meant for the user (prose around calls is kept, never dropped)."""
    tool_calls: tuple[ToolCall, ...] = ()
    stop_sequence: str | None = None
    """The stop token that ended the output (``<|eom_id|>``, ``<|eot_id|>``), or None."""
    truncated: bool = False
    """The output was cut off (by max_tokens) before the model ended it."""
    partial_call: str | None = None
    """The raw text of a tool call that was cut off; never turned into a made-up call."""
    unknown_tools: tuple[str, ...] = ()
    """Names the model called that the request did not offer (the calls are in tool_calls)."""
    reasoning: str | None = None
    """The model's reasoning, kept apart from ``content``; None when it gave none."""
    malformed_calls: tuple[str, ...] = ()
    """The raw text of every call the model began that could not be read (bad JSON, no name,
    no end): it stays in the text it appeared in and is never made into a call."""

    @property
    def finish_reason(self) -> FinishReason:
        if self.truncated:
            return FinishReason.LENGTH
        if self.tool_calls:
            return FinishReason.TOOL_CALLS
        return FinishReason.STOP

    def message(self) -> Message:
        return Message(Role.ASSISTANT, self.content, self.tool_calls, reasoning=self.reasoning)


@runtime_checkable
class StreamParser(Protocol):
    """Raw text in, events out. Plain text is released as soon as it cannot start a call."""

    def feed(self, text: str) -> list[ChatEvent]:
        """Take the next piece of raw output; return the events it completes."""
        ...

    def finish(
        self, stop_sequence: str | None = None, *, truncated: bool = False
    ) -> list[ChatEvent]:
        """The output ended (with that stop token, or cut off); return the remaining events,
        ending with `Finished`."""
        ...


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What is known about a model, for `chatlane.formats.detect` to pick its format.

    Backends fill in what they can read without knowing any format: the embedded engine from
    the GGUF file's metadata and vocabulary, a completion backend from the server's model id.
    """

    model_id: str | None = None
    """A server's model id (``/v1/models``) or the name a user gave."""
    architecture: str | None = None
    """GGUF ``general.architecture`` (``llama``, ``llama4``, ``qwen3``, ...)."""
    name: str | None = None
    """GGUF ``general.name``."""
    chat_template: str | None = None
    """The model's own chat template (GGUF ``tokenizer.chat_template``)."""
    control_token: Callable[[str], int | None] | None = field(default=None, compare=False)
    """The id of the control token spelled like the argument in the model's vocabulary, or
    None if it has none (the embedded engine answers from the loaded vocabulary)."""
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """Everything else the backend read (GGUF key/values), as it read it."""

    def has_control_token(self, text: str) -> bool:
        """The vocabulary is known and has a control token spelled ``text``."""
        return self.control_token is not None and self.control_token(text) is not None

    @property
    def names(self) -> tuple[str, ...]:
        """The model's id and name, as far as known (what name patterns are matched against)."""
        return tuple(n for n in (self.model_id, self.name) if n)


@runtime_checkable
class Tokenizer(Protocol):
    """A format's tokenizer: plain text to ids and back, and its control tokens."""

    @property
    def special_tokens(self) -> Mapping[str, int]:
        """Every control token: its text to its id."""
        ...

    def encode(self, text: str) -> list[int]:
        """The ids of ``text`` as plain text: text that looks like a control token stays text."""
        ...

    def decode(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens`` (control tokens as their text)."""
        ...

    def is_special(self, token: int) -> bool:
        """``token`` is a control token."""
        ...


@dataclass(frozen=True, slots=True)
class Grammar:
    """What constrained decoding must follow for one request: an llguidance Lark grammar.

    The embedded engine masks every token the grammar forbids; once the grammar is complete,
    generation may end only with one of ``end_sequences``.
    """

    lark: str
    """The grammar, in llguidance's Lark dialect (``%json`` for JSON-schema values)."""
    is_call: bool
    """The output is a forced tool call, read back by the format's parser; else it is the
    response format's JSON, which is text whatever it looks like."""
    end_sequences: tuple[str, ...]
    """The stop sequences (of `PromptFormat.stop_sequences`) that may end the output."""


@runtime_checkable
class PromptFormat(Protocol):
    """A prompt format (see the module docstring)."""

    @property
    def name(self) -> str:
        """The format and its settings in a word, as reprs, logs and errors show it
        (``llama3.1-meta``)."""
        ...

    @property
    def stop_sequences(self) -> Sequence[str]:
        """The texts that end the model's turn (the special tokens' text)."""
        ...

    @property
    def tokenizer(self) -> Tokenizer | None:
        """The format's tokenizer, or None for a format that renders text only."""
        ...

    @property
    def begin_text(self) -> str | None:
        """The begin-of-sequence text every prompt starts with (servers that add their own
        have it stripped), or None."""
        ...

    def matches(self, info: ModelInfo) -> bool:
        """The model described by ``info`` speaks this format (its control tokens are in the
        vocabulary, or its name says so)."""
        ...

    def misread_text(self, prompt: Prompt) -> str | None:
        """Text in ``prompt`` that came from a message but that a server tokenizing the
        prompt's text would read as a control token (the first such text), or None."""
        ...

    def grammar(self, request: ChatRequest, *, flexible_whitespace: bool = False) -> Grammar | None:
        """The grammar for a forced tool call (``tool_choice`` required or named), written
        in this format's own call syntax, or for the response format's JSON schema; None
        when the request constrains nothing."""
        ...

    def render(self, request: ChatRequest) -> Prompt:
        """The prompt for ``request``, ending where the model's answer begins (or continuing
        the last assistant message, when the conversation ends with one)."""
        ...

    def parse(
        self, raw: str, request: ChatRequest | None = None, *, stop_sequence: str | None = None
    ) -> ParsedOutput:
        """Read a whole raw output; ``request`` tells which tools were offered."""
        ...

    def stream_parser(self, request: ChatRequest | None = None) -> StreamParser:
        """A fresh incremental parser for one response."""
        ...


def misread_control_text(
    prompt: Prompt, tokenizer: Tokenizer, spelling: re.Pattern[str]
) -> str | None:
    """`PromptFormat.misread_text` for a format whose control tokens are spelled as
    ``spelling`` matches: the first such text in the prompt's text that its tokens do not
    have as a control token (so it came from a message), or None."""
    found: list[str] = [t for t in spelling.findall(prompt.text) if t in tokenizer.special_tokens]
    if not found:
        return None
    if not prompt.tokens:
        # Nothing to compare with (the prompt was rendered as text only).
        return None
    rendered: dict[str, int] = {}
    decode, is_special = tokenizer.decode, tokenizer.is_special
    for token in prompt.tokens:
        if is_special(token):
            text = decode([token])
            rendered[text] = rendered.get(text, 0) + 1
    for text in found:
        if rendered.get(text, 0) == 0:
            return text
        rendered[text] -= 1
    return None


class FormatBase:
    """Defaults for the parts of `PromptFormat` that a simple format may leave out.

    A format of one's own subclasses this and writes `name`, `stop_sequences`, `render`,
    `parse` and `stream_parser`; it gets no tokenizer, no begin text, no model detection, the
    misread check from ``control_spelling`` (a regex of its control tokens' texts) and no
    constrained decoding.
    """

    name: str = "custom"
    stop_sequences: Sequence[str] = ()
    tokenizer: Tokenizer | None = None
    begin_text: str | None = None
    control_spelling: re.Pattern[str] | None = None
    """How the format's control tokens are spelled, for `misread_text`."""

    def matches(self, info: ModelInfo) -> bool:
        return False

    def misread_text(self, prompt: Prompt) -> str | None:
        if self.tokenizer is None or self.control_spelling is None:
            return None
        return misread_control_text(prompt, self.tokenizer, self.control_spelling)

    def grammar(self, request: ChatRequest, *, flexible_whitespace: bool = False) -> Grammar | None:
        from chatlane.errors import InputError

        if request.response_format is None and request.tool_choice in (None, "auto", "none"):
            return None
        raise InputError(
            f"the prompt format {self.name!r} defines no grammar, so the embedded engine "
            "cannot force a tool call or a response format with it"
        )
