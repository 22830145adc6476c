"""Test helpers for chatlane and its users: tiny random-weight models with real vocabularies.

`tiny_gguf(name)` returns the path of a small GGUF file for the registered format ``name``:
random weights and the family's *real* tokenizer. It says nothing sensible, but llama.cpp
loads it, tokenizes exactly as the real model does, and generates fast on a CPU: enough to
test everything that is true for any weights (prompt token ids, streaming, constrained
decoding, cancellation) without downloading a model. `tiny_llama3_gguf()` is the Llama 3
one (17 MB); `TINY_MODEL_NAME` is the ``general.name`` of the default format's test model.

`Cassette` records a backend's HTTP exchanges to a file and replays them, and the
``chatlane_cassette`` pytest fixture (`chatlane.testing.pytest_plugin`) gives each test one.

Files are built on first use and cached (``~/.cache/chatlane/models`` or
``$CHATLANE_CACHE/models``); each is byte-identical for a given seed. Building needs the
``gguf`` package and the package that ships the family's vocabulary; see each family's
``testmodel`` module.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from chatlane.backends._guard import RequestsForbidden
from chatlane.errors import ChatlaneError
from chatlane.formats._testmodel import model_cache_dir
from chatlane.testing._cassette import Cassette, CassetteMismatch

__all__ = [
    "TINY_MODEL_NAME",
    "Cassette",
    "CassetteMismatch",
    "RequestsForbidden",
    "allow_requests",
    "model_cache_dir",
    "tiny_gguf",
    "tiny_llama3_gguf",
]


def tiny_gguf(
    format_name: str, cache_dir: str | os.PathLike[str] | None = None, *, seed: int = 0
) -> Path:
    """The tiny random-weight model of the family that serves ``format_name``.

    Raises:
        ChatlaneError: the family has no test model, or what building it needs is missing.
    """
    from chatlane import formats

    path: Path = _testmodel(formats.family(format_name), format_name).tiny_gguf(
        cache_dir, seed=seed
    )
    return path


def _testmodel(package: str, format_name: str) -> Any:
    """The ``testmodel`` module of the family ``package``."""
    try:
        return importlib.import_module(f"{package}.testmodel")
    except ModuleNotFoundError as e:
        if e.name != f"{package}.testmodel":
            raise
        raise ChatlaneError(f"the format {format_name!r} has no tiny test model") from e


def tiny_llama3_gguf(cache_dir: str | os.PathLike[str] | None = None, *, seed: int = 0) -> Path:
    """The tiny random-weight Llama 3 model: ``tiny_gguf("llama3.1", ...)``."""
    return tiny_gguf("llama3.1", cache_dir, seed=seed)


def __getattr__(name: str) -> Any:
    # TINY_MODEL_NAME is the default family's, read when asked for (no family is imported
    # with chatlane.testing).
    if name == "TINY_MODEL_NAME":
        from chatlane import formats

        return _testmodel(formats.family(formats.DEFAULT), formats.DEFAULT).TINY_MODEL_NAME
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def allow_requests(allowed: bool | None = True) -> None:
    """Allow (True) or forbid (False) real model requests, for a test suite; None goes back
    to ``$CHATLANE_ALLOW_REQUESTS``. Forbidden requests raise `RequestsForbidden`."""
    from chatlane.backends._guard import set_allowed

    set_allowed(allowed)
