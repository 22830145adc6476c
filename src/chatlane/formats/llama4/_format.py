"""The Llama 4 prompt format (Scout, Maverick): token-exact rendering and tool-call parsing.

`Llama4` renders a `ChatRequest` into the exact prompt text and its token ids, and reads the
model's raw output back (`parse`, `stream_parser`). Two profiles:

- ``meta`` (the default): token for token with Meta's reference code: llama-stack's Llama 4
  system prompt for pythonic tool calling (``augment_messages_for_tools_llama`` with the
  Llama 4 ``PythonListCustomToolGenerator``) encoded by llama-models' ``llama4`` ChatFormat.
  Calls in history are pythonic lists; a turn with calls and a tool result end with
  ``<|eom|>``.
- ``hf``: byte for byte with the official Llama 4 chat template: JSON tool definitions in
  the first user message (or the system message), an assistant's text beside its calls in
  ``<|python_start|>…<|python_end|>``, calls as JSON, ``<|eot|>`` everywhere.

Special tokens come only from the renderer: text a user typed that looks like ``<|eot|>`` is
tokenized as ordinary text. docs/llama4-format.md describes every rule and every place where
the references disagree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from chatlane.errors import InputError, MessageError
from chatlane.formats.base import Prompt
from chatlane.formats.llama4 import prompts as P
from chatlane.formats.llama4.tokenizer import (
    _MAX_RUN_CHARS,
    BEGIN_OF_TEXT,
    END_HEADER,
    END_OF_MESSAGE,
    END_OF_TURN,
    PYTHON_END,
    PYTHON_START,
    START_HEADER,
    Llama4Tokenizer,
    load_tokenizer,
)
from chatlane.messages import Image, Message, Role, Text
from chatlane.request import ChatRequest

if TYPE_CHECKING:
    from chatlane.formats.base import Grammar, ModelInfo, ParsedOutput
    from chatlane.formats.llama4.parser import Llama4StreamParser
    from chatlane.tools import Tool

__all__ = ["Llama4"]

Profile: TypeAlias = Literal["meta", "hf"]
Behavior: TypeAlias = Literal["append", "replace"]

# A rendered piece: a special token id, or text.
_Piece: TypeAlias = int | str
_Rendered: TypeAlias = tuple[str, Sequence[int]]

_SPECIAL_TEXT = {
    BEGIN_OF_TEXT: "<|begin_of_text|>",
    START_HEADER: "<|header_start|>",
    END_HEADER: "<|header_end|>",
    END_OF_MESSAGE: "<|eom|>",
    END_OF_TURN: "<|eot|>",
    PYTHON_START: "<|python_start|>",
    PYTHON_END: "<|python_end|>",
}

# How a Llama 4 control token is spelled (what a server tokenizing text reads as one).
_CONTROL_SPELLING = re.compile(r"<\|[A-Za-z0-9_]+\|>")

_ROLE = {
    Role.SYSTEM: "system",
    Role.USER: "user",
    Role.ASSISTANT: "assistant",
    Role.TOOL: "ipython",
}
_CACHE_SIZE = 4096
_HEADER_TEXT = {role: f"<|header_start|>{role}<|header_end|>\n\n" for role in _ROLE.values()}


class Llama4:
    """The Llama 4 prompt format (see the module docstring).

    Args:
        profile: ``"meta"`` (Meta's reference code, the default) or ``"hf"`` (the official
            chat template).
        system_message_behavior: meta profile, with tools: ``"append"`` (llama-stack's
            default: the caller's system text follows the tool prompt) or ``"replace"`` (the
            caller's system text replaces the default tool prompt; a
            ``{{ function_description }}`` in it is where the function list goes).
        tools_in: hf profile: where the JSON tool definitions go, ``"user"`` (the template's
            default: the first user message) or ``"system"``.
        tokenizer: a `Llama4Tokenizer`, or a path to ``tokenizer.model``; by default the one
            of the installed ``llama-models`` package or ``$CHATLANE_LLAMA4_TOKENIZER``.
    """

    stop_sequences: tuple[str, ...] = ("<|eot|>", "<|eom|>")

    def __init__(
        self,
        profile: Profile = "meta",
        *,
        system_message_behavior: Behavior = "append",
        tools_in: Literal["user", "system"] = "user",
        tokenizer: Llama4Tokenizer | str | os.PathLike[str] | None = None,
    ) -> None:
        if profile not in ("meta", "hf"):
            raise InputError(f"Llama4 profile must be 'meta' or 'hf', got {profile!r}")
        if system_message_behavior not in ("append", "replace"):
            raise InputError(
                "system_message_behavior must be 'append' or 'replace', "
                f"got {system_message_behavior!r}"
            )
        if tools_in not in ("user", "system"):
            raise InputError(f"tools_in must be 'user' or 'system', got {tools_in!r}")
        self.profile: Profile = profile
        self.system_message_behavior: Behavior = system_message_behavior
        self.tools_in = tools_in
        self._tokenizer_arg = tokenizer
        self._tokenizer: Llama4Tokenizer | None = (
            tokenizer if isinstance(tokenizer, Llama4Tokenizer) else None
        )
        # Rendered messages by identity (messages are immutable): re-rendering a conversation
        # that grew by one turn tokenizes only the new turn.
        self._messages: dict[tuple[int, bool], tuple[Message, _Rendered]] = {}
        self._preambles: dict[tuple[Any, ...], tuple[object, _Rendered]] = {}

    # -- the PromptFormat protocol -------------------------------------------------------

    @property
    def name(self) -> str:
        return f"llama4-{self.profile}"

    @property
    def tokenizer(self) -> Llama4Tokenizer:
        """The Llama 4 tokenizer (loaded on first use and shared)."""
        if self._tokenizer is None:
            arg = self._tokenizer_arg
            assert not isinstance(arg, Llama4Tokenizer)
            self._tokenizer = load_tokenizer(arg)
        return self._tokenizer

    @property
    def begin_text(self) -> str:
        return "<|begin_of_text|>"

    def matches(self, info: ModelInfo) -> bool:
        """The model is a Llama 4 model (its vocabulary or, lacking one, its name says so)."""
        from chatlane.formats.llama4 import detect

        return detect(info) is not None

    def misread_text(self, prompt: Prompt) -> str | None:
        from chatlane.formats.base import misread_control_text

        return misread_control_text(prompt, self.tokenizer, _CONTROL_SPELLING)

    def grammar(self, request: ChatRequest, *, flexible_whitespace: bool = False) -> Grammar | None:
        """A forced call written as the profile writes calls (a pythonic list for meta, a
        JSON object for hf), or the response format's schema."""
        from chatlane.formats.llama4.grammar import grammar

        return grammar(request, self.profile, flexible_whitespace=flexible_whitespace)

    def render(self, request: ChatRequest | Sequence[Message]) -> Prompt:
        """The prompt for ``request``: its text and token ids.

        It ends with the assistant header where the model's answer begins, or, when the
        conversation ends with an assistant message, inside that message (prefill: the model
        continues it).
        """
        parts = self._render(request)
        tokens: list[int] = []
        for _, ids in parts:
            tokens += ids
        return Prompt("".join([text for text, _ in parts]), tuple(tokens))

    def parse(
        self, raw: str, request: ChatRequest | None = None, *, stop_sequence: str | None = None
    ) -> ParsedOutput:
        """Read a whole raw output into its text and tool calls (both call forms)."""
        from chatlane.formats.llama4.parser import parse_output

        tools = request.tools if request is not None else None
        return parse_output(raw, tools=tools, stop_sequence=stop_sequence)

    def stream_parser(self, request: ChatRequest | None = None) -> Llama4StreamParser:
        """A fresh incremental parser for one response."""
        from chatlane.formats.llama4.parser import Llama4StreamParser

        return Llama4StreamParser(request.tools if request is not None else None)

    def __repr__(self) -> str:
        return (
            f"Llama4(profile={self.profile!r}, "
            f"system_message_behavior={self.system_message_behavior!r}, tools_in={self.tools_in!r})"
        )

    # -- rendering -----------------------------------------------------------------------

    def _render(self, request: ChatRequest | Sequence[Message]) -> list[_Rendered]:
        if not isinstance(request, ChatRequest):
            request = ChatRequest.coerce(request)
        messages = request.messages
        tools = () if request.tool_choice == "none" else request.tools
        builtin = [t.name for t in tools if t.builtin]
        if builtin:
            raise InputError(
                f"Llama 4 has no built-in tools ({', '.join(builtin)}); offer them as "
                "ordinary functions (Tool.from_schema) instead"
            )
        _check(messages)
        prefill = messages[-1].role is Role.ASSISTANT
        rest = list(messages)
        system_msg = rest.pop(0) if rest[0].role is Role.SYSTEM else None
        out: list[_Rendered] = []
        if self.profile == "meta":
            system_text = None if system_msg is None else _text(system_msg, "a system message")
            key = ("meta", system_text, tuple(map(id, tools)), request.tool_choice)
            out.append(
                self._cached(
                    key,
                    tuple(tools),
                    lambda: [
                        BEGIN_OF_TEXT,
                        *_header("system"),
                        # (segments tokenized one by one: see meta_system_segments)
                        *P.meta_system_segments(
                            system_text, tools, request.tool_choice, self.system_message_behavior
                        ),
                        END_OF_TURN,
                    ],
                )
            )
        else:
            first: Message | None = None
            if tools and self.tools_in == "user":
                if not rest:
                    raise MessageError(
                        "the Llama 4 chat template puts the tools into the first user message, "
                        "and this conversation has none"
                    )
                first = rest.pop(0)
                if first.role is not Role.USER:
                    raise MessageError(
                        "the Llama 4 chat template puts the tools into the first user message, "
                        f"and the first message after the system message is {first.role.value}"
                    )
                if prefill and not rest:
                    raise MessageError("the tools' user message cannot be the one continued")
            hf_key: tuple[Any, ...] = ("hf", id(system_msg), id(first), tuple(map(id, tools)))
            out.append(
                self._cached(
                    hf_key,
                    (system_msg, first, tuple(tools)),
                    lambda: self._hf_preamble(system_msg, first, tools),
                )
            )
        cache = self._messages
        if len(cache) + len(rest) > _CACHE_SIZE:
            cache.clear()
        last = len(rest) - 1
        for i, message in enumerate(rest):
            open_ = prefill and i == last
            hit = cache.get((id(message), open_))
            if hit is not None and hit[0] is message:
                out.append(hit[1])
                continue
            rendered = self._message(message, open_)
            cache[(id(message), open_)] = (message, rendered)
            out.append(rendered)
        if not prefill:
            out.append(self._encode(_header("assistant")))
        return out

    def _message(self, message: Message, open_: bool) -> _Rendered:
        if self.profile == "hf":
            return self._encode(self._hf_message(message, open_))
        content = message.content
        if type(content) is not str:
            return self._encode(self._meta_message(message, open_))
        # _meta_message and _encode for a text message, written directly (this runs once
        # per message of a first render): the header's precomputed ids, the content, the
        # calls' list, the end.
        tokenizer = self.tokenizer
        role = _ROLE[message.role]
        tokens = list(tokenizer.header_tokens[role])
        texts = [_HEADER_TEXT[role], content]
        if content:
            tokens += _encode_text(tokenizer, content)
        if message.tool_calls:
            listed = P.pythonic_calls(message.tool_calls)
            texts.append(listed)
            tokens += _encode_text(tokenizer, listed)
        if not open_:
            if message.tool_calls or message.role is Role.TOOL:
                texts.append("<|eom|>")
                tokens.append(END_OF_MESSAGE)
            else:
                texts.append("<|eot|>")
                tokens.append(END_OF_TURN)
        return ("".join(texts), tokens)

    def _meta_message(self, message: Message, open_: bool) -> list[_Piece]:
        # llama-models' llama4 ChatFormat.encode_message: header, each content item, the
        # calls (here one pythonic list for the turn), <|eom|> after calls and tool results.
        pieces: list[_Piece] = [*_header(_ROLE[message.role]), *_text_parts(message)]
        if message.tool_calls:
            pieces.append(P.pythonic_calls(message.tool_calls))
        if not open_:
            eom = bool(message.tool_calls) or message.role is Role.TOOL
            pieces.append(END_OF_MESSAGE if eom else END_OF_TURN)
        return pieces

    def _hf_preamble(
        self, system_msg: Message | None, first: Message | None, tools: Sequence[Tool]
    ) -> list[_Piece]:
        pieces: list[_Piece] = [BEGIN_OF_TEXT]
        if system_msg is not None:
            sys = ""
            if tools:
                sys += "Environment: ipython\n"
                if self.tools_in == "system":
                    sys += P.HF_SYSTEM_INTRO + P.HF_CALL_INSTRUCTION + P.hf_tools_text(tools)
            sys += _text(system_msg, "a system message").strip()
            pieces += [*_header("system"), sys, END_OF_TURN]
        if first is not None:
            text = (
                P.HF_USER_INTRO
                + P.HF_CALL_INSTRUCTION
                + P.hf_tools_text(tools)
                + _text(first, "the first user message").strip()
            )
            pieces += [*_header("user"), text, END_OF_TURN]
        return pieces

    def _hf_message(self, message: Message, open_: bool) -> list[_Piece]:
        # The official template, message by message; open_: transformers'
        # continue_final_message (the prompt ends after the message's stripped content).
        if message.role is Role.TOOL:
            import json

            text = json.dumps(_text(message, "a tool result"), ensure_ascii=False)
            return [*_header("ipython"), text, END_OF_TURN]
        if message.tool_calls:
            return [
                *_header("assistant"),
                PYTHON_START,
                _text(message, "an assistant message"),
                PYTHON_END,
                "".join(P.hf_call(c) for c in message.tool_calls),
                END_OF_TURN,
            ]
        text = _text(message, f"a {message.role.value} message")
        if open_:
            return [*_header(_ROLE[message.role]), text.rstrip()]
        return [*_header(_ROLE[message.role]), text, END_OF_TURN]

    # -- encoding ------------------------------------------------------------------------

    def _encode(self, pieces: Sequence[_Piece]) -> _Rendered:
        """Text and tokens of ``pieces``.

        meta: each text piece is tokenized on its own, as Meta's ChatFormat does (the header
        role, ``\\n\\n``, each content item, the calls). hf: the text between two special
        tokens is tokenized as one, as a tokenizer reading the template's output does.
        """
        tokenizer = self.tokenizer
        encode = tokenizer.encode
        # The fixed texts, and the texts seen so far in these pieces: tools repeat their
        # parameters' lines, and a repeated one is tokenized once.
        known_texts = dict(tokenizer._fixed)
        fixed = known_texts.get
        text: list[str] = []
        tokens: list[int] = []
        merge = self.profile == "hf"
        pending: list[str] = []
        for piece in pieces:
            if isinstance(piece, str):
                text.append(piece)
                if merge:
                    pending.append(piece)
                elif (known := fixed(piece)) is not None:
                    tokens += known
                elif piece:
                    ids = known_texts[piece] = _encode_text(tokenizer, piece)
                    tokens += ids
            else:
                if pending:
                    tokens += encode("".join(pending))
                    pending.clear()
                text.append(_SPECIAL_TEXT[piece])
                tokens.append(piece)
        if pending:
            tokens += encode("".join(pending))
        return ("".join(text), tokens)

    def _cached(self, key: tuple[Any, ...], owner: object, build: Any) -> _Rendered:
        hit = self._preambles.get(key)
        if hit is not None and _same(hit[0], owner):
            return hit[1]
        rendered = self._encode(build())
        if len(self._preambles) >= _CACHE_SIZE:
            self._preambles.clear()
        self._preambles[key] = (owner, rendered)
        return rendered


