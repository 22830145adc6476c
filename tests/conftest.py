"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The tiny random-weight Llama 3 GGUF (real tokenizer), built once and cached."""
    pytest.importorskip("gguf")
    pytest.importorskip("llama_models")
    from chatlane.testing import tiny_llama3_gguf

    return tiny_llama3_gguf()


@pytest.fixture(scope="session")
def tiny_engine(tiny_model: Path) -> Iterator[Any]:
    """A `LlamaCpp` on the tiny model (its Llama 3 format picked from the file), loaded once."""
    pytest.importorskip("llama_cpp")
    from chatlane.backends.llamacpp import LlamaCpp

    # One thread: the model is tiny, and on shared cores llama.cpp's threads spin on each other.
    with LlamaCpp(tiny_model, n_ctx=1024, n_threads=1) as engine:
        yield engine
