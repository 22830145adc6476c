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
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from chatlane.errors import InputError, MessageError
from chatlane.formats.base import ParsedOutput, Prompt
from chatlane.formats.llama3 import prompts as P
from chatlane.formats.llama3._cache import RenderCache, State
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
"""A rendered part: its text and its tokens (see `_cache`)."""


class Llama3:
    """The Llama 3.x prompt format (see the module docstring).

    Args:
        version: ``"3.1"``, ``"3.2"`` or ``"3.3"``.
        profile: ``"meta"`` (Meta's reference code, the default) or ``"hf"`` (the Hugging
            Face chat templates).
        tool_format: how custom tools are offered and called: ``"json"``,
            ``"function_tag"`` (``<function=name>{...}</function>``, meta only) or
            ``"pythonic"`` (``[f(a=1)]``, the 3.2/3.3 zero-shot format, meta only).
        date: the ``Today Date`` of the system prompt: a `datetime.date` (written in the
            profile's style: ``21 September 2024`` or ``21 Sep 2024``) or a string used as
            it is. None means today, or the template's own default in the hf profile.
        tools_in: where JSON tool definitions go: ``"user"`` (Meta's and the templates'
            default: a user message) or ``"system"``.
        system_message_behavior: ``"append"`` (the caller's system text follows the
            default system prompt) or ``"replace"`` (it replaces the 3.2/3.3 pythonic tool
            prompt; ``{{ function_description }}`` in it marks where the function list
            goes), as llama-stack's setting of that name.
        vision: the 3.2 Vision models (11B, 90B): Meta's 3.1 prompt rules and, in the hf
            profile, the Vision template (images as ``<|image|>``).
        add_generation_prompt: end the prompt with the assistant header where the model's
            answer begins (False: end after the last message, as transformers' option).
        continue_final_message: leave a final assistant message open for the model to go on
            with (None: when the conversation ends with one; False: close it).
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
        system_message_behavior: Literal["append", "replace"] = "append",
        vision: bool = False,
        add_generation_prompt: bool = True,
        continue_final_message: bool | None = None,
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
        if system_message_behavior not in ("append", "replace"):
            raise InputError(
                "system_message_behavior must be 'append' or 'replace', "
                f"got {system_message_behavior!r}"
            )
        if vision and version != "3.2":
            raise InputError(f"vision=True is for Llama 3.2 (the Vision models), not {version}")
        if date is not None and not isinstance(date, _dt.date | str):
            raise InputError(f"date must be a datetime.date or a str, got {type(date).__name__}")
        if isinstance(date, _dt.datetime):
            date = date.date()
        self.version: Version = version
        self.profile: Profile = profile
        self.tool_format: ToolFormat = tool_format
        self.date = date
        self.tools_in = tools_in
        self.system_message_behavior = system_message_behavior
        self.vision = bool(vision)
        self.add_generation_prompt = bool(add_generation_prompt)
        self.continue_final_message = continue_final_message
        self._tokenizer_arg = tokenizer
        self._tokenizer: Llama3Tokenizer | None = (
            tokenizer if isinstance(tokenizer, Llama3Tokenizer) else None
        )
        # Rendered parts by the identity of the immutable objects they came from: re-rendering
        # a conversation that grew by one turn tokenizes only the new turn.
        self._cache = RenderCache()

    # -- the PromptFormat protocol -------------------------------------------------------

    @property
    def name(self) -> str:
        return f"llama{self.version}{'-vision' if self.vision else ''}-{self.profile}"

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
        continues it); `add_generation_prompt` and `continue_final_message` change that.
        """
        text, tokens = self._cache.join(self._render(request, tokenize=True))
        return Prompt(text, tokens)

    def render_text(self, request: ChatRequest | Sequence[Message]) -> str:
        """The prompt's text alone (for servers that tokenize it themselves)."""
        return "".join([text for text, _ in self._render(request, tokenize=False)])

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
            f"tool_format={self.tool_format!r}, date={self.date!r}"
            + (", vision=True" if self.vision else "")
            + (
                f", system_message_behavior={self.system_message_behavior!r}"
                if self.system_message_behavior != "append"
                else ""
            )
            + ")"
        )

    # -- the conversation ----------------------------------------------------------------

    def _render(
        self, request: ChatRequest | Sequence[Message], *, tokenize: bool
    ) -> list[_Rendered]:
        if not isinstance(request, ChatRequest):
            request = ChatRequest.coerce(request)
        messages = request.messages
        if not messages:
            raise MessageError("a Llama 3 prompt needs at least one message")
        tools = () if request.tool_choice == "none" else request.tools
        prefill = self._continues(messages)
        context = self._context(messages, tools)
        cache = self._cache
        state = cache.state
        grown = (
            state is not None
            and len(messages) >= len(state.messages)
            and state.tokenize == tokenize
            and state.tool_choice == request.tool_choice
            and state.context == context
            and len(tools) == len(state.tools)
            and all(map(operator.is_, tools, state.tools))
            and all(map(operator.is_, state.messages, messages))
        )
        _check_order(messages, len(state.messages) if grown and state else 0)
        if state is not None and grown:
            # The conversation grew from the last one rendered: render only the new turns.
            out = list(state.parts)
            rest: Sequence[Message] = messages[len(state.messages) :]
        elif self.profile == "meta":
            out, rest = self._meta_preamble(messages, tools, request.tool_choice, tokenize)
        else:
            out, rest = self._hf_preamble(messages, tools, context, tokenize)
        self._render_messages(out, rest, prefill, tokenize, context, grown=grown)
        # A conversation that ends open is not extended: its last message would be rendered
        # differently (closed) in the next prompt.
        cache.state = (
            None
            if prefill or not any(m.role is not _SYSTEM for m in messages)
            else State(messages, tuple(tools), request.tool_choice, tokenize, tuple(out), context)
        )
        if not prefill and self.add_generation_prompt:
            out.append(self._assistant_header(tokenize))
        return out

    def _continues(self, messages: Sequence[Message]) -> bool:
        """Whether the prompt ends inside the final message (which the model continues)."""
        final = messages[-1]
        wanted = self.continue_final_message
        if wanted is None:
            wanted = final.role is _ASSISTANT
        elif wanted and final.role is not _ASSISTANT:
            raise MessageError(
                "continue_final_message=True needs a conversation that ends with an "
                f"assistant message; this one ends with a {final.role.value} message"
            )
        if wanted and final.tool_calls:
            raise MessageError(
                "the conversation ends with an assistant's tool calls; add their results "
                "(tool messages) before asking the model to go on"
            )
        return wanted

    def _context(self, messages: Sequence[Message], tools: Sequence[Tool]) -> Any:
        """What the whole conversation decides about each message's rendering: nothing in
        the meta profile; the built-ins the template knows, and whether an image appears (the
        Vision template drops its system turn then), in the hf profile."""
        if self.profile == "meta":
            return None
        builtins = frozenset(t.name for t in tools if t.builtin) if self.version != "3.2" else _NONE
        images = self.vision and any(type(m.content) is not str and m.images for m in messages)
        return (builtins, images)

    def _render_messages(
        self,
        out: list[_Rendered],
        messages: Sequence[Message],
        prefill: bool,
        tokenize: bool,
        context: Any,
        *,
        grown: bool = False,
    ) -> None:
        """Append each message's rendering, from the cache where the same message object was
        rendered the same way before. ``grown``: the messages are the new turns of the
        conversation rendered last, which are not looked up.

        New renderings are filed in the cache by the next render that looks there, not
        here: a single render, and a conversation that only grows, never need them.
        """
        cache = self._cache
        messages_cache = cache.messages
        if cache.unfiled and (not grown or len(cache.unfiled) > 64):
            cache.file_messages()
        cache.make_room(len(messages))
        # A first render (nothing cached yet) skips the lookups; a render that looks up files
        # what it renders at once (the rest of the conversation is filed already).
        lookup = bool(messages_cache) and not grown
        append = out.append
        render = self._render_message
        closed = (False, tokenize, context)
        # A prefilled last message (left open) is rendered after the loop.
        body = messages[:-1] if prefill else messages
        start = len(out)
        rendered: _Rendered
        if lookup:
            get = messages_cache.get
            for message in body:
                hit = get(id(message))
                if hit is not None and hit[0] is message and hit[1] == closed:
                    append(hit[2])
                    continue
                rendered = render(message, False, tokenize, context)
                append(rendered)
                messages_cache[id(message)] = (message, closed, rendered)
        else:
            for message in body:
                append(render(message, False, tokenize, context))
            if body:
                cache.unfiled.append((body, out[start:], closed))
        if prefill:
            message = messages[-1]
            how = (True, tokenize, context)
            hit = messages_cache.get(id(message))
            if hit is not None and hit[0] is message and hit[1] == how:
                rendered = hit[2]
            else:
                rendered = render(message, True, tokenize, context)
                messages_cache[id(message)] = (message, how, rendered)
            append(rendered)

    # -- one rendering path per message kind ---------------------------------------------

    def _render_message(
        self, message: Message, continuing: bool, tokenize: bool, context: Any
    ) -> _Rendered:
        """One message: a turn of text (user, assistant, tool result), a turn with images,
        or an assistant's tool calls. ``continuing``: leave it open."""
        if message.tool_calls:
            return self._encode(self._call_pieces(message, context), tokenize)
        content = message.content
        role = message.role
        meta = self.profile == "meta"
        if type(content) is not str:
            if role is not _TOOL and (meta or self.vision):
                return self._encode(self._image_pieces(message, continuing, meta), tokenize)
            if message.images:
                raise InputError(
                    "the Hugging Face Llama 3.x text templates cannot render images; "
                    "use vision=True (the 3.2 Vision template) or profile='meta'"
                )
            content = message.text
        if role is _TOOL:
            # The templates quote a tool result with tojson; Meta's code writes it as it is.
            body = content if meta else P.hf_tool_content(content)
        elif meta:
            body = content
        elif self.vision:
            # The Vision template writes a message as it is; transformers ends a continued
            # one where its stripped text ends.
            body = content.rstrip() if continuing else content
        else:
            body = content.strip()
        return self._turn(_META_ROLE[role], body, continuing, tokenize)

    def _turn(self, name: str, body: str, continuing: bool, tokenize: bool) -> _Rendered:
        """A header, text, and ``<|eot_id|>`` (not when continuing)."""
        text = _HEADER_TEXT[name] + body + ("" if continuing else "<|eot_id|>")
        if not tokenize:
            return (text, ())
        tokenizer = self._tokenizer or self.tokenizer
        if self.profile == "hf" and body[:1].isspace():
            # The header's blank line and the text are one text between two special tokens;
            # tokenized apart they give the same ids only when the text starts with no space.
            tokens = [START_HEADER, *tokenizer._fixed[name], END_HEADER]
            tokens += tokenizer.encode("\n\n" + body)
        else:
            # meta: ChatFormat tokenizes the header's "\n\n" and the content apart.
            # (Llama3Tokenizer.encode's test for the common case, inlined: every message of
            # every render comes here. ASCII text of up to 25,000 characters without two of
            # space, \t, \v, \f in a row takes the lookahead-free regex directly.)
            if (
                body.isascii()
                and len(body) <= _MAX_RUN_CHARS
                and "  " not in body
                and "\t" not in body
                and "\x0b" not in body
                and "\x0c" not in body
            ):
                tokens = tokenizer._encode_plain(body) if body else []
            else:
                tokens = tokenizer.encode(body)
            tokens[0:0] = tokenizer.header_tokens[name]
        if not continuing:
            tokens.append(END_OF_TURN)
        return (text, tokens)

    def _image_pieces(self, message: Message, continuing: bool, meta: bool) -> list[_Piece]:
        """A message of text and image parts (``<|image|>`` for each image)."""
        parts = _content_pieces(message, user_only=meta)
        if continuing and not meta:
            # transformers' continue_final_message ends the prompt after the stripped text of
            # the message's last text part.
            texts = [i for i, p in enumerate(parts) if isinstance(p, str)]
            if texts:
                parts = [*parts[: texts[-1]], str(parts[texts[-1]]).rstrip()]
        pieces: list[_Piece] = [START_HEADER, _META_ROLE[message.role], END_HEADER, "\n\n"]
        pieces += parts
        if not continuing:
            pieces.append(END_OF_TURN)
        return pieces

    def _call_pieces(self, message: Message, context: Any) -> list[_Piece]:
        """An assistant's tool calls."""
        calls = message.tool_calls
        pieces: list[_Piece] = [START_HEADER, "assistant", END_HEADER, "\n\n"]
        if self.profile == "meta":
            # llama-models' ChatFormat: <|python_tag|> before a code_interpreter call only,
            # the text, each call (tokenized apart), <|eom_id|> after built-in calls.
            if calls[0].name == "code_interpreter":
                pieces.append(PYTHON_TAG)
            pieces += _content_pieces(message, user_only=True)
            pieces += [self._meta_call(call) for call in calls]
            builtin = not _BUILTIN_NAMES.isdisjoint([call.name for call in calls])
            pieces.append(END_OF_MESSAGE if builtin else END_OF_TURN)
            return pieces
        if len(calls) != 1:
            raise MessageError(
                f"an assistant message holds {len(calls)} tool calls; the Hugging Face Llama "
                "3.x templates take one per turn ('This model only supports single tool-calls "
                "at once!'): use profile='meta' for parallel calls"
            )
        # The templates write the call alone (an assistant's text beside it is dropped).
        builtins = context[0]
        call = calls[0]
        if call.name in builtins:
            pieces += [PYTHON_TAG, P.hf_builtin_call(call)]
        else:
            pieces.append(P.hf_json_call(call))
        pieces.append(END_OF_MESSAGE if builtins else END_OF_TURN)
        return pieces

    def _meta_call(self, call: ToolCall) -> str:
        # llama-models' ToolUtils.encode_tool_call.
        if call.name in _BUILTIN_NAMES:
            return P.builtin_call(call)
        if self.tool_format == "function_tag":
            return P.function_tag_call(call)
        if self.tool_format == "pythonic":
            return "[" + P.pythonic_call(call) + "]"
        return P.meta_json_call(call)

    # -- preambles -----------------------------------------------------------------------

    def _meta_preamble(
        self,
        messages: Sequence[Message],
        tools: Sequence[Tool],
        tool_choice: str | None,
        tokenize: bool,
    ) -> tuple[list[_Rendered], Sequence[Message]]:
        """``<|begin_of_text|>``, the system turn and the tool-definitions turn; and the
        messages after them."""
        system_msg = messages[0] if messages[0].role is _SYSTEM else None
        system_text = None if system_msg is None else _text_only(system_msg, "a system message")
        date = self._date_text("meta")
        key = ("meta", system_text, tuple(map(id, tools)), tool_choice, date, tokenize)
        part = self._cache.cached(
            key,
            (tuple(tools), system_msg),
            lambda: self._encode(
                self._meta_system(system_text, tools, tool_choice, date), tokenize
            ),
        )
        return [self._bos(tokenize), part], messages[1:] if system_msg is not None else messages

    def meta_system_messages(
        self, system_text: str | None, tools: Sequence[Tool], tool_choice: str | None = None
    ) -> list[tuple[str, str]]:
        """The (role, text) messages the meta profile writes before the conversation: what
        llama-stack's prompt adapter puts there."""
        pieces = self._meta_system(system_text, tools, tool_choice, self._date_text("meta"))
        return [
            (str(pieces[i + 1]), str(pieces[i + 4]))
            for i, piece in enumerate(pieces)
            if piece == START_HEADER
        ]

    def _meta_system(
        self, system_text: str | None, tools: Sequence[Tool], tool_choice: str | None, date: str
    ) -> list[_Piece]:
        # llama-stack 0.2.12, providers/utils/inference/prompt_adapter.py: 3.1 and 3.2 Vision
        # take augment_messages_for_tools_llama_3_1 (JSON or function-tag tools in a user
        # turn), 3.2 text and 3.3 augment_messages_for_tools_llama (the pythonic prompt in
        # the system turn). Each refuses the other's tool formats; chatlane renders custom
        # tools by the path of their format, and a conversation without them by the model's.
        custom = [t for t in tools if not t.builtin]
        choice = P.tool_choice_prompt(tool_choice)
        if custom:
            pythonic = self.tool_format == "pythonic"
        else:
            pythonic = self.version != "3.1" and not self.vision
        if pythonic:
            builtins = [t for t in tools if t.builtin]
            sys = P.meta_builtin_block(builtins) + "\n" if builtins else ""
            replace = self.system_message_behavior == "replace" and system_text
            if custom:
                sys += P.meta_pythonic_tools(custom, system_text if replace else None) + "\n"
            if system_text is not None and not (custom and replace):
                sys += system_text
            if choice:
                sys += "\n" + choice
            return [*_HEADER_PIECES["system"], sys.strip("\n"), END_OF_TURN]
        sys = P.meta_builtin_block(tools) + "\n" if tools else ""
        sys += P.meta_system_default(date)
        if custom and self.tools_in == "system":
            # (chatlane's own option: no reference puts these tools into the system turn)
            sys += "\n" + self._meta_custom_tools(custom)
        if system_text is not None:
            sys += "\n" + system_text
        if choice:
            sys += "\n" + choice
        pieces: list[_Piece] = [*_HEADER_PIECES["system"], sys, END_OF_TURN]
        if custom and self.tools_in == "user":
            pieces += [*_HEADER_PIECES["user"], self._meta_custom_tools(custom), END_OF_TURN]
        return pieces

    def _meta_custom_tools(self, custom: Sequence[Tool]) -> str:
        if self.tool_format == "function_tag":
            return P.meta_function_tag_tools(custom)
        return _segments(P.meta_json_tools_segments(custom))

    def _hf_preamble(
        self, messages: Sequence[Message], tools: Sequence[Tool], context: Any, tokenize: bool
    ) -> tuple[list[_Rendered], Sequence[Message]]:
        """The template's opening (``<|begin_of_text|>``, the system turn, the first user
        message with the tools); and the messages after it."""
        rest = list(messages)
        system_msg = rest.pop(0) if rest[0].role is _SYSTEM else None
        # The 3.1/3.3 templates know built-in tools by name; 3.2's list them as functions.
        builtin_aware = self.version != "3.2"
        custom = [t for t in tools if not (builtin_aware and t.builtin)]
        first_msg: Message | None = None
        if custom and self.tools_in == "user":
            if not rest:
                raise MessageError(
                    "the Hugging Face templates put the tools into the first user message, "
                    "and this conversation has none"
                )
            first_msg = rest.pop(0)
        key = ("hf", id(system_msg), id(first_msg), tuple(map(id, tools)), context, tokenize)
        part = self._cache.cached(
            key,
            (system_msg, first_msg, tuple(tools)),
            lambda: self._encode(
                self._hf_system(system_msg, first_msg, tools, custom, context[1]), tokenize
            ),
        )
        return [part], rest

    def _hf_system(
        self,
        system_msg: Message | None,
        first_msg: Message | None,
        tools: Sequence[Tool],
        custom: Sequence[Tool],
        images: bool,
    ) -> list[_Piece]:
        system_text = "" if system_msg is None else self._hf_text(system_msg, "a system message")
        pieces: list[_Piece] = [BEGIN_OF_TEXT]
        if images and system_text:
            raise MessageError(
                "the Llama 3.2 Vision template refuses a system message in a conversation "
                "with images ('Prompting with images is incompatible with system messages.')"
            )
        if not images:
            builtins = [t.name for t in tools if t.builtin] if self.version != "3.2" else []
            sys = P.hf_system_text(
                builtins, custom, self._date_text("hf"), tools_in_system=self.tools_in == "system"
            )
            pieces += [*_HEADER_PIECES["system"], sys + system_text, END_OF_TURN]
        if first_msg is not None:
            text = P.hf_user_tools_text(custom) + self._hf_text(first_msg, "the first user message")
            pieces += [*_HEADER_PIECES["user"], text, END_OF_TURN]
        return pieces

    def _hf_text(self, message: Message, what: str) -> str:
        # The templates trim the system and first user messages; the Vision template joins
        # their text parts (dropping images) first.
        if self.vision and type(message.content) is not str:
            return "".join(p.text for p in message.content if isinstance(p, Text)).strip()
        return _text_only(message, what).strip()

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

    def _bos(self, tokenize: bool) -> _Rendered:
        return self._cache.fixed_part(
            "bos", tokenize, lambda: ("<|begin_of_text|>", (BEGIN_OF_TEXT,) if tokenize else ())
        )

    def _assistant_header(self, tokenize: bool) -> _Rendered:
        return self._cache.fixed_part(
            "assistant",
            tokenize,
            lambda: (
                _HEADER_TEXT["assistant"],
                self.tokenizer.header_tokens["assistant"] if tokenize else (),
            ),
        )

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


_HEADER_PIECES: dict[str, list[_Piece]] = {
    name: [START_HEADER, name, END_HEADER, "\n\n"] for name in ("system", "user")
}
_NONE: frozenset[str] = frozenset()


def _content_pieces(message: Message, *, user_only: bool) -> list[_Piece]:
    if isinstance(message.content, str):
        return [message.content] if message.content else []
    pieces: list[_Piece] = []
    for part in message.content:
        if isinstance(part, Text):
            pieces.append(part.text)
        else:
            if user_only and message.role is not Role.USER:
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
