"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The tiny random-weight Llama 3 GGUF (real tokenizer), built once and cached."""
    pytest.importorskip("gguf")
    pytest.importorskip("llama_models")
    from chatlane.testing import tiny_llama3_gguf

    return tiny_llama3_gguf()
