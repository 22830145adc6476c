"""The meta profile against Meta's reference implementation, token for token.

``llama_models.llama3.chat_format.ChatFormat`` (llama-models 0.3.0) encodes the same
conversations; hypothesis draws them. ChatFormat takes the system prompt's text as given, so
chatlane's system and tool-definition texts are handed to it (those texts are checked against
Meta's published pages in test_llama_doc_prompts.py). Where the references disagree,
chatlane follows Meta's pages and the oracle's output is adjusted here, each time saying why
(docs/llama3-format.md lists the same points).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import jinja2.ext
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment
from llama_models.datatypes import (
    RawMediaItem,
    RawMessage,
    RawTextItem,
    StopReason,
    ToolPromptFormat,
)
from llama_models.datatypes import ToolCall as MetaToolCall
from llama_models.llama3.chat_format import ChatFormat
from llama_models.llama3.tokenizer import Tokenizer

from chatlane.errors import MessageError
from chatlane.formats.llama3 import Llama3
from chatlane.formats.llama3.prompts import hf_tool_definition
from chatlane.formats.llama3.tokenizer import END_OF_TURN, PYTHON_TAG, START_HEADER
from chatlane.messages import (
    Image,
    Message,
    Role,
    Text,
    ToolCall,
    assistant,
    system,
    tool_result,
    user,
)
from chatlane.request import ChatRequest
from chatlane.tools import Tool, brave_search, code_interpreter, wolfram_alpha

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)

# Text that looks like structure: special tokens' text, JSON and call starts, whitespace.
TRICKY = [
    "<|eot_id|>",
    "<|eom_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|begin_of_text|>",
    "<|python_tag|>",
    "<|image|>",
    "<|reserved_special_token_7|>",
    "<function=f>",
    '{"name": "f"}',
    "[f(a=1)]",
    "\n\n",
    "\n",
    " ",
    "\t",
    "  x",
    "é",
    "日本語",
    "🙂",
    "'s",
    "ipython",
    "assistant",
]

text_piece = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=24),
    st.sampled_from(TRICKY),
)
texts = st.lists(text_piece, max_size=5).map("".join)

WEATHER = Tool.from_schema(
    "get_weather",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "The city"},
            "unit": {"type": "string", "enum": ["c", "f"], "default": "c"},
        },
        "required": ["city"],
    },
    "Weather for a city",
)
SEARCH_DOCS = Tool.from_schema(
    "search-docs",
    {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": 'What to look for, e.g. "a b"'},
            "limit": {"type": "integer"},
        },
    },
    "Search the docs (ünïcode ok)",
)
NO_ARGS = Tool.from_schema("now", None, None)
CUSTOM_TOOLS = [WEATHER, SEARCH_DOCS, NO_ARGS]
BUILTIN_TOOLS = [brave_search, wolfram_alpha, code_interpreter]

# Argument values every reference writes the same way (no quotes or backslashes in strings:
# llama-models writes those unescaped, chatlane escapes them).
plain_strings = st.text(
    st.characters(exclude_categories=["Cs", "Cc"], exclude_characters='"\\'), max_size=12
).filter(str.isprintable)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), plain_strings)
json_values = st.one_of(json_scalars, st.lists(json_scalars, max_size=3))
arguments = st.dictionaries(
    st.from_regex(r"[a-z][a-z_]{0,7}", fullmatch=True), json_values, max_size=3
)


@st.composite
def custom_call(draw: Any, value_strategy: Any = arguments) -> ToolCall:
    name = draw(st.sampled_from([t.name for t in CUSTOM_TOOLS]))
    return ToolCall(f"call_{draw(st.integers(0, 999))}", name, draw(value_strategy))


@st.composite
def builtin_call(draw: Any) -> ToolCall:
    tool = draw(st.sampled_from(BUILTIN_TOOLS))
    if tool.name == "code_interpreter":
        code = draw(st.sampled_from(["print(1)", "import math\nmath.sqrt(2)", "x = '<|eot_id|>'"]))
        return ToolCall("call_code", tool.name, {"code": code})
    return ToolCall("call_b", tool.name, {"query": draw(plain_strings)})


def tool_content() -> Any:
    return st.one_of(
        texts,
        st.dictionaries(st.text(max_size=5), json_scalars, max_size=3).map(
            lambda d: json.dumps(d, ensure_ascii=False)
        ),
    )


@st.composite
def conversation(
    draw: Any,
    *,
    images: bool = False,
    max_calls: int = 3,
    builtins: bool = True,
    call_values: Any = arguments,
    prefill: bool = True,
) -> list[Message]:
    """A valid conversation: optional system, then user / assistant turns, some with tool
    calls answered by tool results; it may end with an assistant prefill."""
    messages: list[Message] = []
    if draw(st.booleans()):
        messages.append(system(draw(texts)))
    for _ in range(draw(st.integers(1, 4))):
        if images and draw(st.integers(0, 3)) == 0:
            messages.append(user([Image.from_bytes(PNG), draw(texts)]))
        else:
            messages.append(user(draw(texts)))
        if draw(st.booleans()):
            kind = draw(st.sampled_from(["custom", "builtin"] if builtins else ["custom"]))
            if kind == "builtin":
                calls = [draw(builtin_call())]
            else:
                calls = draw(st.lists(custom_call(call_values), min_size=1, max_size=max_calls))
            messages.append(assistant("", calls))
            for call in calls:
                messages.append(tool_result(call, draw(tool_content())))
        messages.append(assistant(draw(texts)))
    if not prefill or draw(st.booleans()):
        messages.pop()
    return messages


# -- the meta oracle ------------------------------------------------------------------

BUILTINS = {"brave_search", "wolfram_alpha", "code_interpreter"}
FORMATS = {
    "json": ToolPromptFormat.json,
    "function_tag": ToolPromptFormat.function_tag,
    "pythonic": ToolPromptFormat.python_list,
}


@pytest.fixture(scope="module")
def chat_format() -> ChatFormat:
    return ChatFormat(Tokenizer.get_instance())


def _content(message: Message) -> Any:
    if isinstance(message.content, str):
        return message.content
    items: list[Any] = []
    for part in message.content:
        if isinstance(part, Text):
            items.append(RawTextItem(text=part.text))
        else:
            assert isinstance(part, Image)
            assert part.data is not None
            items.append(RawMediaItem(data=io.BytesIO(part.data)))
    return items


def _raw(message: Message) -> RawMessage:
    calls = [
        MetaToolCall(call_id=c.id, tool_name=c.name, arguments=dict(c.arguments))
        for c in message.tool_calls
    ]
    builtin = any(c.name in BUILTINS for c in message.tool_calls)
    return RawMessage(
        role="tool" if message.role is Role.TOOL else message.role.value,
        content=_content(message),
        tool_calls=calls,
        stop_reason=StopReason.end_of_message if builtin else StopReason.end_of_turn,
    )


def oracle(
    chat_format: ChatFormat, fmt: Llama3, request: ChatRequest, preamble: list[tuple[str, str]]
) -> list[int]:
    """ChatFormat's tokens for the request, with chatlane's preamble texts as messages."""
    messages = list(request.messages)
    if messages[0].role is Role.SYSTEM:
        messages.pop(0)
    prefill = messages[-1].role is Role.ASSISTANT
    tokens: list[int] = [chat_format.tokenizer.special_tokens["<|begin_of_text|>"]]
    tool_format = FORMATS[fmt.tool_format]
    for role, text in preamble:
        toks, _ = chat_format.encode_message(
            RawMessage(role=role, content=text),
            tool_format,
        )
        tokens += toks
    for i, message in enumerate(messages):
        toks, _ = chat_format.encode_message(_raw(message), tool_format)
        calls = message.tool_calls
        # ChatFormat 0.3.0 writes <|python_tag|> only before code_interpreter; Meta's pages
        # write it before every built-in call and before 3.2's pythonic lists.
        if (calls and calls[0].name in {"brave_search", "wolfram_alpha"}) or (
            calls
            and fmt.tool_format == "pythonic"
            and fmt.version != "3.1"
            and calls[0].name not in BUILTINS
        ):
            toks.insert(len(chat_format._encode_header("assistant")), PYTHON_TAG)
        if prefill and i == len(messages) - 1:
            assert toks[-1] == END_OF_TURN
            toks = toks[:-1]
        tokens += toks
    if not prefill:
        tokens += chat_format._encode_header("assistant")
    return [128256 if t == chat_format.vision_token else t for t in tokens]


def preamble_texts(fmt: Llama3, request: ChatRequest) -> list[tuple[str, str]]:
    """The system and tool-definition messages chatlane writes before the conversation."""
    first = request.messages[0]
    system_text = first.text if first.role is Role.SYSTEM else None
    pieces = fmt._meta_preamble(system_text, request.tools, request.tool_choice)
    out = []
    for i, piece in enumerate(pieces):
        if piece == START_HEADER:
            # [<|start_header_id|>, role, <|end_header_id|>, "\n\n", text, <|eot_id|>]
            out.append((str(pieces[i + 1]), str(pieces[i + 4])))
    return out


settings_ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings_
@given(
    messages=conversation(images=True),
    version=st.sampled_from(["3.1", "3.2", "3.3"]),
    tools=st.lists(
        st.sampled_from(CUSTOM_TOOLS + BUILTIN_TOOLS), unique_by=lambda t: t.name, max_size=4
    ),
    tool_format=st.sampled_from(["json", "function_tag"]),
    dated=st.booleans(),
    tools_in=st.sampled_from(["user", "system"]),
    tool_choice=st.sampled_from([None, "auto", "required"]),
)
def test_json_and_function_tag_conversations(
    chat_format: ChatFormat,
    messages: list[Message],
    version: Any,
    tools: list[Any],
    tool_format: Any,
    dated: bool,
    tools_in: Any,
    tool_choice: str | None,
) -> None:
    fmt = Llama3(
        version,
        tool_format=tool_format,
        date=dt.date(2024, 7, 1) if dated else None,
        tools_in=tools_in,
    )
    request = ChatRequest(tuple(messages), tools=tuple(tools), tool_choice=tool_choice)
    prompt = fmt.render(request)
    expected = oracle(chat_format, fmt, request, preamble_texts(fmt, request))
    assert list(prompt.tokens) == expected


@settings_
@given(
    messages=conversation(max_calls=1),
    version=st.sampled_from(["3.1", "3.2", "3.3"]),
    tools=st.lists(
        st.sampled_from(CUSTOM_TOOLS), unique_by=lambda t: t.name, min_size=1, max_size=3
    ),
)
def test_pythonic_conversations(
    chat_format: ChatFormat, messages: list[Message], version: Any, tools: list[Any]
) -> None:
    # One call per turn: for several, ChatFormat writes one list per call ("[f()][g()]"),
    # chatlane one list for the turn ("[f(), g()]"), as the models write them.
    fmt = Llama3(version, tool_format="pythonic")
    request = ChatRequest(tuple(messages), tools=tuple(tools))
    prompt = fmt.render(request)
    expected = oracle(chat_format, fmt, request, preamble_texts(fmt, request))
    assert list(prompt.tokens) == expected


@settings_
@given(messages=conversation(images=True))
def test_text_is_the_decoded_tokens(messages: list[Message]) -> None:
    fmt = Llama3()
    prompt = fmt.render(ChatRequest(tuple(messages)))
    tokens = [128011 if t == 128256 else t for t in prompt.tokens]
    assert fmt.tokenizer.decode(tokens) == prompt.text


# -- the hf oracle ------------------------------------------------------------------------

TEMPLATES = {
    "3.1": "meta-llama-Llama-3.1-8B-Instruct.jinja",
    "3.2": "meta-llama-Llama-3.2-3B-Instruct.jinja",
    "3.3": "meta-llama-Llama-3.3-70B-Instruct.jinja",
}


@pytest.fixture(scope="module")
def hf_templates() -> dict[str, Any]:
    """The official templates, compiled as transformers compiles them."""

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any,
        ensure_ascii: bool = False,
        indent: Any = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: dt.datetime.now().strftime(fmt)
    data = Path(__file__).parent / "data"
    return {
        v: env.from_string((data / name).read_text(encoding="utf-8"))
        for v, name in TEMPLATES.items()
    }


def hf_message(message: Message) -> dict[str, Any]:
    if message.role is Role.TOOL:
        content: Any = message.text
        if content.strip()[:1] in ("{", "["):
            with contextlib.suppress(ValueError):
                content = json.loads(content)
        return {"role": "tool", "content": content}
    if message.tool_calls:
        return {
            "role": "assistant",
            "content": message.text,
            "tool_calls": [
                {"type": "function", "function": {"name": c.name, "arguments": dict(c.arguments)}}
                for c in message.tool_calls
            ],
        }
    return {"role": message.role.value, "content": message.text}


def hf_oracle(template: Any, fmt: Llama3, request: ChatRequest, date_string: str | None) -> str:
    builtin_aware = fmt.version != "3.2"
    builtins = [t.name for t in request.tools if t.builtin and builtin_aware]
    custom = [hf_tool_definition(t) for t in request.tools if not (t.builtin and builtin_aware)]
    kwargs: dict[str, Any] = {
        "messages": [hf_message(m) for m in request.messages],
        "tools": custom or None,
        "bos_token": "<|begin_of_text|>",
        "tools_in_user_message": fmt.tools_in == "user",
    }
    if builtins:
        kwargs["builtin_tools"] = builtins
    if date_string is not None:
        kwargs["date_string"] = date_string
    prefill = request.messages[-1].role is Role.ASSISTANT
    text: str = template.render(add_generation_prompt=not prefill, **kwargs)
    if prefill:
        # transformers' continue_final_message: cut after the final message's content.
        final = request.messages[-1].text.strip()
        text = text[: text.rindex(final) + len(final)]
    return text


@settings_
@given(
    messages=conversation(max_calls=1),
    version=st.sampled_from(["3.1", "3.2", "3.3"]),
    tools=st.lists(
        st.sampled_from(CUSTOM_TOOLS + BUILTIN_TOOLS), unique_by=lambda t: t.name, max_size=4
    ),
    tools_in=st.sampled_from(["user", "system"]),
    dated=st.booleans(),
)
def test_hf_profile_is_byte_exact_with_the_templates(
    hf_templates: dict[str, Any],
    messages: list[Message],
    version: Any,
    tools: list[Any],
    tools_in: Any,
    dated: bool,
) -> None:
    if messages[-1].role is Role.ASSISTANT:
        final = messages[-1].text.strip()
        # transformers finds the final content with rindex: it must not also occur in the
        # "<|eot_id|>" the template writes after it, nor be empty.
        assume(final and final not in "<|eot_id|>")
    fmt = Llama3(version, "hf", date=dt.date(2024, 9, 5) if dated else None, tools_in=tools_in)
    request = ChatRequest(tuple(messages), tools=tuple(tools))
    custom = [t for t in tools if not (t.builtin and version != "3.2")]
    if (
        custom
        and tools_in == "user"
        and len([m for m in messages if m.role is not Role.SYSTEM]) == 0
    ):
        with pytest.raises(MessageError):
            fmt.render(request)
        return
    prompt = fmt.render(request)
    expected = hf_oracle(hf_templates[version], fmt, request, "05 Sep 2024" if dated else None)
    assert prompt.text == expected
    # Tokens: the text tokenized with its special tokens, as a tokenizer reading the
    # template's output would (when no user text looks like a special token).
    typed = "".join(m.text + "".join(c.raw_arguments for c in m.tool_calls) for m in messages)
    if "<|" not in typed:
        whole = Tokenizer.get_instance().encode(
            expected, bos=False, eos=False, allowed_special="all"
        )
        assert list(prompt.tokens) == whole
