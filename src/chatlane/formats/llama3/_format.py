"""The Llama 3.1, 3.2 and 3.3 prompt format: token-exact rendering and tool-call parsing.

`Llama3` renders a `ChatRequest` into the exact prompt text and its token ids, and reads
the model's raw output back (`parse`, `stream_parser`). Two profiles:

- ``meta`` (the default): token-exact with Meta's reference implementation
  (``llama_models.llama3.chat_format.ChatFormat``) and the system prompts of Meta's
  published prompt_format.md pages. It is what Meta's own inference code feeds the models,
  and the pages describe the format the models were trained on.
- ``hf``: byte-exact with the official Hugging Face chat templates (what transformers,
  vLLM and llama.cpp's server render from the model repositories).

Special tokens come only from the renderer: text a user typed that looks like
``<|eot_id|>`` is tokenized as ordinary text. docs/llama3-format.md describes every rule
and every place where the references disagree.
"""

from __future__ import annotations

import datetime as _dt
import operator
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeAlias

from chatlane.errors import InputError, MessageError
from chatlane.formats.base import ParsedOutput, Prompt
from chatlane.formats.llama3 import prompts as P
from chatlane.formats.llama3.tokenizer import (
    _MAX_RUN_CHARS,
    BEGIN_OF_TEXT,
    END_HEADER,
    END_OF_MESSAGE,
    END_OF_TURN,
    PYTHON_TAG,
    START_HEADER,
    Llama3Tokenizer,
    load_tokenizer,
)
from chatlane.messages import Image, Message, Role, Text, ToolCall
from chatlane.request import ChatRequest
from chatlane.tools import Tool

if TYPE_CHECKING:
    from chatlane.formats.base import Grammar, ModelInfo, StreamParser

__all__ = [
    "BEGIN_OF_TEXT",
    "END_HEADER",
    "END_OF_MESSAGE",
    "END_OF_TURN",
    "IMAGE_TOKEN",
    "PYTHON_TAG",
    "START_HEADER",
    "Llama3",
]

IMAGE_TOKEN = 128256
"""The id an ``<|image|>`` takes in the 3.2 Vision models' input (Meta's ChatFormat and the
published token ids both use 128256, one past the text vocabulary)."""

Version: TypeAlias = Literal["3.1", "3.2", "3.3"]
Profile: TypeAlias = Literal["meta", "hf"]
ToolFormat: TypeAlias = Literal["json", "function_tag", "pythonic"]


class _Segments(str):
    """Text cut where the tokenizer's regex always ends a piece (tool definitions): the
    text, with its segments in ``segments`` for `Llama3Tokenizer.encode_segments`. A str,
    so that it reads as its text everywhere."""

    segments: list[str]


def _segments(segments: list[str]) -> _Segments:
    text = _Segments("".join(segments))
    text.segments = segments
    return text


# A rendered piece: a special token id, or text.
_Piece: TypeAlias = int | str

_SPECIAL_TEXT = {
    BEGIN_OF_TEXT: "<|begin_of_text|>",
    START_HEADER: "<|start_header_id|>",
    END_HEADER: "<|end_header_id|>",
    END_OF_MESSAGE: "<|eom_id|>",
    END_OF_TURN: "<|eot_id|>",
    PYTHON_TAG: "<|python_tag|>",
    IMAGE_TOKEN: "<|image|>",
}

_CACHE_SIZE = 4096

# How a Llama 3 control token is spelled (what a server tokenizing text reads as one).
_CONTROL_SPELLING = re.compile(r"<\|[A-Za-z0-9_]+\|>")

# The role a message's header names in the meta profile (tool results are ``ipython``).
_META_ROLE = {
    Role.SYSTEM: "system",
    Role.USER: "user",
    Role.ASSISTANT: "assistant",
    Role.TOOL: "ipython",
}
_HEADER_TEXT = {
    name: f"<|start_header_id|>{name}<|end_header_id|>\n\n"
    for name in ("system", "user", "assistant", "ipython")
}


_Rendered: TypeAlias = tuple[str, Sequence[int]]
"""A rendered part: its text and its tokens (a tuple, or a list that nothing changes once it
is here, which saves a copy per message). A plain tuple rather than a NamedTuple: a prompt
builds one per message, and a tuple subclass costs more to build than the tokens of a short
message cost to look up."""


_How: TypeAlias = tuple[bool, bool, frozenset[str] | None]
"""How a message was rendered: (left open, tokenized, the hf profile's built-ins)."""


class _State(NamedTuple):
    """The last conversation rendered, to extend it when it grows."""

    messages: tuple[Message, ...]
    tools: tuple[Tool, ...]
    tool_choice: str | None
    tokenize: bool
    parts: tuple[_Rendered, ...]
    """Every part but the closing assistant header."""
    builtins: frozenset[str] | None


