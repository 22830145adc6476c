"""A parsed output with the model's reasoning and what went wrong with its calls, for the
families that reason apart from their answer (Qwen 3's ``<think>``, harmony's analysis)."""

from __future__ import annotations

from dataclasses import dataclass

from chatlane.formats.base import ParsedOutput
from chatlane.messages import Message, Role

__all__ = ["ReasonedOutput"]


@dataclass(frozen=True, slots=True)
class ReasonedOutput(ParsedOutput):
    """`ParsedOutput` plus the reasoning and the malformed calls."""

    reasoning: str | None = None
    """The model's reasoning (never part of ``content``), or None when it gave none."""
    malformed_calls: tuple[str, ...] = ()
    """The raw text of every call that could not be read (bad JSON, no name, no end); each
    is kept in the text it appeared in and never made into a call."""

    def message(self) -> Message:
        return Message(Role.ASSISTANT, self.content, self.tool_calls, reasoning=self.reasoning)
