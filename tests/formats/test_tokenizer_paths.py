"""The tokenizer's fast paths give Meta's tokens exactly.

`Llama3Tokenizer.encode` takes a lookahead-free copy of Llama 3's regex for texts without two
whitespace characters in a row (other than line breaks), and `encode_segments` tokenizes tool
definitions cut into fixed texts (from a precomputed table) and values. Each test compares with
Meta's tokenizer (one tiktoken call on the whole text, the exact regex), on the characters
where the regexes could part: every kind of whitespace, line breaks, digits, apostrophes.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

from chatlane.errors import InputError
from chatlane.formats.llama3.prompts import FIXED_TEXTS, meta_json_tools_segments
from chatlane.formats.llama3.tokenizer import Llama3Tokenizer, load_tokenizer
from chatlane.tools import Tool

# Unicode's White_Space characters (what the Rust regex's \s means), and near misses.
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2005\u200a\u2028\u2029\u202f\u205f\u3000"
NEAR_MISSES = "\x1c\x1d\x1e\x1f\u180e\u200b\ufeff"
ALPHABET = WHITE_SPACE + NEAR_MISSES + "aZé中7٣'\"sS.,:{}[]-_!?😀"

texts = st.text(st.sampled_from(ALPHABET), max_size=40)


@pytest.fixture(scope="module")
def meta() -> MetaTokenizer:
    return MetaTokenizer.get_instance()


@pytest.fixture(scope="module")
def tok() -> Llama3Tokenizer:
    return load_tokenizer()


def meta_tokens(meta: MetaTokenizer, text: str) -> list[int]:
    return list(meta.encode(text, bos=False, eos=False))


@settings(max_examples=400, deadline=None)
@given(text=texts)
def test_encode_is_meta_s_on_whitespace_heavy_text(
    meta: MetaTokenizer, tok: Llama3Tokenizer, text: str
) -> None:
    assert tok.encode(text) == meta_tokens(meta, text)


def test_every_whitespace_character_splits_as_meta_s(
    meta: MetaTokenizer, tok: Llama3Tokenizer
) -> None:
    # Each character below U+3100 (all White_Space characters are there) between words, in
    # pairs and before digits and punctuation: where the two regexes would differ.
    for code in range(0x3100):
        c = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            continue
        for text in (f"a{c}{c}b", f"{c}{c}1", f"x {c}.", f"{c} y", f"1{c}{c}"):
            assert tok.encode(text) == meta_tokens(meta, text), (hex(code), text)


values = st.text(st.sampled_from(ALPHABET + "\\<>&"), max_size=12)
properties = st.dictionaries(
    values, st.fixed_dictionaries({}, optional={"description": values}), max_size=3
)
tools = st.lists(
    st.builds(
        lambda name, description, props, required: Tool.from_schema(
            name,
            {
                "type": "object",
                "properties": props,
                "required": [p for p in props if required],
            },
            description,
        ),
        st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True),
        st.one_of(st.none(), values),
        properties,
        st.booleans(),
    ),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(tools=tools)
def test_tool_definitions_cut_where_the_regex_always_cuts(
    meta: MetaTokenizer, tok: Llama3Tokenizer, tools: list[Tool]
) -> None:
    segments = meta_json_tools_segments(tools)
    assert all(s in FIXED_TEXTS for s in segments[::2])
    assert tok.encode_segments(segments) == meta_tokens(meta, "".join(segments))


def test_fixed_texts_are_meta_s(meta: MetaTokenizer, tok: Llama3Tokenizer) -> None:
    for text in FIXED_TEXTS:
        assert tok.encode(text) == meta_tokens(meta, text)


def test_long_segments_are_cut_where_meta_cuts(meta: MetaTokenizer, tok: Llama3Tokenizer) -> None:
    segments = ["a" * 20_000 + '":', ' "' + "b" * 20_000 + "\n", " " * 30 + "c"]
    assert tok.encode_segments(segments) == meta_tokens(meta, "".join(segments))


def test_encode_segments_takes_text_only(tok: Llama3Tokenizer) -> None:
    with pytest.raises(InputError, match="encodes str, got int"):
        tok.encode_segments(["a\n", 3])  # type: ignore[list-item]


def test_lone_surrogates_are_replaced_as_meta_does(
    meta: MetaTokenizer, tok: Llama3Tokenizer
) -> None:
    text = "a\ud800b c"
    assert tok.encode(text) == meta_tokens(meta, text)
    assert tok.encode_segments([text]) == meta_tokens(meta, text)
