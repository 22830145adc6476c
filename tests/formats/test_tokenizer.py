"""The Llama 3 tokenizer: Meta's token ids, no special tokens from text, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

from chatlane.errors import InputError
from chatlane.formats.llama3.tokenizer import (
    ENV_VAR,
    SPECIAL_TOKENS,
    Llama3Tokenizer,
    TokenizerNotFound,
    default_tokenizer_path,
    load_tokenizer,
)

SPECIAL_TEXTS = sorted(SPECIAL_TOKENS)
texts = st.lists(
    st.one_of(
        st.text(st.characters(exclude_categories=["Cs"]), max_size=30),
        st.sampled_from([*SPECIAL_TEXTS[:12], "<|reserved_special_token_99|>", "<|", "|>"]),
    ),
    max_size=6,
).map("".join)


@pytest.fixture(scope="module")
def meta() -> MetaTokenizer:
    return MetaTokenizer.get_instance()


def test_the_special_tokens_are_meta_s(meta: MetaTokenizer) -> None:
    assert meta.special_tokens == SPECIAL_TOKENS
    tok = load_tokenizer()
    assert tok.special("<|eot_id|>") == 128009
    assert tok.special("<|python_tag|>") == 128010
    with pytest.raises(InputError, match="not a Llama 3 special token"):
        tok.special("<|nope|>")


@settings(max_examples=300, deadline=None)
@given(text=texts)
def test_text_never_becomes_a_special_token(meta: MetaTokenizer, text: str) -> None:
    tok = load_tokenizer()
    tokens = tok.encode(text)
    assert all(t < 128000 for t in tokens)
    assert tokens == meta.encode(text, bos=False, eos=False)
    assert tok.decode(tokens) == text


@pytest.mark.parametrize(
    "text",
    [
        " " * 30_000 + "x",  # a run of whitespace longer than tiktoken takes in one go
        "a" * 26_000 + " b" + "\n" * 25_001,
        ("word " * 90_000),  # longer than one 400,000-character slice
    ],
)
def test_long_runs_are_cut_where_meta_cuts(meta: MetaTokenizer, text: str) -> None:
    assert load_tokenizer().encode(text) == meta.encode(text, bos=False, eos=False)


def test_loaded_once_and_cached() -> None:
    assert load_tokenizer() is load_tokenizer()
    assert load_tokenizer(default_tokenizer_path()) is load_tokenizer()


def test_path_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    copy = tmp_path / "llama3.model"
    copy.write_bytes(default_tokenizer_path().read_bytes())
    monkeypatch.setenv(ENV_VAR, str(copy))
    tok = load_tokenizer()
    assert tok.path == copy.resolve()
    assert tok.encode("hello world") == [15339, 1917]


def test_missing_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "absent.model"))
    with pytest.raises(TokenizerNotFound, match="no Llama 3 tokenizer file at"):
        load_tokenizer()


def test_not_a_tokenizer_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.model"
    bad.write_text("this is not base64 ranks\n")
    with pytest.raises(TokenizerNotFound, match="not a tiktoken BPE file"):
        Llama3Tokenizer(bad)
    small = tmp_path / "small.model"
    small.write_text("YQ== 0\n")
    with pytest.raises(TokenizerNotFound, match="not the 128000"):
        Llama3Tokenizer(small)


def test_no_llama_models_and_no_path_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.delenv(ENV_VAR, raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llama_models" else real(name, *a),
    )
    with pytest.raises(TokenizerNotFound, match="pip install llama-models"):
        default_tokenizer_path()


def test_bad_input_is_an_input_error() -> None:
    tok = load_tokenizer()
    with pytest.raises(InputError, match="encodes str"):
        tok.encode(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="not a Llama 3 token id"):
        tok.decode([10**6])
