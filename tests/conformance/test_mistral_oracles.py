"""chatlane's Mistral rendering against mistral-common's ``encode_chat_completion``.

For every version the mistral-common wheel ships a tokenizer file for (v3 SentencePiece, v3
tekken, v7 SentencePiece), the prompt must be token for token what mistral-common encodes,
on generated conversations (system prompts, users, assistants with text and several tool
calls, tool results, tools offered). v7 tekken, v11 and v13 have no shipped file: the oracle
is mistral-common's own InstructTokenizerV7/V11/V13 over a Tekkenizer built from the shipped
tekken vocabulary at that version (the control tokens [ARGS], [CALL_ID], [THINK], [/THINK]
placed at ids 32-35, as chatlane's tokenizer places them), so the text is checked exactly and
the token ids only against that construction (docs/mistral-format.md).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest

mistral_common = pytest.importorskip("mistral_common")
pytest.importorskip("sentencepiece")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from mistral_common.protocol.instruct import messages as mm  # noqa: E402
from mistral_common.protocol.instruct.chunk import TextChunk, ThinkChunk  # noqa: E402
from mistral_common.protocol.instruct.normalize import get_normalizer  # noqa: E402
from mistral_common.protocol.instruct.request import ChatCompletionRequest  # noqa: E402
from mistral_common.protocol.instruct.tool_calls import (  # noqa: E402
    Function,
    FunctionCall,
)
from mistral_common.protocol.instruct.tool_calls import Tool as MTool  # noqa: E402
from mistral_common.protocol.instruct.tool_calls import ToolCall as MToolCall  # noqa: E402
from mistral_common.protocol.instruct.validator import ValidationMode, get_validator  # noqa: E402
from mistral_common.tokens.tokenizers import instruct  # noqa: E402
from mistral_common.tokens.tokenizers.base import (  # noqa: E402
    SpecialTokenPolicy,
    TokenizerVersion,
)
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer  # noqa: E402
from mistral_common.tokens.tokenizers.tekken import SpecialTokenInfo, Tekkenizer  # noqa: E402

from chatlane import formats  # noqa: E402
from chatlane.messages import Message, Role, ToolCall  # noqa: E402
from chatlane.request import ChatRequest  # noqa: E402
from chatlane.tools import Tool  # noqa: E402

SHIPPED = ("mistral-v3", "mistral-v3-tekken", "mistral-v7")
BUILT = ("mistral-v7-tekken", "mistral-v11", "mistral-v13")
_INSTRUCT = {
    7: instruct.InstructTokenizerV7,
    11: instruct.InstructTokenizerV11,
    13: instruct.InstructTokenizerV13,
}
_EXTRA = {"[ARGS]": 32, "[CALL_ID]": 33, "[THINK]": 34, "[/THINK]": 35}


def built_tokenizer(version: int) -> MistralTokenizer[Any, Any, Any, Any, Any]:
    """mistral-common's tokenizer at ``version`` over the shipped tekken vocabulary, made the
    way its ``MistralTokenizer.from_file`` makes one (normalizer, validator, instruct class
    chosen by the version)."""
    path = MistralTokenizer._data_path() / "tekken_240718.json"
    data = json.loads(path.read_text("utf-8"))
    specials = list(Tekkenizer.DEPRECATED_SPECIAL_TOKENS)
    if version >= 11:
        specials += [
            SpecialTokenInfo(rank=i, token_str=f"<SPECIAL_{i}>", is_control=True)
            for i in range(len(specials), 32)
        ]
        specials += [
            SpecialTokenInfo(rank=rank, token_str=text, is_control=True)
            for text, rank in _EXTRA.items()
        ]
    tv = TokenizerVersion(f"v{version}")
    tekken = Tekkenizer(
        vocab=data["vocab"],
        special_tokens=specials,
        pattern=data["config"]["pattern"],
        vocab_size=data["config"]["default_vocab_size"],
        num_special_tokens=data["config"]["default_num_special_tokens"],
        version=tv,
        name=f"tekken-v{version}",
    )
    return MistralTokenizer(
        _INSTRUCT[version](tekken),
        validator=get_validator(tv, mode=ValidationMode.test),
        request_normalizer=get_normalizer(tv),
    )


@cache
def reference(name: str) -> MistralTokenizer[Any, Any, Any, Any, Any]:
    if name == "mistral-v3":
        return MistralTokenizer.v3()
    if name == "mistral-v3-tekken":
        return MistralTokenizer.v3(is_tekken=True)
    if name == "mistral-v7":
        return MistralTokenizer.v7()
    return built_tokenizer(int(name.split("-v")[1].split("-")[0]))


def reference_text(
    tokenizer: MistralTokenizer[Any, Any, Any, Any, Any], tokens: list[int], sentencepiece: bool
) -> str:
    """The prompt's text: tekken decodes with control tokens kept; SentencePiece pieces with
    their ``▁`` as spaces and byte pieces as their bytes (how chatlane writes it)."""
    inner = tokenizer.instruct_tokenizer.tokenizer
    if not sentencepiece:
        return inner.decode(tokens, special_token_policy=SpecialTokenPolicy.KEEP)
    out: list[str] = []
    pending = b""
    for token in tokens:
        piece = inner.id_to_piece(token)
        if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
            pending += bytes([int(piece[3:5], 16)])
            continue
        if pending:
            out.append(pending.decode("utf-8"))
            pending = b""
        out.append(piece if inner.is_special(token) else piece.replace("▁", " "))
    if pending:
        out.append(pending.decode("utf-8"))
    return "".join(out)


# -- generated conversations -----------------------------------------------------------

_PIECES = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from('\n {}"é日'),
    min_size=1,
    max_size=12,
) | st.sampled_from(["[INST]", "</s>", "[TOOL_CALLS]", "[/INST]", " ", "\n\n"])
texts = st.lists(_PIECES, min_size=1, max_size=4).map("".join).filter(lambda t: t.strip() != "")
names = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
ids = st.from_regex(r"[A-Za-z0-9]{9}", fullmatch=True)
values = st.one_of(
    st.integers(-1000, 1000), st.booleans(), st.none(), st.text(max_size=10), st.floats(0, 10)
)
arguments = st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), values, max_size=3)
results = st.one_of(texts, arguments.map(json.dumps))
tools_offered = st.lists(
    st.builds(
        lambda name, description, props: Tool(
            name,
            description,
            {"type": "object", "properties": {p: {"type": "string"} for p in props}},
        ),
        names,
        st.one_of(st.none(), texts),
        st.lists(st.from_regex(r"[a-z]{1,6}", fullmatch=True), max_size=2, unique=True),
    ),
    max_size=2,
    unique_by=lambda t: t.name,
)


@st.composite
def conversations(draw: Any, version: int) -> tuple[list[Message], list[Tool]]:
    messages: list[Message] = []
    if draw(st.booleans()):
        messages.append(Message(Role.SYSTEM, draw(texts)))
    rounds = draw(st.integers(1, 3))
    used: set[str] = set()
    for r in range(rounds):
        for _ in range(draw(st.integers(1, 2))):
            messages.append(Message(Role.USER, draw(texts)))
        if version >= 7 and draw(st.integers(0, 4)) == 0:
            messages.append(Message(Role.SYSTEM, draw(texts)))
        last = r == rounds - 1
        kind = draw(st.sampled_from(["text", "calls", "none"] if last else ["text", "calls"]))
        if kind == "none":
            break
        reasoning = draw(st.one_of(st.none(), texts)) if version >= 13 else None
        if kind == "text":
            messages.append(Message(Role.ASSISTANT, draw(texts), reasoning=reasoning))
            continue
        calls = []
        for _ in range(draw(st.integers(1, 3))):
            call_id = draw(ids.filter(lambda i: i not in used))
            used.add(call_id)
            calls.append(ToolCall(call_id, draw(names), draw(arguments)))
        text = draw(st.one_of(st.just(""), texts)) if version >= 7 else ""
        messages.append(Message(Role.ASSISTANT, text, tuple(calls), reasoning=reasoning))
        order = list(calls)
        if version >= 11:
            order = draw(st.permutations(calls))
        for call in order:
            messages.append(Message(Role.TOOL, draw(results), tool_call_id=call.id))
        if not last or draw(st.booleans()):
            messages.append(Message(Role.ASSISTANT, draw(texts), reasoning=reasoning))
    if draw(st.booleans()) and messages[-1].role is not Role.ASSISTANT:
        messages.append(Message(Role.ASSISTANT, draw(texts)))  # a prefix to continue
    return messages, draw(tools_offered)


def to_reference(
    messages: list[Message], tools: list[Tool], version: int
) -> ChatCompletionRequest[Any]:
    out: list[Any] = []
    for i, m in enumerate(messages):
        if m.role is Role.SYSTEM:
            out.append(mm.SystemMessage(content=m.text))
        elif m.role is Role.USER:
            out.append(mm.UserMessage(content=m.text))
        elif m.role is Role.TOOL:
            out.append(mm.ToolMessage(content=m.text, tool_call_id=m.tool_call_id))
        else:
            calls = [
                MToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.raw_arguments))
                for c in m.tool_calls
            ]
            content: Any = m.text or None
            if version >= 13 and m.reasoning:
                content = [ThinkChunk(thinking=m.reasoning)]
                if m.text:
                    content.append(TextChunk(text=m.text))
            out.append(
                mm.AssistantMessage(
                    content=content, tool_calls=calls or None, prefix=i == len(messages) - 1
                )
            )
    offered = [
        MTool(
            function=Function(
                name=t.name, description=t.description or "", parameters=dict(t.parameters)
            )
        )
        for t in tools
    ]
    return ChatCompletionRequest(messages=out, tools=offered or None)


def check(name: str, messages: list[Message], tools: list[Tool]) -> None:
    fmt = formats.get(name)
    version = fmt.version  # type: ignore[attr-defined]
    oracle = reference(name)
    expected = oracle.encode_chat_completion(to_reference(messages, tools, version)).tokens
    prompt = fmt.render(ChatRequest(tuple(messages), tools=tuple(tools)))
    assert list(prompt.tokens) == expected
    assert prompt.text == reference_text(oracle, expected, not fmt.tekken)  # type: ignore[attr-defined]
    assert fmt.render_text(ChatRequest(tuple(messages), tools=tuple(tools))) == prompt.text  # type: ignore[attr-defined]


_SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", SHIPPED + BUILT)
def test_generated_conversations_match_mistral_common(name: str) -> None:
    version = formats.get(name).version  # type: ignore[attr-defined]

    @_SETTINGS
    @given(conversations(version))
    def run(case: tuple[list[Message], list[Tool]]) -> None:
        check(name, *case)

    run()


@pytest.mark.parametrize("name", SHIPPED + BUILT)
def test_a_worked_conversation_matches_mistral_common(name: str) -> None:
    version = formats.get(name).version  # type: ignore[attr-defined]
    weather = Tool(
        "get_weather", "The weather", {"type": "object", "properties": {"city": {"type": "string"}}}
    )
    calls = (
        ToolCall("abcDEF123", "get_weather", {"city": "Paris"}),
        ToolCall("xyz987QRS", "get_weather", {"city": "Tōkyō"}),
    )
    messages = [
        Message(Role.SYSTEM, "Be brief."),
        Message(Role.USER, "Weather in Paris and Tokyo? [INST]"),
        Message(Role.ASSISTANT, "" if version < 7 else "Checking.", calls),
        Message(Role.TOOL, '{"temp": 21}', tool_call_id="abcDEF123"),
        Message(Role.TOOL, "cloudy", tool_call_id="xyz987QRS"),
        Message(Role.ASSISTANT, "21 and cloudy.", reasoning="easy" if version >= 13 else None),
        Message(Role.USER, "Thanks"),
    ]
    check(name, messages, [weather])
    # User text that spells a control token stays text.
    prompt = formats.get(name).render(ChatRequest(tuple(messages), tools=(weather,)))
    assert (
        prompt.tokens.count(
            reference(name).instruct_tokenizer.tokenizer.get_special_token("[INST]")
        )
        == 2
    )
