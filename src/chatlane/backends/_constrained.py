"""Constrained decoding for the embedded engine, with llguidance.

The prompt format writes what the output must follow (`PromptFormat.grammar`: a forced tool
call in the format's own syntax, or a response format's JSON schema) as an llguidance Lark
grammar; at each step the grammar's token mask is applied to the logits, so the output always
parses and validates.

Why llguidance and not llama-cpp-python's own JSON-schema converter: that converter lets raw
control characters into strings (its outputs failed a strict ``json.loads`` 4 times in 10)
and ignores ``minimum``/``maximum`` (measured with llama-cpp-python 0.3.36, see ENGINE.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from chatlane.errors import SchemaError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["Constraint"]


class Constraint:
    """One request's grammar state: masks the logits, follows the sampled tokens.

    Args:
        tokenizer: llguidance's view of the model's vocabulary (built once per model).
        grammar: the Lark grammar (`chatlane.formats.base.Grammar.lark`).
        n_vocab: the model's vocabulary size (the logits' length).
        end_tokens: the tokens that may end the output once the grammar is complete.
        eog_tokens: every token that ends generation (only ``end_tokens`` of them are allowed).
        what: named in errors ("the response format", "the forced tool call").
        is_call: the grammar is a forced tool call (else a response format).
    """

    def __init__(
        self,
        tokenizer: Any,
        grammar: str,
        n_vocab: int,
        end_tokens: Sequence[int],
        eog_tokens: Sequence[int],
        what: str,
        *,
        is_call: bool = False,
    ) -> None:
        import llguidance
        import numpy

        self._numpy = numpy
        try:
            compiled = llguidance.LLMatcher.grammar_from_lark(grammar)
        except ValueError as e:
            raise SchemaError(f"{what} cannot be turned into a grammar: {e}") from e
        self.matcher = llguidance.LLMatcher(tokenizer, compiled, log_level=0)
        if self.matcher.is_error():
            raise SchemaError(f"{what} cannot be turned into a grammar: {self.matcher.get_error()}")
        self._n_vocab = n_vocab
        self._end_tokens = list(end_tokens)
        self._eog_tokens = list(eog_tokens)
        self._what = what
        self.is_call = is_call

    def __call__(
        self, input_ids: npt.NDArray[np.intc], logits: npt.NDArray[np.single]
    ) -> npt.NDArray[np.single]:
        """A llama-cpp-python logits processor: forbid every token the grammar forbids."""
        numpy = self._numpy
        mask = numpy.frombuffer(self.matcher.compute_bitmask(), dtype=numpy.uint8)
        allowed = numpy.unpackbits(mask, bitorder="little", count=self._n_vocab).astype(bool)
        if self.matcher.is_accepting():
            # The grammar allows its own end token(s); end only with the ones the format's
            # grammar names (an answer's end, so that it never reads as waiting for a tool
            # result).
            allowed[self._eog_tokens] = False
            allowed[self._end_tokens] = True
        out: npt.NDArray[np.single] = numpy.where(allowed, logits, -numpy.inf).astype(numpy.single)
        return out

    def consume(self, token: int) -> None:
        """Follow the sampled token (the mask makes any other impossible)."""
        if not self.matcher.consume_token(token):
            from chatlane.errors import EngineError

            raise EngineError(
                f"{self._what}: the grammar rejected a sampled token: {self.matcher.get_error()}"
            )

    @property
    def complete(self) -> bool:
        """The output is complete: the grammar accepts nothing but its end."""
        return self.matcher.is_stopped()
