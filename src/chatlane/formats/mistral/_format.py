"""The Mistral format: one class for every tokenizer version (v3, v7, v11, v13).

Rendering follows mistral-common's ``encode_chat_completion`` rule by rule (its request
normalizer, then its ``InstructTokenizerV3/V7/V11/V13``); docs/mistral-format.md lists the
rules and tests/conformance/test_mistral_oracles.py checks them token for token.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from chatlane.errors import InputError, MessageError
from chatlane.formats.base import Prompt, misread_control_text
from chatlane.messages import Image, Message, Role, Text, ToolCall
from chatlane.request import ChatRequest

if TYPE_CHECKING:
    from chatlane.formats.base import Grammar, ModelInfo, ParsedOutput, StreamParser
    from chatlane.formats.mistral.tokenizer import Tokenizer
    from chatlane.tools import Tool

__all__ = [
    "ARGS",
    "BEGIN_OF_TEXT",
    "CALL_ID",
    "END_OF_TEXT",
    "THINK",
    "THINK_END",
    "TOOL_CALLS",
    "Mistral",
    "is_valid_call_id",
    "random_call_id",
]

BEGIN_OF_TEXT = "<s>"
END_OF_TEXT = "</s>"
INST, INST_END = "[INST]", "[/INST]"
TOOLS, TOOLS_END = "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]"
RESULTS, RESULTS_END = "[TOOL_RESULTS]", "[/TOOL_RESULTS]"
TOOL_CONTENT = "[TOOL_CONTENT]"
TOOL_CALLS = "[TOOL_CALLS]"
SYSTEM, SYSTEM_END = "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"
ARGS, CALL_ID = "[ARGS]", "[CALL_ID]"
THINK, THINK_END = "[THINK]", "[/THINK]"

Version = Literal[3, 7, 11, 13]

_CONTROL_SPELLING = re.compile(r"\[/?[A-Z_]+\]|</?s>")
_CALL_ID = re.compile(r"[A-Za-z0-9]{9}")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ALPHANUMERIC = string.ascii_letters + string.digits
# mistral-common joins the texts of merged messages (and of a message's text parts) so.
_JOIN = "\n\n"

# The tokenizer file each name uses when the user points at none: mistral-common's own.
_SHIPPED = {
    (3, False): "mistral_instruct_tokenizer_240323.model.v3",
    (7, False): "mistral_instruct_tokenizer_241114.model.v7",
}
_SHIPPED_TEKKEN = "tekken_240718.json"


def is_valid_call_id(call_id: str) -> bool:
    """mistral-common's rule for tool-call ids: 9 characters, letters and digits."""
    return _CALL_ID.fullmatch(call_id) is not None


def random_call_id() -> str:
    """A fresh tool-call id that follows mistral-common's rule."""
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(9))


def mapped_call_id(call_id: str) -> str:
    """The 9-character id a foreign id is written as (``tool_call_ids="map"``): derived from
    it, so a call and its result still match."""
    if is_valid_call_id(call_id):
        return call_id
    digest = int.from_bytes(hashlib.sha256(call_id.encode("utf-8")).digest()[:8], "big")
    out = []
    for _ in range(9):
        digest, r = divmod(digest, 62)
        out.append(_ALPHANUMERIC[r])
    return "".join(out)


@dataclass(slots=True)
class _Turn:
    """One message after mistral-common's normalization (consecutive messages merged)."""

    role: Role
    texts: list[str]
    calls: list[ToolCall]
    reasoning: str | None = None
    call_id: str | None = None
    prefix: bool = False


