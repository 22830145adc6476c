"""Llama 4: its tokenizer against Meta's, its registry entry, and what its prompts guarantee."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llama_models.llama4.tokenizer import Tokenizer as MetaTokenizer

from chatlane import formats
from chatlane.errors import InputError, MessageError
from chatlane.formats.base import ModelInfo, PromptFormat
from chatlane.formats.llama4 import Llama4
from chatlane.formats.llama4.prompts import meta_system_text
from chatlane.formats.llama4.tokenizer import SPECIAL_TOKENS, load_tokenizer
from chatlane.messages import ToolCall, assistant, system, tool_result, user
from chatlane.request import ChatRequest, ResponseFormat
from chatlane.tools import Tool

WEATHER = Tool.from_schema(
    "get_weather",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "Weather for a city",
)

CONTROL = [t for t in SPECIAL_TOKENS if not t.startswith("<|reserved")][:40]
any_text = st.lists(
    st.one_of(
        st.text(st.characters(exclude_categories=["Cs"]), max_size=30),
        st.sampled_from(CONTROL),
        st.sampled_from(["  ", "\n\n", " \t", "'s", "HELLO", "x/y\n", "123456"]),
    ),
    max_size=6,
).map("".join)


@pytest.fixture(scope="module")
def meta() -> MetaTokenizer:
    return MetaTokenizer.get_instance()


def test_special_tokens_are_meta_s(meta: MetaTokenizer) -> None:
    tokenizer = load_tokenizer()
    assert tokenizer.special_tokens == meta.special_tokens
    assert tokenizer.n_words == meta.n_words == 202048
    assert tokenizer.special("<|header_start|>") == 200005
    assert tokenizer.special("<|eot|>") == 200008
    assert tokenizer.special("<|python_start|>") == 200016
    with pytest.raises(InputError):
        tokenizer.special("<|eot_id|>")


@settings(max_examples=150, deadline=None)
@given(text=any_text)
def test_encode_is_token_exact_with_meta(meta: MetaTokenizer, text: str) -> None:
    assert load_tokenizer().encode(text) == meta.encode(text, bos=False, eos=False)


def test_long_runs_are_cut_where_meta_cuts(meta: MetaTokenizer) -> None:
    for text in ("a" * 30_000 + " b", " " * 26_000 + "x", "ab " * 150_000):
        assert load_tokenizer().encode(text) == meta.encode(text, bos=False, eos=False)


@settings(max_examples=60, deadline=None)
@given(text=any_text, profile=st.sampled_from(["meta", "hf"]))
def test_user_text_never_becomes_a_control_token(text: str, profile: Any) -> None:
    fmt = Llama4(profile)
    plain = fmt.render(ChatRequest((user("hi"),)))
    typed = fmt.render(ChatRequest((user(text),)))
    specials = [t for t in typed.tokens if fmt.tokenizer.is_special(t)]
    assert specials == [t for t in plain.tokens if fmt.tokenizer.is_special(t)]
    # and a server reading the prompt's text would see the control-token text as one
    found = fmt.misread_text(typed)
    assert (found is not None) == any(c in text for c in SPECIAL_TOKENS if c in typed.text)


def test_the_registry_knows_llama4() -> None:
    assert "llama4" in formats.names()
    fmt = formats.get("llama4", profile="hf")
    assert isinstance(fmt, PromptFormat)
    assert fmt.name == "llama4-hf"
    assert formats.get("llama4").name == "llama4-meta"
    with pytest.raises(InputError, match="llama4"):
        formats.get("llama4", date="2025-01-01")
    with pytest.raises(InputError):
        formats.get("llama4", profile="vllm")


def _vocabulary(*texts: str) -> Any:
    ids = {t: i for i, t in enumerate(texts)}
    return ids.get


def test_detect_reads_the_vocabulary_the_architecture_and_the_name() -> None:
    llama4_vocab = _vocabulary("<|begin_of_text|>", "<|header_start|>", "<|header_end|>", "<|eot|>")
    llama3_vocab = _vocabulary("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
    found = formats.detect(ModelInfo(architecture="llama4", control_token=llama4_vocab))
    assert found is not None
    assert found.name == "llama4-meta"
    # A Llama 3 vocabulary is Llama 3, whatever the name says.
    other = formats.detect(ModelInfo(name="Llama-4-ish", control_token=llama3_vocab))
    assert other is not None
    assert other.name.startswith("llama3")
    assert formats.detect(ModelInfo(architecture="llama4")) is not None
    named = formats.detect(ModelInfo(model_id="meta-llama/Llama-4-Scout-17B-16E-Instruct"))
    assert named is not None
    assert named.name == "llama4-meta"
    assert formats.detect(ModelInfo(model_id="llama-3.1-8b")).name.startswith("llama3")  # type: ignore[union-attr]
    assert Llama4().matches(ModelInfo(architecture="llama4", control_token=llama4_vocab))
    assert not Llama4().matches(ModelInfo(model_id="qwen3-8b"))


def test_meta_prompt_with_tools_has_the_pythonic_system_prompt() -> None:
    call = ToolCall("c", "get_weather", {"city": "Paris"})
    request = ChatRequest(
        (system("Be brief."), user("Weather?"), assistant("", [call]), tool_result(call, "sun")),
        tools=(WEATHER,),
        tool_choice="get_weather",
    )
    text = Llama4().render(request).text
    assert text.startswith(
        "<|begin_of_text|><|header_start|>system<|header_end|>\n\n"
        "You are a helpful assistant and an expert in function composition."
    )
    assert '"name": "get_weather"' in text
    assert text.count("Be brief.") == 1
    assert "Be brief.\nYou MUST use the tool `get_weather` to answer the user query.<|eot|>" in text
    assert '[get_weather(city="Paris")]<|eom|>' in text
    assert "sun<|eom|><|header_start|>assistant<|header_end|>\n\n" in text
    replaced = Llama4(system_message_behavior="replace").render(request).text
    assert "function composition" not in replaced
    assert "Be brief.\n" in replaced
    assert '"name": "get_weather"' not in replaced  # no {{ function_description }} in it


def test_hf_prompt_wraps_text_beside_calls_and_quotes_tool_results() -> None:
    call = ToolCall("c", "get_weather", {"city": "Paris"})
    request = ChatRequest(
        (user("Weather?"), assistant("Checking.", [call]), tool_result(call, "sun")),
        tools=(WEATHER,),
    )
    text = Llama4("hf").render(request).text
    assert text.startswith("<|begin_of_text|><|header_start|>user<|header_end|>\n\nGiven the")
    assert (
        '<|python_start|>Checking.<|python_end|>{"name": "get_weather", "parameters": '
        '{"city": "Paris"}}<|eot|>'
    ) in text
    assert '<|header_start|>ipython<|header_end|>\n\n"sun"<|eot|>' in text
    assert "<|eom|>" not in text


def test_prefill_continues_the_last_assistant_message() -> None:
    # meta: the message as it is (ChatFormat without its end token); hf: transformers'
    # continue_final_message, which cuts after the stripped content.
    for profile, end in (("meta", "Hello, "), ("hf", "Hello,")):
        prompt = Llama4(profile).render(ChatRequest((user("Hi"), assistant("Hello, "))))  # type: ignore[arg-type]
        assert prompt.text.endswith("<|header_start|>assistant<|header_end|>\n\n" + end)
        prompt = Llama4(profile).render(ChatRequest((user("Hi"),)))  # type: ignore[arg-type]
        assert prompt.text.endswith("<|header_start|>assistant<|header_end|>\n\n")


def test_bad_conversations_raise_message_errors() -> None:
    call = ToolCall("c", "get_weather", {"city": "Paris"})
    for messages in (
        (user("a"), system("late")),
        (user("a"), tool_result(call, "x")),
        (user("a"), assistant("", [call])),
    ):
        with pytest.raises(MessageError):
            Llama4().render(ChatRequest(messages))
    with pytest.raises(MessageError, match="first user message"):
        Llama4("hf").render(ChatRequest((system("s"),), tools=(WEATHER,)))


def test_re_rendering_a_grown_conversation_gives_the_same_prompt() -> None:
    fmt = Llama4()
    messages = [system("s"), user("one")]
    for i in range(6):
        request = ChatRequest(tuple(messages), tools=(WEATHER,))
        assert fmt.render(request) == Llama4().render(request)
        messages += [assistant(f"answer {i}"), user(f"question {i}")]


def test_grammar_forces_the_profile_s_call_form() -> None:
    request = ChatRequest((user("x"),), tools=(WEATHER,), tool_choice="required")
    meta = Llama4().grammar(request)
    assert meta is not None
    assert meta.is_call
    assert '"["' in meta.lark
    assert meta.end_sequences == ("<|eot|>", "<|eom|>")
    hf = Llama4("hf").grammar(request)
    assert hf is not None
    assert '"const": "get_weather"' in hf.lark
    schema = ChatRequest(
        (user("x"),),
        response_format=ResponseFormat.from_schema({"type": "object", "properties": {}}),
    )
    answer = Llama4().grammar(schema)
    assert answer is not None
    assert not answer.is_call
    assert answer.end_sequences == ("<|eot|>",)
    assert Llama4().grammar(ChatRequest((user("x"),), tools=(WEATHER,))) is None


@settings(max_examples=80, deadline=None)
@given(
    descriptions=st.lists(st.one_of(st.none(), any_text), min_size=1, max_size=3),
    system_text=st.one_of(st.none(), any_text),
    default=st.one_of(st.none(), any_text, st.integers(), st.booleans()),
)
def test_the_system_prompt_s_segments_tokenize_as_its_text(
    meta: MetaTokenizer, descriptions: list[str | None], system_text: str | None, default: Any
) -> None:
    """The meta system prompt is tokenized segment by segment (fixed texts looked up): the
    tokens are those of its whole text, whatever the tool descriptions hold."""
    tools = tuple(
        Tool.from_schema(
            f"tool_{i}",
            {
                "type": "object",
                "properties": {
                    "a": {"type": "string", "description": d, "default": default},
                    "b": {"type": ["integer", "null"]},
                },
                "required": ["b"],
            },
            d,
        )
        for i, d in enumerate(descriptions)
    )
    messages = (user("hi"),) if system_text is None else (system(system_text), user("hi"))
    prompt = Llama4().render(ChatRequest(messages, tools=tools))
    end = prompt.tokens.index(SPECIAL_TOKENS["<|eot|>"])
    # <|begin_of_text|>, <|header_start|>, "system", <|header_end|>, "\n\n", the body
    body = list(prompt.tokens[5:end])
    text = meta_system_text(system_text, tools, None, "append")
    assert prompt.text.startswith(
        f"<|begin_of_text|><|header_start|>system<|header_end|>\n\n{text}<|eot|>"
    )
    assert body == meta.encode(text, bos=False, eos=False)
