"""Mistral's two tokenizers: tekken (a tiktoken vocabulary in JSON) and SentencePiece.

A user points chatlane at their model's tokenizer file: the ``tokenizer_path`` setting or
the ``CHATLANE_MISTRAL_TOKENIZER`` environment variable (``tekken.json`` or
``tokenizer.model.v3``/``.v7``). Without either, chatlane uses the files that
``mistral-common`` ships in its wheel, when it is installed (the tests do so).

Tekken needs only tiktoken. SentencePiece needs the ``sentencepiece`` package, imported
only when a SentencePiece file is actually used (pip install sentencepiece).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from chatlane.errors import TokenizerNotFound

__all__ = [
    "ENV_VAR",
    "LEGACY_SPECIAL_TOKENS",
    "SentencePieceTokenizer",
    "TekkenTokenizer",
    "TokenizerNotFound",
    "load_tokenizer",
    "shipped_file",
]

ENV_VAR = "CHATLANE_MISTRAL_TOKENIZER"

# The control tokens of tekken files that list none (mistral-common's
# Tekkenizer.DEPRECATED_SPECIAL_TOKENS): ids 0-19, the rest up to
# default_num_special_tokens are fillers spelled <SPECIAL_n>.
LEGACY_SPECIAL_TOKENS = (
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
    "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
)  # fmt: skip

# v11 and v13 need [ARGS] and [CALL_ID] (and v13 [THINK], [/THINK]); a tekken file without a
# special-token list gets them at these ids, where Mistral's own v11+ files keep them. The
# ids are chatlane's assumption for such a file (the token ids of v11/v13 are unverified).
MODERN_SPECIAL_TOKENS = {"[ARGS]": 32, "[CALL_ID]": 33, "[THINK]": 34, "[/THINK]": 35}


def shipped_file(name: str) -> Path | None:
    """The file ``name`` from mistral-common's wheel, if mistral-common is installed
    (found without importing it)."""
    spec = importlib.util.find_spec("mistral_common")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / name
        if path.is_file():
            return path
    return None


class TekkenTokenizer:
    """A tekken tokenizer file: control tokens first, then the tiktoken ranks shifted by
    the number of special tokens (mistral-common's ``Tekkenizer``)."""

    def __init__(self, path: str | os.PathLike[str], *, modern: bool = False) -> None:
        import tiktoken

        self.path = Path(path)
        try:
            data: dict[str, Any] = json.loads(self.path.read_text("utf-8"))
            config = data["config"]
            n_special = int(config["default_num_special_tokens"])
            inner = int(config["default_vocab_size"]) - n_special
            vocab = data["vocab"][:inner]
            ranks = {base64.b64decode(v["token_bytes"]): int(v["rank"]) for v in vocab}
            pattern = str(config["pattern"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TokenizerNotFound(f"{self.path} is not a readable tekken file: {e}") from e
        listed = data.get("special_tokens")
        specials: dict[str, int]
        if listed:
            specials = {str(t["token_str"]): int(t["rank"]) for t in listed}
        else:
            specials = {text: i for i, text in enumerate(LEGACY_SPECIAL_TOKENS)}
            if modern:
                specials.update(MODERN_SPECIAL_TOKENS)
        self.num_special = n_special
        self.version = str(config.get("version", ""))
        self._special = specials
        self._by_id = {i: t for t, i in specials.items()}
        self._encoding = tiktoken.Encoding(
            name=f"chatlane-tekken-{self.path.name}",
            pat_str=pattern,
            mergeable_ranks=ranks,
            special_tokens={},
        )
        self.vocab_size = n_special + inner

    @property
    def special_tokens(self) -> Mapping[str, int]:
        return self._special

    def encode(self, text: str) -> list[int]:
        shift = self.num_special
        return [t + shift for t in self._encoding.encode_ordinary(text)]

    def decode(self, tokens: Sequence[int]) -> str:
        out: list[str] = []
        plain: list[int] = []
        shift = self.num_special
        for t in tokens:
            if t < shift:
                if plain:
                    out.append(self._encoding.decode(plain))
                    plain = []
                out.append(self._by_id.get(t, f"<SPECIAL_{t}>"))
            else:
                plain.append(t - shift)
        if plain:
            out.append(self._encoding.decode(plain))
        return "".join(out)

    def is_special(self, token: int) -> bool:
        return 0 <= token < self.num_special

    def token_bytes(self, token: int) -> bytes:
        """The bytes of one ordinary token (for building a GGUF vocabulary)."""
        return self._encoding.decode_single_token_bytes(token - self.num_special)

    def ranks(self) -> dict[bytes, int]:
        """The ordinary tokens' tiktoken ranks (unshifted)."""
        return dict(self._encoding._mergeable_ranks)


class SentencePieceTokenizer:
    """A SentencePiece ``tokenizer.model.v3``/``.v7`` file, read with the sentencepiece
    package (mistral-common's ``SentencePieceTokenizer``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            # Its SWIG bindings warn (DeprecationWarning) while loading; with warnings turned
            # into errors that exception escapes inside C code and the process crashes.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                import sentencepiece  # type: ignore[import-untyped]
        except ImportError as e:
            raise TokenizerNotFound(
                "Mistral's SentencePiece tokenizer (v3, v7) needs the 'sentencepiece' package: "
                "pip install sentencepiece (tekken files need nothing extra)"
            ) from e
        self.path = Path(path)
        if not self.path.is_file():
            raise TokenizerNotFound(f"no Mistral tokenizer file at {self.path}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self._model = sentencepiece.SentencePieceProcessor(model_file=str(self.path))
        except (OSError, RuntimeError) as e:
            raise TokenizerNotFound(f"{self.path} is not a SentencePiece model: {e}") from e
        model = self._model
        self.vocab_size = int(model.get_piece_size())
        self._special = {
            model.id_to_piece(i): i for i in range(self.vocab_size) if model.is_control(i)
        }
        self.version = ""

    @property
    def special_tokens(self) -> Mapping[str, int]:
        return self._special

    def encode(self, text: str) -> list[int]:
        result: list[int] = self._model.encode(text)
        return result

    def piece(self, token: int) -> str:
        """The token's piece as SentencePiece spells it (``▁Hello``, ``<0x0A>``)."""
        result: str = self._model.id_to_piece(token)
        return result

    def decode(self, tokens: Sequence[int]) -> str:
        out: list[str] = []
        plain: list[int] = []
        for t in tokens:
            if self._model.is_control(t):
                if plain:
                    out.append(self._model.decode(plain))
                    plain = []
                out.append(self._model.id_to_piece(t))
            else:
                plain.append(t)
        if plain:
            out.append(self._model.decode(plain))
        return "".join(out)

    def is_special(self, token: int) -> bool:
        return bool(self._model.is_control(token))


Tokenizer = TekkenTokenizer | SentencePieceTokenizer


def is_tekken_file(path: Path) -> bool:
    return path.suffix == ".json"


@lru_cache(maxsize=8)
def _load(path: str, modern: bool) -> Tokenizer:
    p = Path(path)
    if not p.is_file():
        raise TokenizerNotFound(f"no Mistral tokenizer file at {p}")
    if is_tekken_file(p):
        return TekkenTokenizer(p, modern=modern)
    return SentencePieceTokenizer(p)


def load_tokenizer(path: str | os.PathLike[str] | None, *, default: str, modern: bool) -> Tokenizer:
    """The tokenizer from ``path``, else ``$CHATLANE_MISTRAL_TOKENIZER``, else mistral-common's
    shipped file ``default``.

    Raises:
        TokenizerNotFound: none of them is there (the message says where to point chatlane).
    """
    chosen = path if path is not None else os.environ.get(ENV_VAR) or None
    if chosen is None:
        shipped = shipped_file(default)
        if shipped is None:
            raise TokenizerNotFound(
                "no Mistral tokenizer file: pass tokenizer_path= (your model's tekken.json or "
                f"tokenizer.model.v3) or set {ENV_VAR}; or pip install mistral-common, "
                f"which ships {default}"
            )
        chosen = shipped
    return _load(os.fspath(chosen), modern)