class Mistral:
    """A Mistral prompt format (the `PromptFormat` protocol).

    Args:
        version: the tokenizer version: 3 (Mistral 7B v0.3, Nemo, Ministral), 7 (Large 2411,
            Small 3/3.1), 11 (Small 3.2, Devstral), 13 (Magistral: reasoning).
        tekken: the vocabulary is tekken (a tiktoken file) rather than SentencePiece
            (v3 and v7 come in both; v11 and v13 are tekken only).
        tokenizer_path: the model's tokenizer file (else ``$CHATLANE_MISTRAL_TOKENIZER``,
            else mistral-common's shipped file when it is installed).
        tool_call_ids: ``"strict"`` refuses history with tool-call ids that break
            mistral-common's 9-character rule (as mistral-common does); ``"map"`` writes
            each such id as a 9-character id derived from it.
        name: the registry name (for reprs and errors).
    """

    def __init__(
        self,
        version: Version = 11,
        *,
        tekken: bool = True,
        tokenizer_path: str | os.PathLike[str] | None = None,
        tool_call_ids: Literal["strict", "map"] = "strict",
        name: str | None = None,
        ids: Callable[[], str] | None = None,
    ) -> None:
        if version not in (3, 7, 11, 13):
            raise InputError(f"Mistral tokenizer versions are 3, 7, 11 and 13, not {version!r}")
        if version >= 11 and not tekken:
            raise InputError(f"Mistral v{version} is tekken only")
        if tool_call_ids not in ("strict", "map"):
            raise InputError(f"tool_call_ids is 'strict' or 'map', not {tool_call_ids!r}")
        self.version: Version = version
        self.tekken = tekken
        self.tokenizer_path = tokenizer_path
        self.tool_call_ids = tool_call_ids
        self._name = name or f"mistral-v{version}{'-tekken' if tekken and version < 11 else ''}"
        self._ids = ids
        self._tokenizer: Tokenizer | None = None

    # -- the protocol's plain parts --------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def stop_sequences(self) -> Sequence[str]:
        return (END_OF_TEXT,)

    @property
    def begin_text(self) -> str:
        return BEGIN_OF_TEXT

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer (loaded on first use; see `chatlane.formats.mistral.tokenizer`)."""
        if self._tokenizer is None:
            from chatlane.formats.mistral.tokenizer import load_tokenizer

            default = _SHIPPED_TEKKEN if self.tekken else _SHIPPED[(self.version, False)]
            self._tokenizer = load_tokenizer(
                self.tokenizer_path, default=default, modern=self.version >= 11
            )
        return self._tokenizer

    def matches(self, info: ModelInfo) -> bool:
        from chatlane.formats.mistral import detect

        found = detect(info)
        return found is not None and found.startswith("mistral")

    def misread_text(self, prompt: Prompt) -> str | None:
        return misread_control_text(prompt, self.tokenizer, _CONTROL_SPELLING)

    def grammar(self, request: ChatRequest, *, flexible_whitespace: bool = False) -> Grammar | None:
        from chatlane.formats import _grammar as G
        from chatlane.formats.mistral.grammar import grammar

        if G.forced_tools(request) is None:
            specials: Mapping[str, int] = {}
        else:
            specials = self.tokenizer.special_tokens
        return grammar(request, self.version, specials, flexible_whitespace=flexible_whitespace)

    def parse(
        self, raw: str, request: ChatRequest | None = None, *, stop_sequence: str | None = None
    ) -> ParsedOutput:
        """Read a whole raw output into its reasoning, text and tool calls."""
        from chatlane.formats.mistral.parser import parse_output

        tools = request.tools if request is not None else None
        return parse_output(raw, tools=tools, stop_sequence=stop_sequence, ids=self._ids)

    def stream_parser(self, request: ChatRequest | None = None) -> StreamParser:
        """A fresh incremental parser for one response."""
        from chatlane.formats.mistral.parser import MistralStreamParser

        return MistralStreamParser(request.tools if request is not None else None, ids=self._ids)

    def __repr__(self) -> str:
        return f"Mistral(name={self._name!r}, version={self.version}, tekken={self.tekken})"

    # -- rendering -------------------------------------------------------------------------

    def render(self, request: ChatRequest | Sequence[Message]) -> Prompt:
        """The prompt for ``request``: its text and token ids, as mistral-common encodes it.

        It ends after ``[/INST]`` (or a tool result) where the model's answer begins, or
        inside the last assistant message when the conversation ends with one (a prefix the
        model continues).
        """
        pieces = self._pieces(request)
        tokenizer = self.tokenizer
        specials = tokenizer.special_tokens
        tokens: list[int] = []
        texts: list[str] = []
        sentencepiece = not self.tekken
        for special, text in pieces:
            if special:
                try:
                    tokens.append(specials[text])
                except KeyError:
                    raise InputError(
                        f"{self._name}: the tokenizer {getattr(tokenizer, 'path', '')} has no "
                        f"control token {text}"
                    ) from None
                texts.append(text)
            else:
                encoded = tokenizer.encode(text)
                tokens += encoded
                # SentencePiece puts a space before every encoded piece of text (its dummy
                # prefix); the text shows it, as Mistral's own chat templates write it.
                texts.append(" " + text if sentencepiece and encoded else text)
        return Prompt("".join(texts), tuple(tokens))

    def render_text(self, request: ChatRequest | Sequence[Message]) -> str:
        """The prompt's text alone (no tokenizer needed for tekken versions)."""
        sentencepiece = not self.tekken
        return "".join(
            text if special or not sentencepiece or not text else " " + text
            for special, text in self._pieces(request)
        )

    def _pieces(self, request: ChatRequest | Sequence[Message]) -> list[tuple[bool, str]]:
        """The prompt as (is a control token, text) pieces, each text encoded on its own."""
        if not isinstance(request, ChatRequest):
            request = ChatRequest.coerce(request)
        version = self.version
        turns, system_prompt = self._normalize(request.messages)
        users = [i for i, t in enumerate(turns) if t.role is Role.USER]
        tools_at = (users[0] if version >= 13 else users[-1]) if users else -1
        last_user = users[-1] if users else -1
        out: list[tuple[bool, str]] = [(True, BEGIN_OF_TEXT)]
        for i, turn in enumerate(turns):
            role = turn.role
            if role is Role.USER:
                if i == tools_at and request.tools:
                    out += [(True, TOOLS), (False, _tools_json(request.tools)), (True, TOOLS_END)]
                content = _JOIN.join(turn.texts)
                if version == 3 and i == last_user and system_prompt:
                    content = system_prompt + _JOIN + content
                out += [(True, INST), (False, content), (True, INST_END)]
            elif role is Role.SYSTEM:
                out += [(True, SYSTEM), (False, _JOIN.join(turn.texts)), (True, SYSTEM_END)]
            elif role is Role.TOOL:
                out += self._tool_result(turn)
            else:
                out += self._assistant(turn)
        return [(s, t) for s, t in out if s or t]

    def _normalize(self, messages: Sequence[Message]) -> tuple[list[_Turn], str | None]:
        """mistral-common's request normalizer: consecutive messages of one role merged,
        system messages gathered (v3) or kept apart (v7+), tool results one by one (in call
        order from v11 on)."""
        version = self.version
        system: list[str] = []
        turns: list[_Turn] = []
        latest_ids: list[str] = []
        run: list[Message] = []

        def flush() -> None:
            if not run:
                return
            role = run[0].role
            if role is Role.SYSTEM:
                if version >= 7:
                    turns.extend(_Turn(role, [_JOIN.join(_texts(m))], []) for m in run)
            elif role is Role.TOOL:
                results = [
                    _Turn(role, [_JOIN.join(_texts(m))], [], call_id=self._call_id(m.tool_call_id))
                    for m in run
                ]
                if version >= 11:
                    order = {cid: k for k, cid in enumerate(latest_ids)}
                    results.sort(key=lambda t: order.get(t.call_id or "", len(order)))
                latest_ids.clear()
                turns.extend(results)
            elif role is Role.USER:
                turns.append(_Turn(role, [t for m in run for t in _texts(m) if t], []))
            else:
                texts = [t for m in run for t in _texts(m) if t]
                calls = [c for m in run for c in m.tool_calls]
                if calls and texts and version < 7:
                    raise MessageError(
                        f"{self._name}: an assistant message cannot have both text and tool "
                        "calls before v7 (mistral-common refuses it too)"
                    )
                reasoning = "".join(m.reasoning or "" for m in run) or None
                turns.append(_Turn(role, texts, calls, reasoning))
                latest_ids.extend(self._call_id(c.id) for c in calls)
            run.clear()

        for message in messages:
            if message.role is Role.SYSTEM and version < 7:
                text = _JOIN.join(_texts(message))
                if text:
                    system.append(text)
            if run and run[0].role is not message.role:
                flush()
            run.append(message)
        flush()
        if not turns or (version < 7 and turns[0].role is not Role.USER):
            turns.insert(0, _Turn(Role.USER, [], []))
        if turns[-1].role is Role.ASSISTANT:
            turns[-1].prefix = True
        return turns, _JOIN.join(system) if system else None

    def _call_id(self, call_id: str | None) -> str:
        if call_id is None:
            raise MessageError(f"{self._name}: a tool result needs the id of its call")
        if is_valid_call_id(call_id):
            return call_id
        if self.tool_call_ids == "map":
            return mapped_call_id(call_id)
        raise MessageError(
            f"{self._name}: the tool-call id {call_id!r} breaks Mistral's rule (9 letters or "
            "digits), as mistral-common does; use ids the format made, or the setting "
            "tool_call_ids='map' to write such ids as 9-character ids derived from them"
        )

    def _tool_result(self, turn: _Turn) -> list[tuple[bool, str]]:
        content = turn.texts[0]
        if self.version == 3:
            body = json.dumps(
                {"content": _json_or_text(_normalized_json(content)), "call_id": turn.call_id},
                ensure_ascii=False,
            )
            return [(True, RESULTS), (False, body), (True, RESULTS_END)]
        if self.version in (7, 11):
            assert turn.call_id is not None
            return [
                (True, RESULTS),
                (False, turn.call_id),
                (True, TOOL_CONTENT),
                (False, content),
                (True, RESULTS_END),
            ]
        return [(True, RESULTS), (False, content), (True, RESULTS_END)]

    def _assistant(self, turn: _Turn) -> list[tuple[bool, str]]:
        version = self.version
        out: list[tuple[bool, str]] = []
        if not turn.texts and not turn.calls and not (version >= 13 and turn.reasoning):
            if turn.prefix:
                return out
            raise MessageError(
                f"{self._name}: an assistant message needs text or tool calls "
                "(mistral-common refuses an empty one)"
            )
        text = _JOIN.join(turn.texts)
        if version >= 13 and turn.reasoning:
            # A content list (think chunk, text chunk): mistral-common does not strip it.
            out += [(True, THINK), (False, turn.reasoning), (True, THINK_END), (False, text)]
        elif text:
            out.append((False, text.rstrip(" ")))
        if turn.calls:
            out += self._calls(turn.calls)
        if not turn.prefix:
            out.append((True, END_OF_TEXT))
        return out

    def _calls(self, calls: Sequence[ToolCall]) -> list[tuple[bool, str]]:
        if self.version < 11:
            listed = []
            for call in calls:
                item: dict[str, Any] = {"name": _call_name(call), "arguments": _arguments(call)}
                item["id"] = self._call_id(call.id)
                listed.append(item)
            return [(True, TOOL_CALLS), (False, json.dumps(listed, ensure_ascii=False))]
        out: list[tuple[bool, str]] = []
        for call in calls:
            arguments = json.dumps(_arguments(call), ensure_ascii=False)
            call_id = self._call_id(call.id)
            out += [(True, TOOL_CALLS), (False, _call_name(call))]
            if self.version == 11:
                out += [(True, CALL_ID), (False, call_id)]
            out += [(True, ARGS), (False, arguments)]
        return out


