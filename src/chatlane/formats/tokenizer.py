"""The Llama 3 tokenizer, on tiktoken.

The BPE ranks come from ``llama_models/llama3/tokenizer.model`` (Meta's ``llama-models``
package), from a path the caller gives, or from the file named by the environment variable
``CHATLANE_LLAMA3_TOKENIZER``. Each file is loaded once per process and cached.

Text is never encoded into special tokens: ``encode("<|eot_id|>")`` gives the ordinary
tokens of those characters. Special tokens (``<|begin_of_text|>``, headers, ``<|eot_id|>``,
...) enter a prompt only through `Llama3Tokenizer.special`, which the renderer calls.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from chatlane.errors import ChatlaneError, InputError
from chatlane.formats._llama3_prompts import FIXED_TEXTS

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "BEGIN_OF_TEXT",
    "END_HEADER",
    "END_OF_MESSAGE",
    "END_OF_TEXT",
    "END_OF_TURN",
    "ENV_VAR",
    "IMAGE",
    "PYTHON_TAG",
    "SPECIAL_TOKENS",
    "START_HEADER",
    "Llama3Tokenizer",
    "TokenizerNotFound",
    "load_tokenizer",
]

ENV_VAR = "CHATLANE_LLAMA3_TOKENIZER"
"""The environment variable that may name the tokenizer file."""

# The regex Llama 3 pre-tokenizes with (Meta's llama_models/llama3/tokenizer.py).
_PAT_STR = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The same regex without its one lookahead alternative, ``\s+(?!\S)``. A regex without
# lookaround runs on the regex crate's automata instead of fancy-regex's backtracking, two to
# three times faster. The two split a text differently only where that alternative applies:
# a run of two or more whitespace characters other than \r and \n that ends before a
# non-space (the lookahead version leaves the run's last character to the next piece). Where a
# text has no such pair of characters, both give the same pieces, hence the same tokens.
_PAT_STR_PLAIN = _PAT_STR.replace(r"\s+(?!\S)|", "")
assert _PAT_STR_PLAIN != _PAT_STR

# Two whitespace characters in a row, neither a line break: texts with this pair take the
# exact (lookahead) regex. Python's \s holds every Unicode White_Space character the Rust
# regex's \s does (and a few more, which only sends more texts down the exact path).
_SPACE_PAIR = re.compile(r"[^\S\r\n]{2}")

# A line that starts with spaces (or none) and then a non-space character.
_LINE_START = re.compile(r" *\S")

_NAMED_SPECIALS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|image|>",
)
_NUM_SPECIALS = 256
_NUM_BASE_TOKENS = 128000
SPECIAL_TOKENS: dict[str, int] = {
    name: _NUM_BASE_TOKENS + i
    for i, name in enumerate(
        [
            *_NAMED_SPECIALS,
            *(
                f"<|reserved_special_token_{2 + i}|>"
                for i in range(_NUM_SPECIALS - len(_NAMED_SPECIALS))
            ),
        ]
    )
}
"""Every Llama 3 special token's text and id (128000 to 128255)."""

BEGIN_OF_TEXT = SPECIAL_TOKENS["<|begin_of_text|>"]
END_OF_TEXT = SPECIAL_TOKENS["<|end_of_text|>"]
START_HEADER = SPECIAL_TOKENS["<|start_header_id|>"]
END_HEADER = SPECIAL_TOKENS["<|end_header_id|>"]
END_OF_MESSAGE = SPECIAL_TOKENS["<|eom_id|>"]
END_OF_TURN = SPECIAL_TOKENS["<|eot_id|>"]
PYTHON_TAG = SPECIAL_TOKENS["<|python_tag|>"]
IMAGE = SPECIAL_TOKENS["<|image|>"]

# tiktoken panics on very long runs of whitespace or non-whitespace and on very long
# strings, so Meta's tokenizer cuts text into slices first; the cuts change the tokens,
# so chatlane cuts at the same places to stay token-exact
# (llama_models/llama3/tokenizer.py: TIKTOKEN_MAX_ENCODE_CHARS, MAX_NO_WHITESPACES_CHARS).
_MAX_ENCODE_CHARS = 400_000
_MAX_RUN_CHARS = 25_000

