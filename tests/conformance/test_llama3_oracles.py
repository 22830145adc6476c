"""The meta profile against Meta's reference implementation, token for token.

``llama_models.llama3.chat_format.ChatFormat`` (llama-models 0.3.0) encodes the same
conversations; hypothesis draws them. ChatFormat takes the system prompt's text as given, so
chatlane's system and tool-definition texts are handed to it (those texts are checked against
Meta's published pages in test_llama_doc_prompts.py). Where the references disagree,
chatlane follows Meta's pages and the oracle's output is adjusted here, each time saying why
(docs/llama3-format.md lists the same points).
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any
from unittest import mock

import jinja2.ext
import pytest
from hypothesis import HealthCheck, assume, given, note, settings
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
from chatlane.formats.llama3 import IMAGE_TOKEN, Llama3
from chatlane.formats.llama3.prompts import hf_tool_definition
from chatlane.formats.llama3.tokenizer import END_OF_TURN
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
from support.meta_stack import (
    BuiltinTool,
    ChatCompletionRequest,
    CompletionMessage,
    ImageContentItem,
    PythonListCustomToolGenerator,
    SystemMessage,
    TextContentItem,
    ToolConfig,
    ToolDefinition,
    ToolParamDefinition,
    ToolResponseMessage,
    UserMessage,
    augment_messages_for_tools_llama,
    augment_messages_for_tools_llama_3_1,
    chat_completion_request_to_messages,
    system_prompts,
)
from support.meta_stack import StopReason as StackStopReason
from support.meta_stack import ToolCall as StackToolCall

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
#
# Meta's reference code path: llama-stack's prompt adapter (its prompt generators, which
# write the system and tool-definition messages) feeding llama-models' ChatFormat (which
# encodes the messages). Both run here on the same conversations chatlane renders.

BUILTINS = {"brave_search", "wolfram_alpha", "code_interpreter"}
FORMATS = {
    "json": ToolPromptFormat.json,
    "function_tag": ToolPromptFormat.function_tag,
    "pythonic": ToolPromptFormat.python_list,
}
TODAY = dt.date(2024, 9, 21)


@pytest.fixture(scope="module")
def chat_format() -> ChatFormat:
    return ChatFormat(Tokenizer.get_instance())


class _FixedNow(dt.datetime):
    # llama-stack's SystemDefaultGenerator writes datetime.now(); the oracle runs on TODAY.
    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return cls(TODAY.year, TODAY.month, TODAY.day)


def stack_tool(tool: Tool) -> Any:
    """A chatlane tool as llama-stack's ToolDefinition: built-ins by their enum; custom
    tools with each parameter's type and description as llama-stack's OpenAI adapter
    converts them (``str(schema["type"])``), and its required flag and default as its agent
    path keeps them (the OpenAI adapter drops both)."""
    if tool.builtin:
        return ToolDefinition(tool_name=BuiltinTool(tool.name))
    props = tool.parameters.get("properties", {})
    required = set(tool.parameters.get("required", []))
    return ToolDefinition(
        tool_name=tool.name,
        description=tool.description,
        parameters={
            name: ToolParamDefinition(
                param_type=str(schema.get("type")),
                description=schema.get("description"),
                required=name in required,
                default=schema.get("default"),
            )
            for name, schema in props.items()
        },
    )


def stack_message(message: Message) -> Any:
    if message.role is Role.SYSTEM:
        return SystemMessage(content=message.text)
    if message.role is Role.TOOL:
        return ToolResponseMessage(call_id=message.tool_call_id or "", content=message.text)
    if isinstance(message.content, str):
        content: Any = message.content
    else:
        content = []
        for part in message.content:
            if isinstance(part, Text):
                content.append(TextContentItem(text=part.text))
            else:
                assert isinstance(part, Image)
                assert part.data is not None
                content.append(
                    ImageContentItem(image={"data": base64.b64encode(part.data).decode()})
                )
    if message.role is Role.USER:
        return UserMessage(content=content)
    calls = [
        StackToolCall(call_id=c.id, tool_name=c.name, arguments=dict(c.arguments))
        for c in message.tool_calls
    ]
    # The models end a turn of built-in calls with <|eom_id|>: its stop reason.
    builtin = any(c.name in BUILTINS for c in message.tool_calls)
    return CompletionMessage(
        content=content,
        tool_calls=calls,
        stop_reason=StackStopReason.end_of_message if builtin else StackStopReason.end_of_turn,
    )


def raw_message(message: Any) -> RawMessage:
    """A llama-stack message as llama-models' RawMessage (what convert_request_to_raw does)."""
    content = message.content
    if isinstance(content, list):
        items: list[Any] = []
        for c in content:
            if isinstance(c, TextContentItem):
                items.append(RawTextItem(text=c.text))
            else:
                items.append(RawMediaItem(data=io.BytesIO(base64.b64decode(c.image.data))))
        content = items
    calls = [
        MetaToolCall(
            call_id=c.call_id,
            tool_name=str(getattr(c.tool_name, "value", c.tool_name)),
            arguments=c.arguments,
        )
        for c in getattr(message, "tool_calls", None) or []
    ]
    stop = getattr(message, "stop_reason", None)
    return RawMessage(
        role=message.role,
        content=content,
        tool_calls=calls,
        stop_reason=StopReason(stop.value) if stop is not None else None,
    )