def _texts(message: Message) -> list[str]:
    content = message.content
    if isinstance(content, str):
        return [content]
    texts: list[str] = []
    for part in content:
        if isinstance(part, Image):
            raise MessageError("the Mistral formats render no images yet (text only)")
        if isinstance(part, Text) and part.text:
            texts.append(part.text)
    return [_JOIN.join(texts)] if texts else [""]


def _call_name(call: ToolCall) -> str:
    if not _NAME.fullmatch(call.name):
        raise MessageError(
            f"the tool name {call.name!r} breaks Mistral's rule (1-64 letters, digits, _ or -)"
        )
    return call.name


def _normalized_json(text: str) -> str:
    """mistral-common's ``_normalize_json_content``: empty is ``{}``, JSON is re-dumped."""
    if not text:
        return "{}"
    try:
        return json.dumps(json.loads(text), ensure_ascii=False)
    except ValueError:
        return text


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _arguments(call: ToolCall) -> Any:
    return _json_or_text(_normalized_json(call.raw_arguments))


def _tools_json(tools: Sequence[Tool]) -> str:
    """The tools as mistral-common dumps its ``Tool`` models (``strict`` left out)."""
    listed = []
    for tool in tools:
        if not _NAME.fullmatch(tool.name):
            raise InputError(
                f"the tool name {tool.name!r} breaks Mistral's rule (1-64 letters, digits, _ or -)"
            )
        listed.append(
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description or "",
                    "parameters": dict(tool.parameters),
                },
            }
        )
    return json.dumps(listed, ensure_ascii=False)
