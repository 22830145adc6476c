"""The Llama 3 tokenizer, on tiktoken.

The BPE ranks come from ``llama_models/llama3/tokenizer.model`` (Meta's ``llama-models``
package), from a path the caller gives, or from the file named by the environment variable
``CHATLANE_LLAMA3_TOKENIZER``. Each file is loaded once per process and cached.

Text is never encoded into special tokens: ``encode("<|eot_id|>")`` gives the ordinary
tokens of those characters. Special tokens (``<|begin_of_text|>``, headers, ``<|eot_id|>``,
...) enter a prompt only through `Llama3Tokenizer.special`, which the renderer calls.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from chatlane.errors import InputError, TokenizerNotFound
from chatlane.formats._tiktoken import (
    cached_loader,
    core_encode,
    llama_models_file,
    read_ranks,
    split_long_runs,
)
from chatlane.formats.llama3.prompts import FIXED_TEXTS

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


class Llama3Tokenizer:
    """The Llama 3 tokenizer (128,000 BPE tokens plus 256 special tokens).

    Build one with `load_tokenizer`, which caches it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import tiktoken

        self.path = Path(path)
        ranks = read_ranks(self.path, "Llama 3")
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
        # The core BPE's own methods, without tiktoken's Python wrapper: `_tiktoken` below
        # does what the wrapper adds (lone surrogates replaced). The wrapper's method where
        # a tiktoken release has no _core_bpe.
        self._encode_ordinary = core_encode(self._encoding)
        # The same ranks under the lookahead-free regex (see _PAT_STR_PLAIN): one more table
        # in memory and about a tenth of a second more to load, for texts tokenized two to
        # three times faster.
        self._encode_plain = core_encode(
            tiktoken.Encoding(
                name=f"chatlane-llama3-plain-{self.path.name}",
                pat_str=_PAT_STR_PLAIN,
                mergeable_ranks=ranks,
                special_tokens={},
            )
        )
        self.n_words = _NUM_BASE_TOKENS + _NUM_SPECIALS
        # The texts every prompt repeats (role names, the blank line after a header, the
        # fixed texts of tool definitions), encoded once when the tokenizer loads: a
        # tiktoken call costs a fraction of a microsecond even for one token, and a prompt
        # has several per message. These depend on no input.
        self._fixed: dict[str, list[int]] = {
            text: self._tiktoken(text)
            for text in (
                "system",
                "user",
                "assistant",
                "ipython",
                "tool",
                "\n\n",
                "\n",
                *FIXED_TEXTS,
            )
        }
        self.header_tokens: dict[str, tuple[int, ...]] = {
            role: (START_HEADER, *self._fixed[role], END_HEADER, *self._fixed["\n\n"])
            for role in ("system", "user", "assistant", "ipython", "tool")
        }
        """``<|start_header_id|>role<|end_header_id|>\n\n`` for each role, as ids."""

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``, never special tokens (their text is encoded as text)."""
        if not isinstance(text, str):
            raise InputError(f"the tokenizer encodes str, got {type(text).__name__}")
        fixed = self._fixed.get(text)
        if fixed is not None:
            return list(fixed)
        if len(text) <= _MAX_RUN_CHARS:
            # No run can be longer than the limit: one call, as Meta's slicing would give.
            if (
                text.isascii()
                and "  " not in text
                and "\t" not in text
                and "\x0b" not in text
                and "\x0c" not in text
            ):
                # _tiktoken's test for plain ASCII text, inlined (the common case).
                result: list[int] = self._encode_plain(text)
                return result
            return self._tiktoken(text)
        tokens: list[int] = []
        for start in range(0, len(text), _MAX_ENCODE_CHARS):
            for piece in split_long_runs(text[start : start + _MAX_ENCODE_CHARS], _MAX_RUN_CHARS):
                tokens.extend(self._tiktoken(piece))
        return tokens

    def _tiktoken(self, text: str) -> list[int]:
        # One tiktoken call, on the lookahead-free regex where that is exact.
        if text.isascii():
            # The quick test for ASCII text, whose White_Space characters are \t \n \v \f
            # \r and the space (a regex search costs a microsecond per hundred characters).
            if "\t" in text or "\x0b" in text or "\x0c" in text:
                plain = _SPACE_PAIR.search(text) is None
            else:
                plain = "  " not in text
        else:
            plain = _SPACE_PAIR.search(text) is None
        encode = self._encode_plain if plain else self._encode_ordinary
        try:
            result: list[int] = encode(text)
        except UnicodeEncodeError:
            # Lone surrogates cannot be UTF-8: replaced by U+FFFD, as tiktoken's
            # Encoding.encode_ordinary (and so Meta's tokenizer) does.
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            result = encode(text)
        return result

    def encode_segments(self, segments: Sequence[str]) -> list[int]:
        """The token ids of ``"".join(segments)``, each segment tokenized on its own.

        Exact only where every cut between two segments is a place at which Llama 3's regex
        ends a piece whatever the text around it; `meta_json_tools_segments` cuts tool
        definitions that way (fixed texts come from the precomputed table, so only the
        values reach tiktoken).
        """
        try:
            whole = "".join(segments)
        except TypeError:
            wrong = next(s for s in segments if not isinstance(s, str))
            raise InputError(f"the tokenizer encodes str, got {type(wrong).__name__}") from None
        return self._encode_segments(segments, whole)

    def _encode_segments(self, segments: Sequence[str], whole: str) -> list[int]:
        # encode_segments for segments known to be str, whose join is ``whole``.
        if len(whole) > _MAX_RUN_CHARS:
            # Meta cuts long texts into slices first; take the whole-text path for those.
            return self.encode(whole)
        plain = self._encode_plain
        # One look at the whole text instead of one per segment: where it is ASCII without
        # \t, \v and \f, so is every segment, and only a double space sends one to the
        # exact regex (the test _tiktoken makes).
        clean = (
            whole.isascii() and "\t" not in whole and "\x0b" not in whole and "\x0c" not in whole
        )
        # The fixed texts (those of `meta_json_tools_segments` are the table's own keys,
        # found by identity without hashing), and the values seen so far in this text: tools
        # often share parameter names and descriptions, and a repeated value is tokenized
        # once. (Nothing is kept once the call returns.)
        known = dict(self._fixed)
        get = known.get
        tokens: list[int] = []
        for segment in segments:
            ids = get(segment)
            if ids is None:
                clear = clean and "  " not in segment
                ids = plain(segment) if clear else self._tiktoken(segment)
                known[segment] = ids
            tokens += ids
        return tokens

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


def default_tokenizer_path() -> Path:
    """Where the tokenizer file is: ``${ENV_VAR}``, else the installed ``llama-models``
    package's copy. Raises `TokenizerNotFound` when there is neither."""
    return llama_models_file("llama3/tokenizer.model", ENV_VAR, "Llama 3")


_load = cached_loader(Llama3Tokenizer, lambda: default_tokenizer_path())


def load_tokenizer(path: str | os.PathLike[str] | None = None) -> Llama3Tokenizer:
    """The Llama 3 tokenizer from ``path`` (or the default place), loaded once and cached."""
    return _load(path)
