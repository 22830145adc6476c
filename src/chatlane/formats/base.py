"""What a prompt format offers the backends that render prompts themselves.

A format turns a `ChatRequest` into the exact prompt (text and token ids) and turns the
model's raw output back into text and tool calls, whole (`parse`) or incrementally
(`stream_parser`). The completion-endpoint backend and the embedded engine use only this
protocol, so a new format (Llama 4, ...) plugs in without touching them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from chatlane.events import ChatEvent
from chatlane.messages import Message, Role, ToolCall
from chatlane.request import ChatRequest
from chatlane.response import FinishReason

__all__ = ["ParsedOutput", "Prompt", "PromptFormat", "StreamParser"]


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

    @property
    def finish_reason(self) -> FinishReason:
        if self.truncated:
            return FinishReason.LENGTH
        if self.tool_calls:
            return FinishReason.TOOL_CALLS
        return FinishReason.STOP

    def message(self) -> Message:
        return Message(Role.ASSISTANT, self.content, self.tool_calls)


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


@runtime_checkable
class PromptFormat(Protocol):
    """A prompt format (see the module docstring)."""

    @property
    def name(self) -> str: ...

    @property
    def stop_sequences(self) -> Sequence[str]:
        """The texts that end the model's turn (the special tokens' text)."""
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