class _LastPrompt(NamedTuple):
    # (a NamedTuple: built on every render, and cheaper than a frozen dataclass)
    parts: list[_Rendered]
    tokens: tuple[int, ...]
    text: str
    ends: list[tuple[int, int]]
    """Where each part ends in ``tokens`` and ``text``: filled by the next render that
    starts with some of these parts (a single render never needs them)."""


def _same(a: object, b: object) -> bool:
    # Cache owners are compared by identity (element by element for tuples): the cached
    # objects are immutable, and identity is what makes a lookup cheap.
    if a is b:
        return True
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    return False


class Llama3:
    """The Llama 3.x prompt format (see the module docstring).

    Args:
        version: ``"3.1"``, ``"3.2"`` or ``"3.3"``.
        profile: ``"meta"`` (Meta's reference, the default) or ``"hf"`` (the Hugging Face
            chat templates).
        tool_format: how custom tools are offered and called: ``"json"``,
            ``"function_tag"`` (``<function=name>{...}</function>``, meta only) or
            ``"pythonic"`` (``[f(a=1)]``, the 3.2/3.3 zero-shot format, meta only).
        date: the ``Today Date`` of the system prompt: a `datetime.date` (written in the
            profile's style: ``21 September 2024`` or ``21 Sep 2024``) or a string used as
            it is. None means today in the meta profile and the template's own default in the
            hf profile. In the meta profile a conversation without tools gets the date block
            only when a date is given (as on Meta's pages).
        tools_in: where JSON tool definitions go: ``"user"`` (Meta's and the templates'
            default: a user message) or ``"system"``.
        tokenizer: a `Llama3Tokenizer`, or a path to ``tokenizer.model``; by default the one
            of the installed ``llama-models`` package or ``$CHATLANE_LLAMA3_TOKENIZER``.
    """

    stop_sequences: tuple[str, ...] = ("<|eot_id|>", "<|eom_id|>")

    def __init__(
        self,
        version: Version = "3.1",
        profile: Profile = "meta",
        tool_format: ToolFormat = "json",
        date: _dt.date | str | None = None,
        *,
        tools_in: Literal["user", "system"] = "user",
        tokenizer: Llama3Tokenizer | str | os.PathLike[str] | None = None,
    ) -> None:
        if version not in ("3.1", "3.2", "3.3"):
            raise InputError(f"Llama3 version must be '3.1', '3.2' or '3.3', got {version!r}")
        if profile not in ("meta", "hf"):
            raise InputError(f"Llama3 profile must be 'meta' or 'hf', got {profile!r}")
        if tool_format not in ("json", "function_tag", "pythonic"):
            raise InputError(
                f"tool_format must be 'json', 'function_tag' or 'pythonic', got {tool_format!r}"
            )
        if profile == "hf" and tool_format != "json":
            raise InputError(
                "the Hugging Face templates define JSON tool calling only; "
                f"use profile='meta' for tool_format={tool_format!r}"
            )
        if tools_in not in ("user", "system"):
            raise InputError(f"tools_in must be 'user' or 'system', got {tools_in!r}")
        if date is not None and not isinstance(date, _dt.date | str):
            raise InputError(f"date must be a datetime.date or a str, got {type(date).__name__}")
        if isinstance(date, _dt.datetime):
            date = date.date()
        self.version: Version = version
        self.profile: Profile = profile
        self.tool_format: ToolFormat = tool_format
        self.date = date
        self.tools_in = tools_in
        self._tokenizer_arg = tokenizer
        self._tokenizer: Llama3Tokenizer | None = (
            tokenizer if isinstance(tokenizer, Llama3Tokenizer) else None
        )
        # Rendered messages by identity (messages are immutable): re-rendering a conversation
        # that grew by one turn tokenizes only the new turn.
        self._cache: dict[tuple[Any, ...], tuple[object, _Rendered]] = {}
        self._last: _LastPrompt | None = None
        self._state: _State | None = None
        # id(message) -> (the message, how it was rendered, the rendering)
        self._messages: dict[int, tuple[Message, _How, _Rendered]] = {}
        self._fixed: dict[tuple[str, bool], _Rendered] = {}
        # Renderings not yet in _messages: (the messages, their renderings, how they were
        # rendered), filed by the next render that looks there.
        self._unfiled: list[tuple[Sequence[Message], list[_Rendered], _How]] = []

    # -- the PromptFormat protocol -------------------------------------------------------

    @property
    def name(self) -> str:
        return f"llama{self.version}-{self.profile}"

    @property
    def tokenizer(self) -> Llama3Tokenizer:
        """The Llama 3 tokenizer (loaded on first use and shared)."""
        if self._tokenizer is None:
            arg = self._tokenizer_arg
            assert not isinstance(arg, Llama3Tokenizer)
            self._tokenizer = load_tokenizer(arg)
        return self._tokenizer

    @property
    def begin_text(self) -> str:
        return "<|begin_of_text|>"

    def matches(self, info: ModelInfo) -> bool:
        """The model is a Llama 3 model (its vocabulary or, lacking one, its name says so)."""
        from chatlane.formats.llama3 import detect

        return detect(info) is not None

    def misread_text(self, prompt: Prompt) -> str | None:
        from chatlane.formats.base import misread_control_text

        return misread_control_text(prompt, self.tokenizer, _CONTROL_SPELLING)

    def grammar(self, request: ChatRequest, *, flexible_whitespace: bool = False) -> Grammar | None:
        """A forced call in this format's tool syntax (and, for JSON calls, in the shape the
        profile renders them), or the response format's schema."""
        from chatlane.formats.llama3.grammar import grammar

        return grammar(
            request, self.tool_format, self.profile, flexible_whitespace=flexible_whitespace
        )

    def render(self, request: ChatRequest | Sequence[Message]) -> Prompt:
        """The prompt for ``request``: its text and token ids.

        It ends with the assistant header where the model's answer begins, or, when the
        conversation ends with an assistant message, inside that message (prefill: the model
        continues it).
        """
        parts = self._render(request, tokenize=True)
        # The previous prompt's parts that this one starts with (the same objects, from the
        # cache) are copied from the previous prompt in one slice; only new parts are joined.
        last = self._last
        k = 0
        if last is not None:
            old = last.parts
            n = min(len(old), len(parts))
            while k < n and old[k] is parts[k]:
                k += 1
        # Extending a list slice by slice beats chain() item by item.
        joined: list[int] = []
        if k and last is not None:
            ends = last.ends
            if len(ends) < k:
                # Where the previous prompt's parts end, counted now that they are needed.
                t_end, x_end = ends[-1] if ends else (0, 0)
                for text, tokens in last.parts[len(ends) :]:
                    t_end += len(tokens)
                    x_end += len(text)
                    ends.append((t_end, x_end))
            t_end, x_end = ends[k - 1]
            new = parts[k:]
            for _, tokens in new:
                joined += tokens
            token_tuple = last.tokens[:t_end] + tuple(joined)
            text = last.text[:x_end] + "".join([part[0] for part in new])
            ends = ends[:k]
        else:
            for _, tokens in parts:
                joined += tokens
            token_tuple = tuple(joined)
            text = "".join([part[0] for part in parts])
            ends = []
        self._last = _LastPrompt(parts, token_tuple, text, ends)
        return Prompt(text, token_tuple)

    def render_text(self, request: ChatRequest | Sequence[Message]) -> str:
        """The prompt's text alone (for servers that tokenize it themselves)."""
        return "".join([text for text, _ in self._render(request, tokenize=False)])

    def _render(
        self, request: ChatRequest | Sequence[Message], *, tokenize: bool
    ) -> list[_Rendered]:
        if not isinstance(request, ChatRequest):
            request = ChatRequest.coerce(request)
        messages = request.messages
        tools = () if request.tool_choice == "none" else request.tools
        state = self._state
        grown = (
            state is not None
            and len(messages) >= len(state.messages)
            and state.tokenize == tokenize
            and state.tool_choice == request.tool_choice
            and len(tools) == len(state.tools)
            and all(map(operator.is_, tools, state.tools))
            and all(map(operator.is_, state.messages, messages))
        )
        _check_order(messages, len(state.messages) if grown and state else 0)
        prefill = messages[-1].role is _ASSISTANT
        if prefill and messages[-1].tool_calls:
            raise MessageError(
                "the conversation ends with an assistant's tool calls; add their results "
                "(tool messages) before asking the model to go on"
            )
        if grown and state is not None:
            # The conversation grew from the last one rendered: render only the new turns.
            out = list(state.parts)
            self._render_messages(
                out, messages[len(state.messages) :], prefill, tokenize, state.builtins, grown=True
            )
            self._remember(
                messages, tools, request.tool_choice, tokenize, out, state.builtins, prefill
            )
            if not prefill:
                out.append(self._fixed_part("assistant", tokenize))
            return out
        if self.profile == "meta":
            return self._render_meta(messages, tools, request.tool_choice, prefill, tokenize)
        return self._render_hf(messages, tools, request.tool_choice, prefill, tokenize)

    def _remember(
        self,
        messages: tuple[Message, ...],
        tools: Sequence[Tool],
        tool_choice: str | None,
        tokenize: bool,
        parts: list[_Rendered],
        builtins: frozenset[str] | None,
        prefill: bool,
    ) -> None:
        # A conversation that ends with a prefill is not extended: its last message would
        # be rendered differently (closed) in the next prompt.
        has_turn = any(m.role is not _SYSTEM for m in messages)
        self._state = (
            None
            if prefill or not has_turn
            else _State(
                tuple(messages), tuple(tools), tool_choice, tokenize, tuple(parts), builtins
            )
        )

    def render_completion(self, content: str | Sequence[str | Text | Image]) -> Prompt:
        """A base-model (text completion) prompt: ``<|begin_of_text|>`` and the content,
        images as ``<|image|>``."""
        pieces: list[_Piece] = [BEGIN_OF_TEXT]
        if isinstance(content, str):
            pieces.append(content)
        else:
            for part in content:
                if isinstance(part, str):
                    pieces.append(part)
                elif isinstance(part, Text):
                    pieces.append(part.text)
                elif isinstance(part, Image):
                    pieces.append(IMAGE_TOKEN)
                else:
                    raise InputError(
                        f"completion content parts must be str, Text or Image, got {type(part).__name__}"
                    )
        text, tokens = self._encode(pieces)
        return Prompt(text, tuple(tokens))

    def parse(
        self, raw: str, request: ChatRequest | None = None, *, stop_sequence: str | None = None
    ) -> ParsedOutput:
        """Read a whole raw output into its text and tool calls."""
        from chatlane.formats.llama3.parser import parse_output

        tools = request.tools if request is not None else None
        return parse_output(raw, tools=tools, stop_sequence=stop_sequence)

    def stream_parser(self, request: ChatRequest | None = None) -> StreamParser:
        """A fresh incremental parser for one response."""
        from chatlane.formats.llama3.parser import ToolCallStreamParser

        return ToolCallStreamParser(request.tools if request is not None else None)

    def __repr__(self) -> str:
        return (
            f"Llama3(version={self.version!r}, profile={self.profile!r}, "
            f"tool_format={self.tool_format!r}, date={self.date!r})"
        )

    # -- encoding ------------------------------------------------------------------------

    def _encode(self, pieces: Sequence[_Piece], tokenize: bool = True) -> _Rendered:
        """Text and tokens of ``pieces``.

        meta: each text piece is tokenized on its own, as Meta's ChatFormat does (header role,
        ``\\n\\n``, content and each tool call separately). hf: the text between two special
        tokens is tokenized as one, as a tokenizer reading the template's output does.
        """
        if not tokenize:
            special = _SPECIAL_TEXT
            return ("".join([p if isinstance(p, str) else special[p] for p in pieces]), ())
        tokenizer = self.tokenizer
        encode = tokenizer.encode
        text: list[str] = []
        tokens: list[int] = []
        merge = self.profile == "hf"
        pending: list[str] = []
        # Role names and the blank line after a header: the tokenizer's precomputed ids,
        # without a call to encode.
        fixed = tokenizer._fixed.get
        for piece in pieces:
            if isinstance(piece, str):
                text.append(piece)
                if merge:
                    pending.append(piece)
                elif type(piece) is _Segments:
                    tokens += tokenizer._encode_segments(piece.segments, piece)
                elif (known := fixed(piece)) is not None:
                    tokens += known
                elif piece:
                    tokens += encode(piece)
            else:
                if pending:
                    tokens.extend(encode("".join(pending)))
                    pending.clear()
                text.append(_SPECIAL_TEXT[piece])
                tokens.append(piece)
        if pending:
            tokens.extend(encode("".join(pending)))
        # (the list as it is: nothing changes a rendered part's tokens)
        return ("".join(text), tokens)

    def _cached(self, key: tuple[Any, ...], owner: object, build: Any, tokenize: bool) -> _Rendered:
        key = (*key, tokenize)
        hit = self._cache.get(key)
        if hit is not None and _same(hit[0], owner):
            return hit[1]
        rendered = self._encode(build(), tokenize)
        if len(self._cache) >= _CACHE_SIZE:
            # Drop the oldest half: conversations that moved on.
            for old in list(self._cache)[: _CACHE_SIZE // 2]:
                self._cache.pop(old, None)
        self._cache[key] = (owner, rendered)
        return rendered

    def _fixed_part(self, name: str, tokenize: bool) -> _Rendered:
        # The same object every time, so that render() sees the prompts' common start.
        part = self._fixed.get((name, tokenize))
        if part is None:
            if name == "bos":
                part = ("<|begin_of_text|>", (BEGIN_OF_TEXT,) if tokenize else ())
            else:
                tokens = self.tokenizer.header_tokens[name] if tokenize else ()
                part = (_HEADER_TEXT[name], tokens)
            self._fixed[(name, tokenize)] = part
        return part

    @staticmethod
    def _header(role: str) -> list[_Piece]:
        return [START_HEADER, role, END_HEADER, "\n\n"]

    def _date_text(self, style: Literal["meta", "hf"]) -> str:
        date = self.date
        if isinstance(date, str):
            return date
        if date is None:
            if style == "hf" and self.version != "3.2":
                # The 3.1 and 3.3 templates' fixed default.
                return "26 Jul 2024"
            date = _dt.date.today()
        return P.meta_date(date) if style == "meta" else P.hf_date(date)

    def _render_messages(
        self,
        out: list[_Rendered],
        messages: Sequence[Message],
        prefill: bool,
        tokenize: bool,
        builtins: frozenset[str] | None,
        *,
        grown: bool = False,
    ) -> None:
        """Append each message's rendering, from the cache where the same message object was
        rendered the same way before (this loop is what rendering a long conversation costs,
        so it stays lean). ``grown``: the messages are the new turns of the conversation
        rendered last, which are not looked up.

        New renderings are filed in the cache by the next render that looks there, not
        here: a single render, and a conversation that only grows, never need them.
        """
        cache = self._messages
        if self._unfiled and (not grown or len(self._unfiled) > 64):
            self._file_messages()
        if len(cache) + len(messages) > _CACHE_SIZE:
            # Drop the oldest: messages of conversations that moved on.
            for old in list(cache)[
                : max(len(cache) // 2, len(cache) + len(messages) - _CACHE_SIZE)
            ]:
                cache.pop(old, None)
        # A first render (nothing cached yet) skips the lookups; a render that looks up files
        # what it renders at once (the rest of the conversation is filed already).
        lookup = bool(cache) and not grown
        append = out.append
        closed = (False, tokenize, builtins)
        # A prefilled last message (left open) is rendered after the loop.
        body = messages[:-1] if prefill else messages
        start = len(out)
        rendered: _Rendered
        if builtins is None and tokenize:
            # Plain meta messages, tokenized, are written here directly (a header, the
            # text, <|eot_id|>: what _meta_message and _encode give them).
            tokenizer = self.tokenizer
            encode = tokenizer.encode
            plain = tokenizer._encode_plain
            head = tokenizer.header_tokens
            heads = {
                _USER: (_HEADER_TEXT["user"], head["user"]),
                _ASSISTANT: (_HEADER_TEXT["assistant"], head["assistant"]),
                _TOOL: (_HEADER_TEXT["ipython"], head["ipython"]),
                _SYSTEM: (_HEADER_TEXT["system"], head["system"]),
            }
            json_calls = self.tool_format == "json"
            json_call = P.meta_json_call
            # (module globals as locals: this loop runs once per message)
            max_run = _MAX_RUN_CHARS
            eot = END_OF_TURN
            builtin_names = _BUILTIN_NAMES
            for message in body:
                if lookup:
                    hit = cache.get(id(message))
                    if hit is not None and hit[0] is message and hit[1] == closed:
                        append(hit[2])
                        continue
                content = message.content
                if type(content) is str and not message.tool_calls:
                    head_text, head_tokens = heads[message.role]
                    # Llama3Tokenizer.encode, inlined for the common case: ASCII text of up
                    # to 25,000 characters without two of space, \t, \v, \f in a row.
                    if (
                        content.isascii()
                        and len(content) <= max_run
                        and "  " not in content
                        and "\t" not in content
                        and "\x0b" not in content
                        and "\x0c" not in content
                    ):
                        tokens = plain(content)
                    else:
                        tokens = encode(content)
                    tokens[0:0] = head_tokens
                    tokens.append(eot)
                    rendered = (f"{head_text}{content}<|eot_id|>", tokens)
                elif (
                    json_calls
                    and type(content) is str
                    and builtin_names.isdisjoint([call.name for call in message.tool_calls])
                ):
                    # An assistant's JSON tool calls, none to a built-in tool (what
                    # _meta_json_calls gives them: a header, the text, each call tokenized
                    # on its own, <|eot_id|>).
                    head_text, head_tokens = heads[message.role]
                    tokens = [*head_tokens]
                    if content:
                        tokens += encode(content)
                    texts = [head_text, content]
                    for call in message.tool_calls:
                        piece = json_call(call)
                        texts.append(piece)
                        # (valid arguments are written by json.dumps: ASCII, controls
                        # escaped; encode's test for the lookahead-free regex leaves only the
                        # double space to look for)
                        if (
                            call.arguments_error is None
                            and "  " not in piece
                            and len(piece) <= max_run
                            and piece.isascii()
                        ):
                            tokens += plain(piece)
                        else:
                            tokens += encode(piece)
                    texts.append("<|eot_id|>")
                    tokens.append(eot)
                    rendered = ("".join(texts), tokens)
                else:
                    rendered = self._render_message(message, False, tokenize, builtins)
                append(rendered)
                if lookup:
                    cache[id(message)] = (message, closed, rendered)
        else:
            for message in body:
                if lookup:
                    hit = cache.get(id(message))
                    if hit is not None and hit[0] is message and hit[1] == closed:
                        append(hit[2])
                        continue
                rendered = self._render_message(message, False, tokenize, builtins)
                append(rendered)
                if lookup:
                    cache[id(message)] = (message, closed, rendered)
        if not lookup and body:
            self._unfiled.append((body, out[start:], closed))
        if prefill:
            message = messages[-1]
            how = (True, tokenize, builtins)
            hit = cache.get(id(message))
            if hit is not None and hit[0] is message and hit[1] == how:
                rendered = hit[2]
            else:
                rendered = self._render_message(message, True, tokenize, builtins)
                cache[id(message)] = (message, how, rendered)
            append(rendered)

    def _file_messages(self) -> None:
        # File the renderings of earlier renders in the cache (see _render_messages).
        cache = self._messages
        for body, parts, how in self._unfiled:
            for message, rendered in zip(body, parts, strict=True):
                cache[id(message)] = (message, how, rendered)
        self._unfiled.clear()

    def _render_message(
        self, message: Message, continuing: bool, tokenize: bool, builtins: frozenset[str] | None
    ) -> _Rendered:
        """One message's rendering (``builtins`` is None in the meta profile)."""
        content = message.content
        if builtins is not None:
            return self._encode(self._hf_message(message, continuing, builtins), tokenize)
        if type(content) is not str:
            return self._encode(self._meta_message(message, continuing), tokenize)
        if message.tool_calls:
            if self.tool_format == "json":
                return self._meta_json_calls(message, continuing, tokenize)
            return self._encode(self._meta_message(message, continuing), tokenize)
        name = _META_ROLE[message.role]
        text = _HEADER_TEXT[name] + content + ("" if continuing else "<|eot_id|>")
        if not tokenize:
            return (text, ())
        tokens = [*self.tokenizer.header_tokens[name]]
        if content:
            tokens += self.tokenizer.encode(content)
        if not continuing:
            tokens.append(END_OF_TURN)
        return (text, tokens)

    # -- meta ----------------------------------------------------------------------------

    def _render_meta(
        self,
        messages: Sequence[Message],
        tools: Sequence[Tool],
        tool_choice: str | None,
        prefill: bool,
        tokenize: bool,
    ) -> list[_Rendered]:
        out = [self._fixed_part("bos", tokenize)]
        rest = list(messages)
        system_text: str | None = None
        system_msg: Message | None = None
        if rest and rest[0].role is Role.SYSTEM:
            system_msg = rest.pop(0)
            system_text = _text_only(system_msg, "a system message")
        key = (
            "meta-preamble",
            system_text,
            tuple(map(id, tools)),
            tool_choice,
            self._date_text("meta"),
        )
        out.append(
            self._cached(
                key,
                (tuple(tools), system_msg),
                lambda: self._meta_preamble(system_text, tools, tool_choice),
                tokenize,
            )
        )
        self._render_messages(out, rest, prefill, tokenize, None)
        self._remember(tuple(messages), tools, tool_choice, tokenize, out, None, prefill)
        if not prefill:
            out.append(self._fixed_part("assistant", tokenize))
        return out

    def _meta_preamble(
        self, system_text: str | None, tools: Sequence[Tool], tool_choice: str | None
    ) -> list[_Piece]:
        builtins = [t for t in tools if t.builtin]
        custom = [t for t in tools if not t.builtin]
        choice = P.tool_choice_prompt(tool_choice if tools else None)
        pieces: list[_Piece] = []
        if custom and self.tool_format == "pythonic":
            # llama-stack's 3.2 system prompt: built-in block, the function list, then the
            # caller's system text; no date unless one is given.
            sys = ""
            if self.date is not None:
                sys += f"{P.KNOWLEDGE_CUTOFF}\nToday Date: {self._date_text('meta')}\n\n"
            if builtins:
                sys += P.meta_builtin_block(tools, environment=True) + "\n"
            sys += P.meta_pythonic_tools(custom) + "\n"
            if system_text:
                sys += system_text
            if choice:
                sys += "\n" + choice
            sys = sys.strip("\n")
            pieces += [*self._header("system"), sys, END_OF_TURN]
            return pieces
        if tools or self.date is not None:
            # llama-models' recommended system message (the 3.1 pages): tools block, the
            # knowledge and today dates, the caller's instruction, a closing newline.
            sys = ""
            if tools:
                sys += P.meta_builtin_block(tools, environment=True) + "\n"
            sys += f"{P.KNOWLEDGE_CUTOFF}\nToday Date: {self._date_text('meta')}"
            if custom and self.tools_in == "system":
                sys += "\n\n" + self._meta_custom_tools(custom)
            if system_text:
                sys += "\n\n" + system_text
            if choice:
                sys += "\n\n" + choice
            sys += "\n"
            pieces += [*self._header("system"), sys, END_OF_TURN]
            if custom and self.tools_in == "user":
                pieces += [*self._header("user"), self._meta_custom_tools(custom), END_OF_TURN]
            return pieces
        if system_text is not None:
            pieces += [*self._header("system"), system_text, END_OF_TURN]
        return pieces

    def _meta_custom_tools(self, custom: Sequence[Tool]) -> str:
        if self.tool_format == "function_tag":
            return P.meta_function_tag_tools(custom)
        if self.tool_format == "pythonic":
            return P.meta_pythonic_tools(custom)
        return _segments(P.meta_json_tools_segments(custom))

    def _meta_message(self, message: Message, continuing: bool) -> list[_Piece]:
        role = "ipython" if message.role is _TOOL else message.role.value
        pieces: list[_Piece] = self._header(role)
        calls = message.tool_calls
        builtin_first = bool(calls) and calls[0].name in P.BUILTIN_NAMES
        # Meta's pages put <|python_tag|> before built-in calls (ChatFormat 0.3.0 keeps it
        # only for code_interpreter) and before 3.2's pythonic lists.
        if builtin_first or (calls and self.tool_format == "pythonic" and self.version != "3.1"):
            pieces.append(PYTHON_TAG)
        pieces += _content_pieces(message)
        if calls:
            if self.tool_format == "pythonic" and not builtin_first:
                # One list for all the calls of a turn, as the models write them.
                custom = [c for c in calls if c.name not in P.BUILTIN_NAMES]
                pieces.append("[" + ", ".join(P.pythonic_call(c) for c in custom) + "]")
                pieces += [P.builtin_call(c) for c in calls if c.name in P.BUILTIN_NAMES]
            else:
                for call in calls:
                    pieces.append(self._meta_call(call))
        if continuing:
            return pieces
        eom = any(c.name in P.BUILTIN_NAMES for c in calls)
        pieces.append(END_OF_MESSAGE if eom else END_OF_TURN)
        return pieces

    def _meta_json_calls(self, message: Message, continuing: bool, tokenize: bool) -> _Rendered:
        """`_meta_message` for a text message with JSON tool calls, written directly (what
        it gives them: a header, the text, each call tokenized on its own, the end)."""
        calls = message.tool_calls
        name = _META_ROLE[message.role]
        content = message.content
        assert isinstance(content, str)
        if calls[0].name in P.BUILTIN_NAMES:
            return self._encode(self._meta_message(message, continuing), tokenize)
        builtin = False
        texts = []
        for call in calls:
            if call.name in P.BUILTIN_NAMES:
                builtin = True
                texts.append(P.builtin_call(call))
            else:
                texts.append(P.meta_json_call(call))
        end = "" if continuing else "<|eom_id|>" if builtin else "<|eot_id|>"
        text = _HEADER_TEXT[name] + content + "".join(texts) + end
        if not tokenize:
            return (text, ())
        tokenizer = self.tokenizer
        encode = tokenizer.encode
        tokens = [*tokenizer.header_tokens[name]]
        if content:
            tokens += encode(content)
        for piece in texts:
            if piece:
                tokens += encode(piece)
        if not continuing:
            tokens.append(END_OF_MESSAGE if builtin else END_OF_TURN)
        return (text, tokens)

    def _meta_call(self, call: ToolCall) -> str:
        if call.name in P.BUILTIN_NAMES:
            return P.builtin_call(call)
        if self.tool_format == "function_tag":
            return P.function_tag_call(call)
        if self.tool_format == "pythonic":
            return "[" + P.pythonic_call(call) + "]"
        return P.meta_json_call(call)

    # -- hf ------------------------------------------------------------------------------

    def _render_hf(
        self,
        messages: Sequence[Message],
        tools: Sequence[Tool],
        tool_choice: str | None,
        prefill: bool,
        tokenize: bool,
    ) -> list[_Rendered]:
        rest = list(messages)
        system_msg = rest.pop(0) if rest and rest[0].role is _SYSTEM else None
        # The 3.1/3.3 templates know built-in tools by name; 3.2's lists them as functions.
        builtin_aware = self.version != "3.2"
        builtins = [t.name for t in tools if t.builtin] if builtin_aware else []
        custom = [t for t in tools if not (builtin_aware and t.builtin)]
        first_msg: Message | None = None
        if custom and self.tools_in == "user":
            if not rest:
                raise MessageError(
                    "the Hugging Face templates put the tools into the first user message, "
                    "and this conversation has none"
                )
            first_msg = rest.pop(0)
        key = (
            "hf-preamble",
            id(system_msg),
            id(first_msg),
            tuple(id(t) for t in tools),
            tool_choice,
        )
        out = [
            self._cached(
                key,
                (system_msg, first_msg, tuple(tools)),
                lambda: self._hf_preamble(
                    system_msg, first_msg, tools, builtins, custom, tool_choice
                ),
                tokenize,
            )
        ]
        builtin_set = frozenset(builtins)
        self._render_messages(out, rest, prefill, tokenize, builtin_set)
        self._remember(tuple(messages), tools, tool_choice, tokenize, out, builtin_set, prefill)
        if not prefill:
            out.append(self._fixed_part("assistant", tokenize))
        return out

    def _hf_preamble(
        self,
        system_msg: Message | None,
        first_msg: Message | None,
        tools: Sequence[Tool],
        builtins: Sequence[str],
        custom: Sequence[Tool],
        tool_choice: str | None,
    ) -> list[_Piece]:
        system_text = (
            "" if system_msg is None else _text_only(system_msg, "a system message").strip()
        )
        sys = ""
        if builtins or custom:
            sys += "Environment: ipython\n"
        if builtins:
            sys += "Tools: " + ", ".join(n for n in builtins if n != "code_interpreter") + "\n\n"
        sys += f"{P.KNOWLEDGE_CUTOFF}\nToday Date: {self._date_text('hf')}\n\n"
        if custom and self.tools_in == "system":
            sys += (
                "You have access to the following functions. To call a function, please "
                "respond with JSON for a function call." + P.HF_TOOLS_INSTRUCTION
            )
            sys += P.hf_tools_text(custom)
        sys += system_text
        choice = P.tool_choice_prompt(tool_choice if tools else None)
        if choice:
            sys += ("\n\n" if system_text else "") + choice
        pieces: list[_Piece] = [BEGIN_OF_TEXT, *self._header("system"), sys, END_OF_TURN]
        if first_msg is not None:
            text = (
                "Given the following functions, please respond with a JSON for a function call "
                "with its proper arguments that best answers the given prompt.\n\n"
                + P.HF_TOOLS_INSTRUCTION
                + P.hf_tools_text(custom)
                + _text_only(first_msg, "the first user message").strip()
            )
            pieces += [*self._header("user"), text, END_OF_TURN]
        return pieces

    def _hf_message(
        self, message: Message, continuing: bool, builtins: frozenset[str]
    ) -> list[_Piece]:
        if message.role is _TOOL:
            body: list[_Piece] = [P.hf_tool_content(_text_only(message, "a tool result"))]
            pieces = [*self._header("ipython"), *body]
        elif message.tool_calls:
            pieces = self._header("assistant")
            # The templates drop an assistant's text beside its calls; chatlane keeps it.
            if message.text.strip():
                pieces.append(message.text.strip())
            rendered: list[str] = []
            tagged = False
            for call in message.tool_calls:
                if call.name in builtins:
                    tagged = tagged or not rendered
                    rendered.append(P.hf_builtin_call(call))
                else:
                    rendered.append(P.hf_json_call(call))
            if tagged:
                pieces.append(PYTHON_TAG)
            # The templates accept one call per turn; several are joined with "; ", the
            # separator the Llama JSON tool parsers (vLLM's llama3_json) split on.
            pieces.append("; ".join(rendered))
            if continuing:
                return pieces
            pieces.append(END_OF_MESSAGE if builtins else END_OF_TURN)
            return pieces
        else:
            if message.images:
                raise InputError(
                    "the Hugging Face Llama 3.x text templates cannot render images; "
                    "use profile='meta' (which writes <|image|>)"
                )
            pieces = [*self._header(message.role.value), message.text.strip()]
        if continuing:
            return pieces
        pieces.append(END_OF_TURN)
        return pieces


def _content_pieces(message: Message) -> list[_Piece]:
    if isinstance(message.content, str):
        return [message.content] if message.content else []
    pieces: list[_Piece] = []
    for part in message.content:
        if isinstance(part, Text):
            pieces.append(part.text)
        else:
            if message.role is not Role.USER:
                raise MessageError(
                    f"only user messages can hold images in a Llama 3.2 prompt, not {message.role.value}"
                )
            pieces.append(IMAGE_TOKEN)
    return pieces


def _text_only(message: Message, what: str) -> str:
    if message.images:
        raise MessageError(f"{what} cannot hold images in a Llama 3 prompt")
    return message.text


_BUILTIN_NAMES = frozenset(P.BUILTIN_NAMES)

# Enum members as module constants: attribute access on an enum class is slow in 3.11, and
# these checks run for every message of every render.
_SYSTEM = Role.SYSTEM
_TOOL = Role.TOOL
_ASSISTANT = Role.ASSISTANT
_USER = Role.USER


def _check_order(messages: Sequence[Message], start: int = 0) -> None:
    """Raise `MessageError` for a conversation no Llama prompt can express (checking from
    ``start``: the messages before it were checked in an earlier render)."""
    if not messages:
        raise MessageError("a Llama 3 prompt needs at least one message")
    previous: Message | None = messages[start - 1] if start else None
    for i in range(start, len(messages)):
        message = messages[i]
        role = message.role
        if role is _SYSTEM and i != 0:
            raise MessageError(
                f"messages[{i}] is a system message; Llama 3 takes one system message, first"
            )
        if role is _TOOL and (
            previous is None
            or not (previous.role is _TOOL or (previous.role is _ASSISTANT and previous.tool_calls))
        ):
            raise MessageError(
                f"messages[{i}] is a tool result that follows no assistant tool call"
            )
        previous = message
