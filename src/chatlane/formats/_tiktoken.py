"""Pieces every tiktoken-based tokenizer shares (Llama 3, Llama 4, the test-model builders):
reading a BPE ranks file, cutting long runs exactly where Meta's tokenizers cut, tiktoken's
fast path, finding a file that ``llama-models`` ships, and loading a tokenizer once."""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from chatlane.errors import TokenizerNotFound

if TYPE_CHECKING:
    import tiktoken

__all__ = ["cached_loader", "core_encode", "llama_models_file", "read_ranks", "split_long_runs"]

T = TypeVar("T")


def read_ranks(path: Path, what: str) -> dict[bytes, int]:
    """The ranks of a tiktoken BPE file (one ``base64-token rank`` line each); ``what``
    names the tokenizer in errors (``"Llama 3"``)."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise TokenizerNotFound(f"no {what} tokenizer file at {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerNotFound(f"cannot read the {what} tokenizer file {path}: {e}") from e
    ranks: dict[bytes, int] = {}
    try:
        for line in text.splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    except ValueError as e:
        raise TokenizerNotFound(f"{path} is not a tiktoken BPE file: {e}") from e
    return ranks


def split_long_runs(text: str, max_run: int) -> Iterator[str]:
    """``text`` cut so that no piece holds more than ``max_run`` consecutive whitespace or
    non-whitespace characters, exactly where Meta's tokenizers cut (tiktoken panics on very
    long runs, and the cuts change the tokens)."""
    run = 0
    in_space = text[0].isspace() if text else False
    start = 0
    for i, ch in enumerate(text):
        space = ch.isspace()
        if space is not in_space:
            run = 1
            in_space = space
        else:
            run += 1
            if run > max_run:
                yield text[start:i]
                start = i
                run = 1
    yield text[start:]


def core_encode(encoding: tiktoken.Encoding) -> Callable[[str], list[int]]:
    """tiktoken's core ``encode_ordinary`` (no Python wrapper per call) where available."""
    core = getattr(encoding, "_core_bpe", None)
    method = getattr(core, "encode_ordinary", None)
    return method if callable(method) else encoding.encode_ordinary


def llama_models_file(relative: str, env_var: str, what: str) -> Path:
    """``$env_var``, else the file at ``relative`` inside the installed ``llama-models``
    package (``llama3/tokenizer.model``). Raises `TokenizerNotFound` when there is neither."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    import importlib.util

    try:
        spec = importlib.util.find_spec("llama_models")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / relative
            if candidate.is_file():
                return candidate
    raise TokenizerNotFound(
        f"no {what} tokenizer found: install it with `pip install llama-models` "
        f"(it ships llama_models/{relative}), set {env_var} to the file, or pass tokenizer="
    )


def cached_loader(
    build: Callable[[Path], T], default_path: Callable[[], Path]
) -> Callable[[str | os.PathLike[str] | None], T]:
    """A loader that builds each tokenizer file's tokenizer once (a path, or the default)."""
    lock = threading.Lock()
    cached = functools.cache(build)

    def load(path: str | os.PathLike[str] | None = None) -> T:
        resolved = Path(path) if path is not None else default_path()
        with contextlib.suppress(OSError):
            resolved = resolved.resolve()
        with lock:
            return cached(resolved)

    return load
