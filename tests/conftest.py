"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# Property tests explore a fixed, reproducible set of examples on CI (CI=true), so a run's result
# depends on the code alone; locally they keep exploring new examples on every run.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


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


def pytest_unconfigure(config: pytest.Config) -> None:
    # llama-cpp-python 0.3.36 opens two handles on os.devnull at import (llama_cpp/_utils.py)
    # and never closes them; with warnings as errors that is a ResourceWarning at exit.
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        handle = getattr(utils, name, None)
        if handle is not None:
            handle.close()