def stack_messages(fmt: Llama3, request: ChatRequest) -> list[Any]:
    """llama-stack's augmented messages for the request: its system (and tools) messages
    and the conversation."""
    tools = [] if request.tool_choice == "none" else list(request.tools)
    stack_request = ChatCompletionRequest(
        model="chatlane-oracle",
        messages=[stack_message(m) for m in request.messages],
        tools=[stack_tool(t) for t in tools],
        tool_config=ToolConfig(
            tool_choice=request.tool_choice or "auto",
            tool_prompt_format=FORMATS[fmt.tool_format].value,
            system_message_behavior=fmt.system_message_behavior,
        ),
    )
    custom = any(not t.builtin for t in tools)
    model_pythonic = fmt.version != "3.1" and not fmt.vision
    pythonic = fmt.tool_format == "pythonic" if custom else model_pythonic
    with mock.patch.object(system_prompts, "datetime", _FixedNow):
        if pythonic == model_pythonic:
            # What llama-stack's own dispatch picks for the model.
            model = MODEL_IDS[fmt.version + ("-vision" if fmt.vision else "")]
            COUNTS["through llama-stack's dispatch"] += 1
            return list(chat_completion_request_to_messages(stack_request, model))
        # llama-stack refuses these tools for this model; chatlane renders them by the path
        # of their format.
        if pythonic:
            return list(
                augment_messages_for_tools_llama(stack_request, PythonListCustomToolGenerator)
            )
        return list(augment_messages_for_tools_llama_3_1(stack_request))


MODEL_IDS = {
    "3.1": "Llama3.1-8B-Instruct",
    "3.2": "Llama3.2-3B-Instruct",
    "3.2-vision": "Llama3.2-11B-Vision-Instruct",
    "3.3": "Llama3.3-70B-Instruct",
}


def oracle(chat_format: ChatFormat, fmt: Llama3, request: ChatRequest) -> list[int]:
    """llama-models' ChatFormat tokens for llama-stack's messages (encode_dialog_prompt, which
    ends with the assistant header; a conversation that ends with an assistant message ends
    inside it instead, as chatlane continues it)."""
    messages = [raw_message(m) for m in stack_messages(fmt, request)]
    prefill = request.messages[-1].role is Role.ASSISTANT
    tool_format = FORMATS[fmt.tool_format]
    if not prefill:
        tokens = chat_format.encode_dialog_prompt(messages, tool_format).tokens
    else:
        tokens = chat_format.encode_dialog_prompt(messages[:-1], tool_format).tokens
        tokens = tokens[: -len(chat_format._encode_header("assistant"))]
        last, _ = chat_format.encode_message(messages[-1], tool_format)
        assert last[-1] == END_OF_TURN
        tokens += last[:-1]
    return [128256 if t == chat_format.vision_token else t for t in tokens]


# Tool definitions drawn at random: names, descriptions, parameter types, defaults, required.
plain_text = st.text(
    st.characters(exclude_categories=["Cs", "Cc"], exclude_characters='"\\{}'), max_size=20
)
param_schema = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["string", "integer", "number", "boolean", "array", "object"]),
        "description": plain_text,
        "default": st.one_of(plain_strings, st.integers(-5, 5), st.booleans()),
    },
)


@st.composite
def custom_tool(draw: Any, name: str) -> Tool:
    props = draw(
        st.dictionaries(
            st.from_regex(r"[a-z][a-z_0-9]{0,6}", fullmatch=True), param_schema, max_size=3
        )
    )
    required = draw(st.lists(st.sampled_from(sorted(props)), unique=True)) if props else []
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required or draw(st.booleans()):
        schema["required"] = required
    return Tool.from_schema(name, schema, draw(st.one_of(st.none(), plain_text)))


@st.composite
def tool_sets(draw: Any, builtins: bool = True, min_custom: int = 0) -> list[Tool]:
    names = draw(
        st.lists(
            st.sampled_from(["get_weather", "search-docs", "now"]), unique=True, min_size=min_custom
        )
    )
    tools = [draw(custom_tool(n)) for n in names]
    if builtins:
        tools += draw(st.lists(st.sampled_from(BUILTIN_TOOLS), unique_by=lambda t: t.name))
    return list(draw(st.permutations(tools)))