# Indents (runs of spaces) up to this length have their tokens precomputed.
_INDENTS = 33


class TokenizerNotFound(ChatlaneError):
    """No Llama 3 tokenizer file was found (install ``llama-models`` or give a path)."""


class Llama3Tokenizer:
    """The Llama 3 tokenizer (128,000 BPE tokens plus 256 special tokens).

    Build one with `load_tokenizer`, which caches it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import tiktoken

        self.path = Path(path)
        ranks = _read_ranks(self.path)
        if len(ranks) != _NUM_BASE_TOKENS:
            raise TokenizerNotFound(
                f"{self.path} holds {len(ranks)} tokens, not the 128000 of the Llama 3 tokenizer"
            )
        self.special_tokens: dict[str, int] = dict(SPECIAL_TOKENS)
        self._encoding: tiktoken.Encoding = tiktoken.Encoding(
            name=f"chatlane-llama3-{self.path.name}",
            pat_str=_PAT_STR,
            mergeable_ranks=ranks,
            special_tokens=self.special_tokens,
        )
        self._encode_ordinary = self._encoding.encode_ordinary
        # The same ranks under the lookahead-free regex (see _PAT_STR_PLAIN): one more table
        # in memory and about a tenth of a second more to load, for texts tokenized two to
        # three times faster.
        self._encode_plain = tiktoken.Encoding(
            name=f"chatlane-llama3-plain-{self.path.name}",
            pat_str=_PAT_STR_PLAIN,
            mergeable_ranks=ranks,
            special_tokens={},
        ).encode_ordinary
        self.n_words = _NUM_BASE_TOKENS + _NUM_SPECIALS
        # The texts every prompt repeats (role names, the blank line after a header, the
        # fixed lines of tool definitions, runs of spaces that indent them), encoded once
        # when the tokenizer loads: a tiktoken call costs a fraction of a microsecond even
        # for one token, and a prompt has several per message. These depend on no input.
        self._fixed: dict[str, list[int]] = {
            text: self._encode_ordinary(text)
            for text in (
                "system",
                "user",
                "assistant",
                "ipython",
                "tool",
                "\n\n",
                "\n",
                *FIXED_TEXTS,
                *(" " * n for n in range(1, _INDENTS)),
            )
        }
        self._spaces: tuple[list[int], ...] = tuple(
            self._fixed[" " * n] if n else [] for n in range(_INDENTS)
        )

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``, never special tokens (their text is encoded as text)."""
        if not isinstance(text, str):
            raise InputError(f"the tokenizer encodes str, got {type(text).__name__}")
        fixed = self._fixed.get(text)
        if fixed is not None:
            return list(fixed)
        if len(text) <= _MAX_RUN_CHARS:
            # No run can be longer than the limit: one call, as Meta's slicing would give.
            if _SPACE_PAIR.search(text) is None:
                return self._encode_plain(text)
            return self._encode_ordinary(text)
        tokens: list[int] = []
        for start in range(0, len(text), _MAX_ENCODE_CHARS):
            for piece in _split_long_runs(text[start : start + _MAX_ENCODE_CHARS]):
                if _SPACE_PAIR.search(piece) is None:
                    tokens.extend(self._encode_plain(piece))
                else:
                    tokens.extend(self._encode_ordinary(piece))
        return tokens

    def encode_lines(self, chunks: Iterable[str]) -> list[int]:
        r"""The token ids of ``"".join(chunks)``, tokenizing chunk by chunk where that is exact.

        Llama 3's regex always ends a piece right after a ``"\n"`` that is followed by
        spaces (or none) and a non-space character: whatever comes before, the piece holding
        that line break ends with it (``\s*[\r\n]+`` and ``[\r\n]*`` stop there), and no
        piece looks behind. So a text cut there tokenizes as its two parts do. Each chunk that
        starts such a line after one ending in ``"\n"`` is tokenized on its own (fixed lines
        of a template from the precomputed table, an indented line as its indent and the
        rest); any other chunk is joined to the one before. Tool definitions are written
        line by line this way, so only their variable lines reach tiktoken.
        """
        if not isinstance(chunks, list | tuple):
            chunks = list(chunks)
        try:
            whole = "".join(chunks)
        except TypeError:
            wrong = next(c for c in chunks if not isinstance(c, str))
            raise InputError(f"the tokenizer encodes str, got {type(wrong).__name__}") from None
        if len(whole) > _MAX_RUN_CHARS:
            # Meta cuts long texts into slices first; take the whole-text path for those.
            return self.encode(whole)
        tokens: list[int] = []
        pending = ""
        for chunk in chunks:
            if pending[-1:] == "\n" and _LINE_START.match(chunk) is not None:
                tokens += self._encode_line(pending)
                pending = chunk
            else:
                pending += chunk
        if pending:
            tokens += self._encode_line(pending)
        return tokens

    def _encode_line(self, text: str) -> list[int]:
        # ``text`` starts at the start of a text or of a line (see encode_lines).
        fixed = self._fixed.get(text)
        if fixed is not None:
            return fixed
        if text[:2] == "  ":
            # An indent of n spaces before a non-space is a piece of n - 1 spaces (the regex's
            # \s+(?!\S)), and the line goes on from its last space.
            indent = len(text) - len(text.lstrip(" "))
            if indent < _INDENTS and indent < len(text) and not text[indent].isspace():
                return self._spaces[indent - 1] + self.encode(text[indent - 1 :])
        return self.encode(text)

    def special(self, name: str) -> int:
        """The id of a special token, such as ``special("<|eot_id|>")``."""
        try:
            return self.special_tokens[name]
        except KeyError:
            raise InputError(f"{name!r} is not a Llama 3 special token") from None

    def decode(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens`` (special tokens as their text); invalid UTF-8 is replaced."""
        for t in tokens:
            if not isinstance(t, int) or not 0 <= t < self.n_words:
                raise InputError(f"{t!r} is not a Llama 3 token id")
        return self._encoding.decode(list(tokens))

    def decode_bytes(self, tokens: Sequence[int]) -> bytes:
        """The exact bytes of ``tokens`` (a token may hold part of a UTF-8 character)."""
        return self._encoding.decode_bytes(list(tokens))

    def is_special(self, token: int) -> bool:
        """Whether ``token`` is one of the 256 special tokens."""
        return token >= _NUM_BASE_TOKENS

    def __repr__(self) -> str:
        return f"Llama3Tokenizer({str(self.path)!r})"


def _read_ranks(path: Path) -> dict[bytes, int]:
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise TokenizerNotFound(f"no Llama 3 tokenizer file at {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerNotFound(f"cannot read the Llama 3 tokenizer file {path}: {e}") from e
    ranks: dict[bytes, int] = {}
    try:
        for line in text.splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    except ValueError as e:
        raise TokenizerNotFound(f"{path} is not a tiktoken BPE file: {e}") from e
    return ranks


def _split_long_runs(text: str) -> Iterator[str]:
    # Cut ``text`` so that no piece holds more than _MAX_RUN_CHARS consecutive whitespace
    # or non-whitespace characters, exactly where Meta's tokenizer cuts.
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
            if run > _MAX_RUN_CHARS:
                yield text[start:i]
                start = i
                run = 1
    yield text[start:]


def default_tokenizer_path() -> Path:
    """Where the tokenizer file is: ``$CHATLANE_LLAMA3_TOKENIZER``, else the installed
    ``llama-models`` package's copy. Raises `TokenizerNotFound` when there is neither."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    import importlib.util

    try:
        spec = importlib.util.find_spec("llama_models")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "llama3" / "tokenizer.model"
            if candidate.is_file():
                return candidate
    raise TokenizerNotFound(
        "no Llama 3 tokenizer found: install it with `pip install llama-models` "
        f"(it ships llama_models/llama3/tokenizer.model), set {ENV_VAR} to the file, "
        "or pass tokenizer_path"
    )


_lock = threading.Lock()


@functools.cache
def _load(path: Path) -> Llama3Tokenizer:
    return Llama3Tokenizer(path)


def load_tokenizer(path: str | os.PathLike[str] | None = None) -> Llama3Tokenizer:
    """The Llama 3 tokenizer from ``path`` (or the default place), loaded once and cached."""
    resolved = Path(path) if path is not None else default_tokenizer_path()
    with contextlib.suppress(OSError):
        resolved = resolved.resolve()
    with _lock:
        return _load(resolved)