def _encode_text(tokenizer: Llama4Tokenizer, text: str) -> list[int]:
    # Llama4Tokenizer.encode with its test for the common case inlined: ASCII text of up to
    # 25,000 characters without two of space, \t, \v, \f in a row takes the lookahead-free
    # regex at once.
    if (
        text.isascii()
        and len(text) <= _MAX_RUN_CHARS
        and "  " not in text
        and "\t" not in text
        and "\x0b" not in text
        and "\x0c" not in text
    ):
        return tokenizer._encode_plain(text)
    return tokenizer.encode(text)


def _header(role: str) -> list[_Piece]:
    return [START_HEADER, role, END_HEADER, "\n\n"]


def _same(a: object, b: object) -> bool:
    if a is b:
        return True
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    return False


_IMAGES_UNSUPPORTED = (
    "chatlane cannot render images for Llama 4: its image tokens (<|image_start|>, one "
    "<|patch|> per patch of each tile, <|image_end|>) depend on the image processor's tiling, "
    "which chatlane does not implement; send text only, or use a chat endpoint that takes images"
)


def _text_parts(message: Message) -> list[_Piece]:
    if isinstance(message.content, str):
        return [message.content] if message.content else []
    pieces: list[_Piece] = []
    for part in message.content:
        if isinstance(part, Image):
            raise MessageError(_IMAGES_UNSUPPORTED)
        assert isinstance(part, Text)
        pieces.append(part.text)
    return pieces


def _text(message: Message, what: str) -> str:
    if message.images:
        raise MessageError(f"{what}: {_IMAGES_UNSUPPORTED}")
    return message.text


def _check(messages: Sequence[Message]) -> None:
    """Raise `MessageError` for a conversation no Llama 4 prompt can express."""
    if not messages:
        raise MessageError("a Llama 4 prompt needs at least one message")
    previous: Message | None = None
    for i, message in enumerate(messages):
        role = message.role
        if role is Role.SYSTEM and i != 0:
            raise MessageError(
                f"messages[{i}] is a system message; Llama 4 takes one system message, first"
            )
        if role is Role.TOOL and (
            previous is None
            or not (
                previous.role is Role.TOOL
                or (previous.role is Role.ASSISTANT and previous.tool_calls)
            )
        ):
            raise MessageError(
                f"messages[{i}] is a tool result that follows no assistant tool call"
            )
        previous = message
    if messages[-1].role is Role.ASSISTANT and messages[-1].tool_calls:
        raise MessageError(
            "the conversation ends with an assistant's tool calls; add their results "
            "(tool messages) before asking the model to go on"
        )
