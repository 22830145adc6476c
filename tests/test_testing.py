"""`chatlane.testing`: the tiny random-weight Llama 3 model and its real tokenizer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatlane.formats.llama3.tokenizer import Llama3Tokenizer

pytestmark = pytest.mark.engine

SAMPLES = [
    "Hello world",
    "The café's naïve résumé — 12345 tokens!\n\n  x",
    "def f(x):\n    return x*2\n",
    " việc hợp nhiều .:.:",  # Llama 3's own additions to the cl100k vocabulary
    "日本語のテキスト、한국어 텍스트",
    "emoji 🤖🎉 mixed\t\ttabs   spaces\r\n",
    '{"name": "get_weather", "parameters": {"city": "Zürich"}}',
    "<|eot_id|> is text here, as is <|begin_of_text|>",
]


@pytest.fixture(scope="module")
def llama(tiny_model: Path) -> Iterator[Any]:
    llama_cpp = pytest.importorskip("llama_cpp")
    model = llama_cpp.Llama(str(tiny_model), n_ctx=64, verbose=False, vocab_only=True)
    yield model
    model.close()


def _tokenizer() -> Llama3Tokenizer:
    from chatlane.formats.llama3 import Llama3

    return Llama3().tokenizer


@pytest.mark.parametrize("text", SAMPLES)
def test_llama_cpp_tokenizes_as_the_real_llama3_tokenizer(llama: Any, text: str) -> None:
    assert llama.tokenize(text.encode(), add_bos=False, special=False) == _tokenizer().encode(text)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_any_text_tokenizes_the_same(llama: Any, text: str) -> None:
    assert llama.tokenize(text.encode(), add_bos=False, special=False) == _tokenizer().encode(text)


def test_the_special_tokens_have_llama3s_ids(llama: Any) -> None:
    tokenizer = _tokenizer()
    for name in (
        "<|begin_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eom_id|>",
        "<|eot_id|>",
        "<|python_tag|>",
    ):
        assert llama.tokenize(name.encode(), add_bos=False, special=True) == [
            tokenizer.special(name)
        ]


def test_the_model_is_built_the_same_for_a_seed_and_cached(
    tiny_model: Path, tmp_path: Path
) -> None:
    from chatlane.testing import tiny_llama3_gguf

    built = tiny_llama3_gguf(tmp_path)
    assert built.parent == tmp_path
    assert built.read_bytes() == tiny_model.read_bytes()
    mtime = built.stat().st_mtime_ns
    assert tiny_llama3_gguf(tmp_path) == built
    assert built.stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [built.name]  # no temporary file left
