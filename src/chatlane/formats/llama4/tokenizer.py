"""The Llama 4 tokenizer, on tiktoken.

The BPE ranks come from ``llama_models/llama4/tokenizer.model`` (Meta's ``llama-models``
package: an o200k-style vocabulary of 200,000 tokens), from a path the caller gives, or from
the file named by ``$CHATLANE_LLAMA4_TOKENIZER``. The 2,048 special tokens above the
ordinary ids are numbered exactly as ``llama_models.llama4.tokenizer.Tokenizer`` numbers them.

Text is never encoded into special tokens: ``encode("<|eot|>")`` gives the ordinary tokens of
those characters. Special tokens enter a prompt only through the renderer.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from chatlane.errors import InputError, TokenizerNotFound
from chatlane.formats._tiktoken import (
    cached_loader,
    llama_models_file,
    read_ranks,
    split_long_runs,
)
from chatlane.formats.llama4.prompts import FIXED_TEXTS

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "BEGIN_OF_TEXT",
    "END_HEADER",
    "END_OF_MESSAGE",
    "END_OF_TEXT",
    "END_OF_TURN",
    "ENV_VAR",
    "PYTHON_END",
    "PYTHON_START",
    "SPECIAL_TOKENS",
    "START_HEADER",
    "Llama4Tokenizer",
    "TokenizerNotFound",
    "default_tokenizer_path",
    "load_tokenizer",
]

ENV_VAR = "CHATLANE_LLAMA4_TOKENIZER"
"""The environment variable that may name the tokenizer file."""

# The regex Llama 4 pre-tokenizes with (llama_models/llama4/tokenizer.py: O200K_PATTERN).
_PAT_STR = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The same regex without its one lookahead alternative, ``\s+(?!\S)``: without lookaround
# tiktoken runs it on the regex crate's automata instead of fancy-regex's backtracking, about
# twice as fast. The two split a text differently only where that alternative applies: a run
# of two or more whitespace characters other than \r and \n before a non-space (the exact
# regex leaves the run's last character to the next piece). A text without two such
# characters in a row gets the same pieces, hence the same tokens, from both (the property
# test against Meta's tokenizer checks it).
_PAT_STR_PLAIN = _PAT_STR.replace(r"\s+(?!\S)|", "")
assert _PAT_STR_PLAIN != _PAT_STR
_SPACE_PAIR = re.compile(r"[^\S\r\n]{2}")

_NUM_BASE_TOKENS = 200_000
_NUM_SPECIALS = 2048


def _reserved(name: str, count: int, start: int = 0) -> list[str]:
    return [f"<|{name}_reserved_special_token_{i}|>" for i in range(start, start + count)]


# The order of llama_models.llama4.tokenizer: BASIC_SPECIAL_TOKENS, then the text
# post-training, vision and reasoning tokens, then plain reserved tokens up to 2048.
_NAMED_SPECIALS: list[str] = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|header_start|>",
    "<|header_end|>",
    "<|eom|>",
    "<|eot|>",
    "<|step|>",
    *_reserved("text_post_train", 6),
    "<|python_start|>",
    "<|python_end|>",
    "<|finetune_right_pad|>",
    *_reserved("text_post_train", 61, 8),
    "<|image_start|>",
    "<|image_end|>",
    "<|vision_reserved_special_token_0|>",
    "<|vision_reserved_special_token_1|>",
    "<|tile_x_separator|>",
    "<|tile_y_separator|>",
    *_reserved("vision", 4, 2),
    "<|image|>",
    "<|vision_reserved_special_token_6|>",
    "<|patch|>",
    *_reserved("vision", 1041, 7),
    *_reserved("reasoning", 8),
    "<|reasoning_thinking_start|>",
    "<|reasoning_thinking_end|>",
]
SPECIAL_TOKENS: dict[str, int] = {
    name: _NUM_BASE_TOKENS + i
    for i, name in enumerate(
        [
            *_NAMED_SPECIALS,
            *(
                f"<|reserved_special_token_{i}|>"
                for i in range(_NUM_SPECIALS - len(_NAMED_SPECIALS))
            ),
        ]
    )
}
"""Every Llama 4 special token's text and id (200000 to 202047)."""

BEGIN_OF_TEXT = SPECIAL_TOKENS["<|begin_of_text|>"]
END_OF_TEXT = SPECIAL_TOKENS["<|end_of_text|>"]
START_HEADER = SPECIAL_TOKENS["<|header_start|>"]
END_HEADER = SPECIAL_TOKENS["<|header_end|>"]
END_OF_MESSAGE = SPECIAL_TOKENS["<|eom|>"]
END_OF_TURN = SPECIAL_TOKENS["<|eot|>"]
PYTHON_START = SPECIAL_TOKENS["<|python_start|>"]
PYTHON_END = SPECIAL_TOKENS["<|python_end|>"]

# Meta's tokenizer cuts text into slices before tiktoken (which panics on very long runs);
# the cuts change the tokens, so chatlane cuts at the same places
# (llama_models/llama4/tokenizer.py: TIKTOKEN_MAX_ENCODE_CHARS, MAX_NO_WHITESPACES_CHARS).
_MAX_ENCODE_CHARS = 400_000
_MAX_RUN_CHARS = 25_000