def choices(tools: list[Tool]) -> Any:
    return st.sampled_from([None, "auto", "required", "none", *[t.name for t in tools]])


def no_template_syntax(text: str) -> bool:
    # llama-stack renders a replacing system text as a Jinja template; chatlane treats it as
    # text with one placeholder (docs/llama3-format.md).
    return not any(s in text for s in ("{{", "{%", "{#"))


COUNTS: dict[str, int] = __import__("collections").Counter()
settings_ = settings(
    max_examples=int(__import__("os").environ.get("ORACLE_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@settings_
@given(
    data=st.data(),
    version=st.sampled_from(["3.1", "3.2", "3.2-vision", "3.3"]),
    tool_format=st.sampled_from(["json", "function_tag"]),
    tools_present=st.booleans(),
)
def test_json_and_function_tag_conversations(
    chat_format: ChatFormat, data: Any, version: str, tool_format: Any, tools_present: bool
) -> None:
    tools = data.draw(tool_sets()) if tools_present else []
    messages = data.draw(conversation(images=version == "3.2-vision", call_values=arguments))
    fmt = Llama3(
        version[:3],  # type: ignore[arg-type]
        tool_format=tool_format,
        date=TODAY,
        vision=version == "3.2-vision",
    )
    request = ChatRequest(
        tuple(messages), tools=tuple(tools), tool_choice=data.draw(choices(tools))
    )
    assert list(fmt.render(request).tokens) == oracle(chat_format, fmt, request)
    COUNTS[f"meta {version} {tool_format}"] += 1


@settings_
@given(
    data=st.data(),
    version=st.sampled_from(["3.1", "3.2", "3.3"]),
    behavior=st.sampled_from(["append", "replace"]),
)
def test_pythonic_conversations(
    chat_format: ChatFormat, data: Any, version: Any, behavior: Any
) -> None:
    tools = data.draw(tool_sets(min_custom=1))
    messages = data.draw(conversation(call_values=arguments))
    if behavior == "replace" and messages[0].role is Role.SYSTEM:
        text = messages[0].text
        assume(no_template_syntax(text))
        if data.draw(st.booleans()):
            cut = data.draw(st.integers(0, len(text)))
            messages[0] = system(text[:cut] + "{{ function_description }}" + text[cut:])
    fmt = Llama3(version, tool_format="pythonic", date=TODAY, system_message_behavior=behavior)
    request = ChatRequest(
        tuple(messages), tools=tuple(tools), tool_choice=data.draw(choices(tools))
    )
    assert list(fmt.render(request).tokens) == oracle(chat_format, fmt, request)
    COUNTS[f"meta {version} pythonic {behavior}"] += 1


@settings_
@given(data=st.data(), version=st.sampled_from(["3.2", "3.3"]))
def test_the_pythonic_models_without_custom_tools(
    chat_format: ChatFormat, data: Any, version: Any
) -> None:
    # No custom tools: 3.2 and 3.3 get llama-stack's 3.2 system turn (empty when there is no
    # system message and no built-in) whatever the tool format.
    tools = data.draw(tool_sets(builtins=True).map(lambda ts: [t for t in ts if t.builtin]))
    messages = data.draw(conversation(builtins=bool(tools)))
    fmt = Llama3(version, tool_format=data.draw(st.sampled_from(["json", "pythonic"])))
    request = ChatRequest(tuple(messages), tools=tuple(tools))
    assert list(fmt.render(request).tokens) == oracle(chat_format, fmt, request)
    COUNTS[f"meta {version} no custom tools"] += 1


def test_an_empty_system_turn_for_3_2_without_system_message_or_tools(
    chat_format: ChatFormat,
) -> None:
    fmt = Llama3("3.2")
    request = ChatRequest((user("Hi"),))
    assert fmt.render(request).text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert list(fmt.render(request).tokens) == oracle(chat_format, fmt, request)


def test_replace_puts_the_function_list_where_the_system_text_says(
    chat_format: ChatFormat,
) -> None:
    fmt = Llama3("3.3", tool_format="pythonic", system_message_behavior="replace")
    request = ChatRequest(
        (system("Tools:\n{{ function_description }}\nBe brief."), user("Weather?")),
        tools=(WEATHER,),
    )
    text = fmt.render(request).text
    assert "Tools:\nHere is a list of functions in JSON format" in text
    assert "You are a helpful assistant. You have access to functions" not in text
    assert text.count("Be brief.") == 1
    assert list(fmt.render(request).tokens) == oracle(chat_format, fmt, request)


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
    "3.2-vision": "meta-llama-Llama-3.2-11B-Vision-Instruct.jinja",
    "3.3": "meta-llama-Llama-3.3-70B-Instruct.jinja",
}


@pytest.fixture(scope="module")
def hf_templates() -> dict[str, Any]:
    """The official templates, compiled as transformers compiles them
    (transformers.utils.chat_template_utils._compile_jinja_template)."""

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
    """A message as a chat endpoint hands it to the template: tool results and text as the
    strings they arrive as, arguments as the object their JSON encodes (as vLLM does), image
    messages as transformers' list of parts."""
    if message.tool_calls:
        return {
            "role": "assistant",
            "content": message.text,
            "tool_calls": [
                {"type": "function", "function": {"name": c.name, "arguments": dict(c.arguments)}}
                for c in message.tool_calls
            ],
        }
    if isinstance(message.content, str) or not message.images:
        return {"role": message.role.value, "content": message.text}
    parts = [
        {"type": "text", "text": p.text} if isinstance(p, Text) else {"type": "image"}
        for p in message.content
    ]
    return {"role": message.role.value, "content": parts}


def hf_oracle(
    template: Any,
    fmt: Llama3,
    request: ChatRequest,
    date_string: str | None,
    *,
    continue_final: bool,
) -> str:
    """What transformers' apply_chat_template gives (continue_final_message: the text cut
    after the final message's stripped text, found with rindex)."""
    builtin_aware = fmt.version != "3.2"
    tools = [] if request.tool_choice == "none" else request.tools
    builtins = [t.name for t in tools if t.builtin and builtin_aware]
    custom = [hf_tool_definition(t) for t in tools if not (t.builtin and builtin_aware)]
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
    text: str = template.render(
        add_generation_prompt=fmt.add_generation_prompt and not continue_final, **kwargs
    )
    if continue_final:
        final: Any = kwargs["messages"][-1]["content"]
        if isinstance(final, list):
            final = next(p["text"] for p in reversed(final) if "text" in p)
        final = final.strip()
        text = text[: text.rindex(final) + len(final)]
    return text


@settings_
@given(
    data=st.data(),
    version=st.sampled_from(["3.1", "3.2", "3.2-vision", "3.3"]),
    tools_in=st.sampled_from(["user", "system"]),
    dated=st.booleans(),
    generation_prompt=st.booleans(),
)
def test_hf_profile_is_byte_exact_with_the_templates(
    hf_templates: dict[str, Any],
    data: Any,
    version: str,
    tools_in: Any,
    dated: bool,
    generation_prompt: bool,
) -> None:
    vision = version == "3.2-vision"
    messages = data.draw(conversation(images=vision, max_calls=2))
    if vision and any(m.images for m in messages) and messages[0].role is Role.SYSTEM:
        messages[0] = system(data.draw(st.sampled_from(["", " \n"])))
    tools = data.draw(tool_sets())
    continue_final = messages[-1].role is Role.ASSISTANT and data.draw(st.booleans())
    fmt = Llama3(
        version[:3],  # type: ignore[arg-type]
        "hf",
        date=dt.date(2024, 9, 5) if dated else None,
        tools_in=tools_in,
        vision=vision,
        add_generation_prompt=generation_prompt,
        continue_final_message=continue_final,
    )
    request = ChatRequest(
        tuple(messages), tools=tuple(tools), tool_choice=data.draw(choices(tools))
    )
    if continue_final:
        final = messages[-1]
        last_text = [p.text for p in final.parts if isinstance(p, Text)][-1:] or [final.text]
        # transformers finds the final content with rindex: it must not also occur in the
        # text the template writes after it, nor be empty.
        assume(last_text[0].strip() and last_text[0].strip() not in "<|image|><|eot_id|>")
    try:
        expected = hf_oracle(
            hf_templates[version],
            fmt,
            request,
            "05 Sep 2024" if dated else None,
            continue_final=continue_final,
        )
    except jinja2.exceptions.TemplateError as e:
        # What the template refuses, chatlane refuses with a clear error naming it.
        with pytest.raises(MessageError):
            fmt.render(request)
        note(str(e))
        COUNTS["refused"] += 1
        return
    prompt = fmt.render(request)
    assert prompt.text == expected
    COUNTS["hf " + version] += 1
    # Tokens: the text tokenized with its special tokens, as a tokenizer reading the
    # template's output would (when no user text looks like a special token).
    typed = "".join(m.text + "".join(c.raw_arguments for c in m.tool_calls) for m in messages)
    if "<|" not in typed:
        meta = Tokenizer.get_instance()
        whole = meta.encode(expected, bos=False, eos=False, allowed_special="all")
        image = meta.special_tokens["<|image|>"]
        assert list(prompt.tokens) == [IMAGE_TOKEN if t == image else t for t in whole]
