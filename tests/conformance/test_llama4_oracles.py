"""Llama 4's two profiles against their references, on hypothesis-drawn conversations.

meta: token for token with Meta's code. llama-stack 0.2.12 writes the system message
(``chat_completion_request_to_messages`` for a Llama 4 model: its Llama 4 pythonic tool
prompt, ``system_message_behavior``, ``tool_choice``), and llama-models 0.3.0's ``llama4``
``ChatFormat`` encodes the dialog (tool calls in history as pythonic lists, tool results and
calls ending ``<|eom|>``).

hf: byte for byte with the official chat template (tests/conformance/data), rendered with
jinja2 as transformers renders chat templates.

Where chatlane and a reference disagree, the inputs are drawn where they agree or the
expectation is adjusted here, each time saying why (docs/llama4-format.md lists the same).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
import json
import logging
import sys
import types
from pathlib import Path
from typing import Any

import jinja2.ext
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment

from chatlane.errors import InputError, MessageError
from chatlane.formats.llama4 import Llama4
from chatlane.formats.llama4.prompts import hf_tool_definition
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
from chatlane.tools import Tool, brave_search


def _stub(name: str) -> types.ModuleType:
    # A module whose every attribute is a placeholder class: llama-models' llama4 ChatFormat
    # imports torch and torchvision for images, which its text path never uses.
    module = types.ModuleType(name)
    module.__path__ = []

    def placeholder(attr: str) -> type:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return type(attr, (), {})

    module.__getattr__ = placeholder  # type: ignore[method-assign]
    return module


def _import_references() -> tuple[Any, Any, Any]:
    missing = {
        top
        for top in ("torch", "torchvision")
        if top not in sys.modules and importlib.util.find_spec(top) is None
    }
    stubs = [
        name
        for name in (
            "torch",
            "torchvision",
            "torchvision.transforms",
            "torchvision.transforms.functional",
        )
        if name.split(".")[0] in missing
    ]
    for name in stubs:
        sys.modules[name] = _stub(name)
    # llama_stack.log configures logging when imported (root handlers, and every existing
    # logger's level): the session's logging is put back as it was.
    root = logging.getLogger()
    saved_root = (root.level, list(root.handlers))
    saved = {
        name: (lg.level, list(lg.handlers), lg.propagate)
        for name, lg in logging.root.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    try:
        import llama_stack.apis.inference as ls
        import llama_stack.providers.utils.inference.prompt_adapter as adapter
        from llama_models.llama4 import chat_format
    finally:
        # The placeholders stay only in the modules that imported them: nothing else in
        # the session may take them for torch.
        for name in stubs:
            del sys.modules[name]
        root.setLevel(saved_root[0])
        root.handlers[:] = saved_root[1]
        for name, lg in logging.root.manager.loggerDict.items():
            if isinstance(lg, logging.Logger):
                level, handlers, propagate = saved.get(name, (logging.NOTSET, [], True))
                lg.setLevel(level)
                lg.handlers[:] = handlers
                lg.propagate = propagate
    return ls, adapter, chat_format


ls, adapter, meta_chat_format = _import_references()
from llama_models.datatypes import RawMessage, RawTextItem, StopReason, ToolPromptFormat  # noqa: E402
from llama_models.datatypes import ToolCall as MetaToolCall  # noqa: E402
from llama_models.llama3.tool_utils import ToolUtils  # noqa: E402
from llama_models.llama4.tokenizer import Tokenizer  # noqa: E402

MODEL = "Llama-4-Scout-17B-16E-Instruct"

# Text that looks like structure: Llama 4's control tokens' text, calls, whitespace.
TRICKY = [
    "<|eot|>",
    "<|eom|>",
    "<|header_start|>",
    "<|header_end|>",
    "<|begin_of_text|>",
    "<|python_start|>",
    "<|python_end|>",
    "<|image|>",
    "<|reserved_special_token_7|>",
    "<|eot_id|>",
    '{"name": "f", "parameters": {}}',
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
    st.text(st.characters(exclude_categories=["Cs"]), max_size=24), st.sampled_from(TRICKY)
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
            "limit": {"type": "integer", "default": 0},
            "tags": {"type": "array", "items": {"type": "string"}, "default": ["x"]},
        },
    },
    "Search the docs (ünïcode ok)",
)
NO_ARGS = Tool.from_schema("now", None, None)
TOOLS = [WEATHER, SEARCH_DOCS, NO_ARGS]

# Argument values Meta's pythonic writer and chatlane write alike (Meta writes strings
# unescaped and mappings as {k=v}; chatlane escapes and writes dict literals).
plain_strings = st.text(
    st.characters(exclude_categories=["Cs", "Cc"], exclude_characters='"\\'), max_size=12
).filter(str.isprintable)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6), plain_strings
)
values = st.one_of(scalars, st.lists(scalars, max_size=3))
arguments = st.dictionaries(st.from_regex(r"[a-z][a-z_]{0,7}", fullmatch=True), values, max_size=3)


@st.composite
def a_call(draw: Any, value_strategy: Any = arguments) -> ToolCall:
    name = draw(st.sampled_from([t.name for t in TOOLS]))
    return ToolCall(f"call_{draw(st.integers(0, 999))}", name, draw(value_strategy))


@st.composite
def conversation(draw: Any, *, max_calls: int = 3, parts: bool = True) -> list[Message]:
    """Optional system, then user / assistant turns, some with (parallel) tool calls
    answered by tool results; it may end with an assistant prefill."""
    messages: list[Message] = []
    if draw(st.booleans()):
        messages.append(system(draw(texts)))
    for _ in range(draw(st.integers(1, 4))):
        if parts and draw(st.integers(0, 4)) == 0:
            messages.append(user([Text(draw(texts)), Text(draw(texts))]))
        else:
            messages.append(user(draw(texts)))
        if draw(st.booleans()):
            calls = draw(st.lists(a_call(), min_size=1, max_size=max_calls))
            messages.append(assistant(draw(st.sampled_from(["", "Let me check."])), calls))
            for call in calls:
                messages.append(tool_result(call, draw(texts)))
        messages.append(assistant(draw(texts)))
    if draw(st.booleans()):
        messages.pop()
    return messages


# -- the meta oracle ------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_format() -> Any:
    return meta_chat_format.ChatFormat(Tokenizer.get_instance())


def _tool_definition(tool: Tool) -> Any:
    """A chatlane tool as llama-stack's ToolDefinition (the schema's types, descriptions,
    required list and defaults)."""
    properties = tool.parameters.get("properties") or {}
    required = tool.parameters.get("required") or []
    return ls.ToolDefinition(
        tool_name=tool.name,
        description=tool.description,
        parameters={
            name: ls.ToolParamDefinition(
                param_type=str(schema.get("type")),
                description=schema.get("description"),
                required=name in required,
                default=schema.get("default"),
            )
            for name, schema in properties.items()
        },
    )


def llama_stack_system(request: ChatRequest, behavior: str) -> str:
    """The system message llama-stack writes for the request to a Llama 4 model."""
    first = request.messages[0]
    messages: list[Any] = []
    if first.role is Role.SYSTEM:
        messages.append(ls.SystemMessage(content=first.text))
    messages.append(ls.UserMessage(content="(the conversation)"))
    tools = () if request.tool_choice == "none" else request.tools
    # llama-stack writes the tool_choice sentence even when no tool is offered ("You MUST
    # use one of the provided functions/tools" with none provided); chatlane writes it only
    # with tools.
    choice = (request.tool_choice or "auto") if tools else "auto"
    ls_request = ls.ChatCompletionRequest(
        model=MODEL,
        messages=messages,
        tools=[_tool_definition(t) for t in tools],
        tool_config=ls.ToolConfig(
            tool_choice=choice,
            system_message_behavior=ls.SystemMessageBehavior(behavior),
        ),
    )
    out = adapter.chat_completion_request_to_messages(ls_request, MODEL)
    raw = asyncio.run(
        adapter.convert_request_to_raw(ls_request.model_copy(update={"messages": out}))
    )
    assert raw.messages[0].role == "system"
    assert raw.messages[1].role == "user"
    content = raw.messages[0].content
    # (convert_request_to_raw makes a text content a RawTextItem of llama-stack's own)
    text = content if isinstance(content, str) else content.text
    assert isinstance(text, str)
    return text


def _content(message: Message) -> Any:
    if isinstance(message.content, str):
        return message.content
    return [RawTextItem(text=p.text) for p in message.content if isinstance(p, Text)]


def _meta_call(call: ToolCall) -> Any:
    return MetaToolCall(call_id=call.id, tool_name=call.name, arguments=dict(call.arguments))


def _raw(message: Message) -> Any:
    calls = message.tool_calls
    if len(calls) > 1:
        # Parallel calls: ChatFormat writes one list per call ("[f()][g()]"); chatlane one
        # list for the turn, as the system prompt asks ("[f(), g()]"). The list is built
        # from Meta's own writer of each call, and encoded after the content as ChatFormat
        # encodes a call.
        listed = ", ".join(
            ToolUtils.encode_tool_call(_meta_call(c), ToolPromptFormat.python_list)[1:-1]
            for c in calls
        )
        content = _content(message)
        items = [RawTextItem(text=content)] if isinstance(content, str) else content
        return RawMessage(
            role="assistant",
            content=[*items, RawTextItem(text=f"[{listed}]")],
            stop_reason=StopReason.end_of_message,
        )
    return RawMessage(
        role="tool" if message.role is Role.TOOL else message.role.value,
        content=_content(message),
        tool_calls=[_meta_call(c) for c in calls],
        stop_reason=StopReason.end_of_turn,
    )


def meta_oracle(chat_format: Any, request: ChatRequest, behavior: str) -> list[int]:
    messages = list(request.messages)
    if messages[0].role is Role.SYSTEM:
        messages.pop(0)
    dialog = [RawMessage(role="system", content=llama_stack_system(request, behavior))]
    dialog += [_raw(m) for m in messages]
    tokens = list(
        chat_format.encode_dialog_prompt(
            dialog, tool_prompt_format=ToolPromptFormat.python_list
        ).tokens
    )
    if messages and messages[-1].role is Role.ASSISTANT:
        # A prefill: the last message is left open (no end token, no assistant header).
        header = chat_format._encode_header("assistant")
        assert tokens[-len(header) :] == header
        tokens = tokens[: -len(header)]
        assert tokens[-1] == chat_format.tokenizer.special_tokens["<|eot|>"]
        tokens.pop()
    return tokens


settings_ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that llama-stack reads as a Jinja template (a replacing system prompt) with
# nothing Jinja would change: no braces, no "#" or "%" after a brace, no \r.
template_safe = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="{}\r"), max_size=30
)


@settings_
@given(
    messages=conversation(),
    tools=st.lists(st.sampled_from(TOOLS), unique_by=lambda t: t.name, max_size=3),
    tool_choice=st.sampled_from([None, "auto", "required", "none", "get_weather", "now"]),
)
def test_meta_profile_matches_llama_stack_and_chatformat(
    chat_format: Any, messages: list[Message], tools: list[Tool], tool_choice: str | None
) -> None:
    if tool_choice in ("get_weather", "now") and tool_choice not in [t.name for t in tools]:
        tool_choice = "required"
    request = ChatRequest(tuple(messages), tools=tuple(tools), tool_choice=tool_choice)
    prompt = Llama4().render(request)
    assert list(prompt.tokens) == meta_oracle(chat_format, request, "append")


@settings_
@given(
    messages=conversation(max_calls=2),
    system_text=st.one_of(
        template_safe,
        st.tuples(template_safe, template_safe).map(
            lambda p: p[0] + "{{ function_description }}" + p[1]
        ),
    ),
    tools=st.lists(st.sampled_from(TOOLS), unique_by=lambda t: t.name, max_size=3),
    tool_choice=st.sampled_from([None, "required"]),
)
def test_meta_system_message_behavior_replace(
    chat_format: Any,
    messages: list[Message],
    system_text: str,
    tools: list[Tool],
    tool_choice: str | None,
) -> None:
    if messages[0].role is Role.SYSTEM:
        messages = messages[1:]
    messages = [system(system_text), *messages]
    request = ChatRequest(tuple(messages), tools=tuple(tools), tool_choice=tool_choice)
    prompt = Llama4(system_message_behavior="replace").render(request)
    assert list(prompt.tokens) == meta_oracle(chat_format, request, "replace")


def test_meta_tool_round_trip_ends_with_eom(chat_format: Any) -> None:
    """A turn with calls and each tool result end with <|eom|>; other turns with <|eot|>."""
    first = ToolCall("a", "get_weather", {"city": "Paris"})
    second = ToolCall("b", "now", {})
    request = ChatRequest(
        (
            user("Weather in Paris, and the time?"),
            assistant("", [first, second]),
            tool_result(first, "sunny"),
            tool_result(second, "noon"),
            assistant("Sunny at noon."),
            user("Thanks"),
        ),
        tools=(WEATHER, NO_ARGS),
    )
    prompt = Llama4().render(request)
    assert list(prompt.tokens) == meta_oracle(chat_format, request, "append")
    assert (
        '[get_weather(city="Paris"), now()]<|eom|>'
        "<|header_start|>ipython<|header_end|>\n\nsunny<|eom|>"
        "<|header_start|>ipython<|header_end|>\n\nnoon<|eom|>"
        "<|header_start|>assistant<|header_end|>\n\nSunny at noon.<|eot|>"
    ) in prompt.text
    assert prompt.text.endswith("<|header_start|>assistant<|header_end|>\n\n")


@settings_
@given(messages=conversation())
def test_text_is_the_decoded_tokens(messages: list[Message]) -> None:
    for profile in ("meta", "hf"):
        fmt = Llama4(profile)
        prompt = fmt.render(ChatRequest(tuple(messages)))
        assert fmt.tokenizer.decode(list(prompt.tokens)) == prompt.text


# -- the hf oracle ------------------------------------------------------------------------

TEMPLATE = Path(__file__).parent / "data" / "meta-llama-Llama-4-Scout-17B-16E-Instruct.jinja"


@pytest.fixture(scope="module")
def hf_template() -> Any:
    """The official template, compiled as transformers compiles chat templates."""

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
    return env.from_string(TEMPLATE.read_text(encoding="utf-8"))


def hf_message(message: Message) -> dict[str, Any]:
    if message.role is Role.TOOL:
        return {"role": "tool", "content": message.text}
    out: dict[str, Any] = {"role": message.role.value, "content": message.text}
    if message.tool_calls:
        out["tool_calls"] = [
            {"type": "function", "function": {"name": c.name, "arguments": dict(c.arguments)}}
            for c in message.tool_calls
        ]
    return out


def hf_oracle(template: Any, request: ChatRequest, tools_in: str) -> str:
    tools = [hf_tool_definition(t) for t in request.tools]
    kwargs: dict[str, Any] = {
        "messages": [hf_message(m) for m in request.messages],
        "tools": tools or None,
        "bos_token": "<|begin_of_text|>",
        "tools_in_user_message": tools_in == "user",
    }
    prefill = request.messages[-1].role is Role.ASSISTANT
    text: str = template.render(add_generation_prompt=not prefill, **kwargs)
    if prefill:
        # transformers' continue_final_message: cut after the final message's content.
        final = request.messages[-1].text.strip()
        text = text[: text.rindex(final) + len(final)]
    return text


@settings_
@given(
    messages=conversation(),
    tools=st.lists(st.sampled_from(TOOLS), unique_by=lambda t: t.name, max_size=3),
    tools_in=st.sampled_from(["user", "system"]),
)
def test_hf_profile_is_byte_exact_with_the_template(
    hf_template: Any, messages: list[Message], tools: list[Tool], tools_in: str
) -> None:
    if messages[-1].role is Role.ASSISTANT:
        final = messages[-1].text.strip()
        # transformers finds the final content with rindex: it must not be empty, nor
        # occur in the text the template writes after it.
        assume(final and final not in "<|eot|><|header_start|>")
    request = ChatRequest(tuple(messages), tools=tuple(tools))
    fmt = Llama4("hf", tools_in=tools_in)  # type: ignore[arg-type]
    rest = [m for m in messages if m.role is not Role.SYSTEM]
    if tools and tools_in == "user" and (len(rest) < 1 + (rest[-1].role is Role.ASSISTANT)):
        with pytest.raises(MessageError):
            fmt.render(request)
        return
    prompt = fmt.render(request)
    expected = hf_oracle(hf_template, request, tools_in)
    assert prompt.text == expected
    # Tokens: the text tokenized with its special tokens, as a server reading the
    # template's output would (when no message text looks like a special token).
    typed = "".join(m.text for m in messages)
    if "<|" not in typed:
        whole = Tokenizer.get_instance().encode(
            expected, bos=False, eos=False, allowed_special="all"
        )
        assert list(prompt.tokens) == whole


# -- what neither profile renders -------------------------------------------------------

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)


@pytest.mark.parametrize("profile", ["meta", "hf"])
def test_images_raise_a_message_error(profile: Any) -> None:
    request = ChatRequest((user([Image.from_bytes(PNG), Text("What is this?")]),))
    with pytest.raises(MessageError, match="cannot render images for Llama 4"):
        Llama4(profile).render(request)


@pytest.mark.parametrize("profile", ["meta", "hf"])
def test_builtin_tools_are_refused(profile: Any) -> None:
    request = ChatRequest((user("hi"),), tools=(brave_search,))
    with pytest.raises(InputError, match="no built-in tools"):
        Llama4(profile).render(request)
