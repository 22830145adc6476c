"""The tokenizer's fast paths give Meta's tokens exactly.

`Llama3Tokenizer.encode` takes a lookahead-free copy of Llama 3's regex for texts without two
whitespace characters in a row (other than line breaks), and `encode_lines` tokenizes a text
line by line (fixed lines from a precomputed table, indents apart). Each test compares with
Meta's tokenizer (one tiktoken call on the whole text, the exact regex), on the characters
where the regexes could part: every kind of whitespace, line breaks, digits, apostrophes.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

from chatlane.errors import InputError
from chatlane.formats._llama3_prompts import FIXED_TEXTS
from chatlane.formats.tokenizer import Llama3Tokenizer, load_tokenizer

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


lines = st.builds(
    lambda indent, body, end: " " * indent + body + end,
    st.sampled_from([0, 0, 1, 2, 4, 8, 16, 24, 40]),
    texts,
    st.sampled_from(["\n", "\n", "\n\n", "", " \n", "\r\n"]),
)


@settings(max_examples=400, deadline=None)
@given(chunks=st.lists(st.one_of(lines, st.sampled_from(FIXED_TEXTS)), max_size=8))
def test_encode_lines_is_the_whole_text_s_tokens(
    meta: MetaTokenizer, tok: Llama3Tokenizer, chunks: list[str]
) -> None:
    assert tok.encode_lines(chunks) == meta_tokens(meta, "".join(chunks))


def test_fixed_texts_are_meta_s(meta: MetaTokenizer, tok: Llama3Tokenizer) -> None:
    for text in FIXED_TEXTS:
        assert tok.encode_lines([text]) == meta_tokens(meta, text)
        assert tok.encode_lines(["x\n", text]) == meta_tokens(meta, "x\n" + text)


def test_encode_lines_of_a_long_text_cuts_where_meta_cuts(
    meta: MetaTokenizer, tok: Llama3Tokenizer
) -> None:
    chunks = ["a" * 20_000 + "\n", "b" * 20_000 + "\n", " " * 30 + "c"]
    assert tok.encode_lines(chunks) == meta_tokens(meta, "".join(chunks))


def test_encode_lines_takes_text_only(tok: Llama3Tokenizer) -> None:
    with pytest.raises(InputError, match="encodes str, got int"):
        tok.encode_lines(["a\n", 3])  # type: ignore[list-item]


def test_lone_surrogates_are_replaced_as_meta_does(
    meta: MetaTokenizer, tok: Llama3Tokenizer
) -> None:
    text = "a\ud800b c"
    assert tok.encode(text) == meta_tokens(meta, text)
    assert tok.encode_lines([text + "\n", "  x"]) == meta_tokens(meta, text + "\n  x")