_ROLES = ("system", "user", "assistant", "ipython")


class Llama4Tokenizer:
    """The Llama 4 tokenizer (200,000 BPE tokens plus 2,048 special tokens).

    Build one with `load_tokenizer`, which caches it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import tiktoken

        self.path = Path(path)
        ranks = read_ranks(self.path, "Llama 4")
        if len(ranks) != _NUM_BASE_TOKENS:
            raise TokenizerNotFound(
                f"{self.path} holds {len(ranks)} tokens, not the 200000 of the Llama 4 tokenizer"
            )
        self.special_tokens: dict[str, int] = dict(SPECIAL_TOKENS)
        self._encoding: tiktoken.Encoding = tiktoken.Encoding(
            name=f"chatlane-llama4-{self.path.name}",
            pat_str=_PAT_STR,
            mergeable_ranks=ranks,
            special_tokens=self.special_tokens,
        )
        core = getattr(self._encoding, "_core_bpe", None)
        method = getattr(core, "encode_ordinary", None)
        self._encode_ordinary: Callable[[str], list[int]] = (
            method if callable(method) else self._encoding.encode_ordinary
        )
        plain = tiktoken.Encoding(
            name=f"chatlane-llama4-plain-{self.path.name}",
            pat_str=_PAT_STR_PLAIN,
            mergeable_ranks=ranks,
            special_tokens={},
        )
        plain_core = getattr(plain, "_core_bpe", None)
        plain_method = getattr(plain_core, "encode_ordinary", None)
        self._encode_plain: Callable[[str], list[int]] = (
            plain_method if callable(plain_method) else plain.encode_ordinary
        )
        self.n_words = _NUM_BASE_TOKENS + _NUM_SPECIALS
        # The texts every prompt repeats (role names, the blank line after a header, the
        # fixed parts of the tool prompt), tokenized once when the tokenizer loads; they
        # depend on no input.
        self._fixed: dict[str, list[int]] = {
            text: self._tiktoken(text) for text in (*_ROLES, "\n\n", "\n", *FIXED_TEXTS)
        }
        self.header_tokens: dict[str, tuple[int, ...]] = {
            role: (START_HEADER, *self._fixed[role], END_HEADER, *self._fixed["\n\n"])
            for role in _ROLES
        }
        """``<|header_start|>role<|header_end|>\\n\\n`` for each role, as ids."""

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``, never special tokens (their text is encoded as text)."""
        if not isinstance(text, str):
            raise InputError(f"the tokenizer encodes str, got {type(text).__name__}")
        fixed = self._fixed.get(text)
        if fixed is not None:
            return list(fixed)
        if len(text) <= _MAX_RUN_CHARS:
            return self._tiktoken(text)
        tokens: list[int] = []
        for start in range(0, len(text), _MAX_ENCODE_CHARS):
            for piece in split_long_runs(text[start : start + _MAX_ENCODE_CHARS], _MAX_RUN_CHARS):
                tokens.extend(self._tiktoken(piece))
        return tokens

    def _tiktoken(self, text: str) -> list[int]:
        # One tiktoken call, on the lookahead-free regex where that is exact.
        if text.isascii():
            # (ASCII whitespace is \t \n \v \f \r and the space: a quicker test)
            if "\t" in text or "\x0b" in text or "\x0c" in text:
                plain = _SPACE_PAIR.search(text) is None
            else:
                plain = "  " not in text
        else:
            plain = _SPACE_PAIR.search(text) is None
        encode = self._encode_plain if plain else self._encode_ordinary
        try:
            return encode(text)
        except UnicodeEncodeError:
            # Lone surrogates cannot be UTF-8: replaced by U+FFFD, as tiktoken's
            # Encoding.encode (and so Meta's tokenizer) does.
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return encode(text)

    def special(self, name: str) -> int:
        """The id of a special token, such as ``special("<|eot|>")``."""
        try:
            return self.special_tokens[name]
        except KeyError:
            raise InputError(f"{name!r} is not a Llama 4 special token") from None

    def decode(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens`` (special tokens as their text); invalid UTF-8 is replaced."""
        for t in tokens:
            if not isinstance(t, int) or not 0 <= t < self.n_words:
                raise InputError(f"{t!r} is not a Llama 4 token id")
        return self._encoding.decode(list(tokens))

    def is_special(self, token: int) -> bool:
        """Whether ``token`` is one of the 2,048 special tokens."""
        return token >= _NUM_BASE_TOKENS

    def __repr__(self) -> str:
        return f"Llama4Tokenizer({str(self.path)!r})"


def default_tokenizer_path() -> Path:
    """Where the tokenizer file is: ``${ENV_VAR}``, else the installed ``llama-models``
    package's copy. Raises `TokenizerNotFound` when there is neither."""
    return llama_models_file("llama4/tokenizer.model", ENV_VAR, "Llama 4")


_load = cached_loader(Llama4Tokenizer, lambda: default_tokenizer_path())


def load_tokenizer(path: str | os.PathLike[str] | None = None) -> Llama4Tokenizer:
    """The Llama 4 tokenizer from ``path`` (or the default place), loaded once and cached."""
    return _load(path)
