"""`LlamaCpp`: the embedded engine, llama.cpp in-process through llama-cpp-python.

chatlane renders the prompt itself (with the model's `PromptFormat`) and hands llama.cpp the
rendered *token ids*, never text to tokenize: user text cannot turn into control tokens and
the begin-of-text token is never doubled. Generated tokens are decoded one by one and fed to the
format's incremental parser, so text streams as it comes and tool calls are read in the
format's own syntax. ``response_format`` and forced tool calls are constrained with
llguidance (see `chatlane.backends._constrained`).

llama.cpp is not thread-safe: one `LlamaCpp` generates one response at a time (concurrent
requests wait their turn). The async methods run generation in a worker thread; closing or
cancelling a stream stops generation at the next token.

The KV cache keeps the previous prompt, so a conversation that grows by a turn evaluates only
the new tokens. A request with a ``seed`` evaluates its whole prompt afresh instead: the same
seed then gives the same answer every time, streamed or not.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatlane.backends.base import Backend, RequestLike
from chatlane.errors import EngineError, InputError
from chatlane.events import ChatEvent, Finished, ResponseStarted, TextDelta, UsageReported
from chatlane.formats.base import ModelInfo, Prompt, PromptFormat, StreamParser
from chatlane.request import ChatRequest
from chatlane.response import FinishReason, Usage

if TYPE_CHECKING:
    from llama_cpp import Llama

    from chatlane.backends._constrained import Constraint

__all__ = ["GGUFInfo", "LlamaCpp"]

# Sampling defaults when the request sets none: llama-cpp-python's own (create_completion).
_TEMPERATURE = 0.8
_TOP_P = 0.95
_TOP_K = 40
_MIN_P = 0.05

# Engine settings a request may pass through `extra`.
_EXTRA_KEYS = frozenset({"logit_bias", "min_p", "typical_p", "repeat_penalty"})

# llama.cpp's "pick a random seed" value (LLAMA_DEFAULT_SEED).
_RANDOM_SEED = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class GGUFInfo:
    """What a GGUF file says about its model (read when it is loaded)."""

    path: Path
    architecture: str | None
    """``general.architecture``, as the file names it."""
    name: str | None
    """``general.name``, when the file has one."""
    chat_template: str | None
    """The Jinja chat template the file carries (chatlane does not run it)."""
    bos_token_id: int | None
    eos_token_id: int | None
    context_length: int | None
    """The context the model was trained for (``<architecture>.context_length``)."""
    special_tokens: Mapping[str, int] = field(default_factory=dict)
    """The prompt format's control tokens that the model's vocabulary has, by text."""
    metadata: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Every metadata key, as llama.cpp reports it (values as text)."""


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as e:
        raise EngineError(
            "the embedded engine needs llama-cpp-python: pip install 'chatlane[local]'"
        ) from e
    return llama_cpp


def _check_gguf_file(path: Path) -> None:
    """Fail with a clear message before llama.cpp sees a file it cannot read."""
    if not path.exists():
        raise EngineError(f"no model file at {str(path)!r}")
    if not path.is_file():
        raise EngineError(f"{str(path)!r} is not a file (a GGUF model file is needed)")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise EngineError(
            f"{str(path)!r} is not a GGUF file: it starts with {magic!r}, not b'GGUF' "
            "(convert the model with llama.cpp's convert_hf_to_gguf.py)"
        )


class LlamaCpp(Backend):
    """Chat with a GGUF model in this process, through llama.cpp.

    Args:
        model_path: the ``.gguf`` file.
        n_ctx: the context size in tokens (prompt plus answer).
        n_threads: CPU threads for generation (default: llama.cpp's choice).
        format: the prompt format, or a registered format's name (`chatlane.formats.names`); by
            default `chatlane.formats.detect` picks it from the file's metadata and
            vocabulary. A model whose format chatlane does not know raises `EngineError`
            naming what the file says, unless a format is given.
        flexible_whitespace: let constrained JSON contain any whitespace between tokens
            (off by default: a weak model can otherwise emit whitespace forever).
        n_batch: prompt tokens evaluated per batch.
        verbose: let llama.cpp print its own logs.
        **llama_kwargs: passed to ``llama_cpp.Llama`` as they are (``n_gpu_layers``, ...).

    Raises:
        EngineError: the file is missing, not GGUF, corrupt, or of an unknown format, or
            llama-cpp-python is not installed.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        format: PromptFormat | str | None = None,
        flexible_whitespace: bool = False,
        n_batch: int = 512,
        verbose: bool = False,
        **llama_kwargs: Any,
    ) -> None:
        path = Path(model_path).expanduser()
        _check_gguf_file(path)
        llama_cpp = _import_llama_cpp()
        try:
            llama: Llama = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_batch=n_batch,
                verbose=verbose,
                **llama_kwargs,
            )
        except (ValueError, RuntimeError, OSError) as e:
            raise EngineError(
                f"llama.cpp could not load {str(path)!r} (corrupt, truncated, or a model "
                f"this llama.cpp does not support): {e}"
            ) from e
        self.llama: Llama = llama
        """The underlying ``llama_cpp.Llama`` (for what chatlane does not cover)."""
        self._llama_cpp = llama_cpp
        try:
            model_info = self._model_info()
            self.format: PromptFormat = self._pick_format(model_info, path, format)
            self.info = self._read_info(path, model_info)
        except BaseException:
            llama.close()
            raise
        self.model = self.info.name or path.stem
        self.flexible_whitespace = flexible_whitespace
        self._n_vocab = int(llama.n_vocab())
        self._pieces: dict[int, bytes] = {}
        self._stop_tokens = self._find_stop_tokens()
        self._eog_tokens = sorted(
            {
                *self._stop_tokens,
                *(
                    t
                    for t in self.info.special_tokens.values()
                    if llama_cpp.llama_vocab_is_eog(self._vocab, t)
                ),
            }
        )
        self._guidance_tokenizer: Any = None
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._closed = False

    # Loading.

    @property
    def _vocab(self) -> Any:
        return self._llama_cpp.llama_model_get_vocab(self.llama.model)

    def _special_token(self, text: str) -> int | None:
        """The id of a control token spelled ``text``, or None if the vocabulary lacks it."""
        ids = self.llama.tokenize(text.encode(), add_bos=False, special=True)
        if len(ids) != 1:
            return None
        attr = self._llama_cpp.llama_vocab_get_attr(self._vocab, ids[0])
        return ids[0] if attr & self._llama_cpp.LLAMA_TOKEN_ATTR_CONTROL else None

    def _model_info(self) -> ModelInfo:
        meta = dict(self.llama.metadata)
        return ModelInfo(
            architecture=meta.get("general.architecture"),
            name=meta.get("general.name"),
            chat_template=meta.get("tokenizer.chat_template"),
            control_token=self._special_token,
            metadata=meta,
        )

    def _read_info(self, path: Path, model: ModelInfo) -> GGUFInfo:
        meta = dict(model.metadata)
        arch = model.architecture
        tokenizer = self.format.tokenizer
        texts = (
            list(tokenizer.special_tokens)
            if tokenizer is not None
            else [t for t in (self.format.begin_text, *self.format.stop_sequences) if t]
        )
        specials: dict[str, int] = {}
        for text in texts:
            token = self._special_token(text)
            if token is not None:
                specials[text] = token
        return GGUFInfo(
            path=path,
            architecture=arch,
            name=model.name,
            chat_template=model.chat_template,
            bos_token_id=_int(meta.get("tokenizer.ggml.bos_token_id")),
            eos_token_id=_int(meta.get("tokenizer.ggml.eos_token_id")),
            context_length=_int(meta.get(f"{arch}.context_length")) if arch else None,
            special_tokens=specials,
            metadata=meta,
        )

    @staticmethod
    def _pick_format(
        info: ModelInfo, path: Path, format: PromptFormat | str | None
    ) -> PromptFormat:
        from chatlane import formats

        if isinstance(format, str):
            return formats.get(format)
        if format is not None:
            return format
        found = formats.detect(info)
        if found is not None:
            return found
        template = (info.chat_template or "").strip()
        seen = [
            f"architecture {info.architecture!r}",
            f"name {info.name!r}",
            f"chat template starting {template[:80]!r}" if template else "no chat template",
        ]
        raise EngineError(
            f"chatlane has no prompt format for {str(path)!r} yet ({', '.join(seen)}); "
            f"it knows {', '.join(formats.names())}. Pass format= to LlamaCpp to use one "
            "of your own."
        )

    def _find_stop_tokens(self) -> dict[int, str]:
        """The tokens that end generation, with the stop text the parser is told.

        A stop sequence the vocabulary lacks is skipped (an older model of a family may lack
        a stop token a later one added); a format none of whose stop sequences is a control token of the
        model does not fit it.
        """
        stops: dict[int, str] = {}
        for text in self.format.stop_sequences:
            token = self._special_token(text)
            if token is not None:
                stops[token] = text
        if not stops:
            raise EngineError(
                f"the prompt format {self.format.name!r} ends turns with "
                f"{' or '.join(map(repr, self.format.stop_sequences))}, but none is a control "
                f"token of {str(self.info.path)!r}: the format does not fit the model"
            )
        eos = self.info.eos_token_id
        if eos is not None and eos not in stops:
            stops[eos] = self._piece(eos).decode("utf-8", "replace")
        return stops

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self.llama.detokenize([token], special=True)
        return piece

    def _tokenizer(self) -> Any:
        """llguidance's view of the vocabulary, built on first use (about a second)."""
        if self._guidance_tokenizer is None:
            import warnings

            from llguidance.llamacpp import lltokenizer_from_vocab

            # llguidance 1.9.1 calls llama_token_get_attr, which llama-cpp-python 0.3.36
            # deprecates (in favour of llama_vocab_get_attr) with a warning per token.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self._guidance_tokenizer = lltokenizer_from_vocab(
                    self._vocab, eos_token=self.info.eos_token_id
                )
        return self._guidance_tokenizer

    # Requests.

    def render(self, request: RequestLike, /, **params: Any) -> Prompt:
        """The exact prompt (text and token ids) the engine would receive for this request."""
        req = self.request(request, **params)
        prompt = self.format.render(req)
        self._check_prompt(prompt)
        return prompt

    def _check_prompt(self, prompt: Prompt) -> None:
        if self._closed:
            raise EngineError("this LlamaCpp is closed")
        if not prompt.tokens:
            raise EngineError(
                f"the prompt format {self.format.name!r} gave no token ids; "
                "the embedded engine takes token ids, never text"
            )
        bad = [t for t in prompt.tokens if not 0 <= t < self._n_vocab]
        if bad:
            raise EngineError(
                f"the prompt format {self.format.name!r} produced token id {bad[0]}, outside "
                f"the model's vocabulary of {self._n_vocab}: the format does not fit the model"
            )
        n_ctx = self.llama.n_ctx()
        if len(prompt.tokens) >= n_ctx:
            raise InputError(
                f"the prompt has {len(prompt.tokens)} tokens, and the context holds {n_ctx} "
                "(prompt and answer); shorten the conversation or load the model with a larger n_ctx"
            )

    def _sampling(self, request: ChatRequest) -> dict[str, Any]:
        if request.n not in (None, 1):
            raise InputError(
                f"the embedded engine generates one choice; n={request.n} asked for more"
            )
        if request.logprobs:
            raise InputError("the embedded engine does not report logprobs yet")
        unknown = sorted(set(request.extra) - _EXTRA_KEYS)
        if unknown:
            raise InputError(
                f"the embedded engine does not know the extra setting {unknown[0]!r} "
                f"(it takes: {', '.join(sorted(_EXTRA_KEYS))})"
            )
        extra = request.extra
        return {
            "temp": _TEMPERATURE if request.temperature is None else request.temperature,
            "top_p": _TOP_P if request.top_p is None else request.top_p,
            "top_k": _TOP_K if request.top_k is None else request.top_k,
            "min_p": float(extra.get("min_p", _MIN_P)),
            "typical_p": float(extra.get("typical_p", 1.0)),
            "repeat_penalty": float(extra.get("repeat_penalty", 1.0)),
            "frequency_penalty": request.frequency_penalty or 0.0,
            "presence_penalty": request.presence_penalty or 0.0,
        }

    def _logit_bias(self, request: ChatRequest) -> dict[int, float]:
        raw = request.extra.get("logit_bias") or {}
        if not isinstance(raw, Mapping):
            raise InputError(f"logit_bias must map token ids to numbers, got {type(raw).__name__}")
        bias: dict[int, float] = {}
        for key, value in raw.items():
            try:
                token, amount = int(key), float(value)
            except (TypeError, ValueError):
                raise InputError(
                    f"logit_bias must map token ids to numbers, got {key!r}: {value!r}"
                ) from None
            if not 0 <= token < self._n_vocab:
                raise InputError(
                    f"logit_bias names token {token}, outside the vocabulary of {self._n_vocab}"
                )
            bias[token] = amount
        return bias

    def _constraint(self, request: ChatRequest) -> Constraint | None:
        from chatlane.backends._constrained import Constraint

        grammar = self.format.grammar(request, flexible_whitespace=self.flexible_whitespace)
        if grammar is None:
            return None
        ends = [t for t, text in self._stop_tokens.items() if text in grammar.end_sequences]
        what = "the forced tool call" if grammar.is_call else "the response format"
        return Constraint(
            self._tokenizer(),
            grammar.lark,
            self._n_vocab,
            ends,
            self._eog_tokens,
            what,
            is_call=grammar.is_call,
        )

    def _acquire(self) -> None:
        if self._closed:
            raise EngineError("this LlamaCpp is closed")
        if self._owner == threading.get_ident():
            raise EngineError(
                "this LlamaCpp is still streaming a response in this thread; read it to the "
                "end or close it before starting another"
            )
        self._lock.acquire()
        self._owner = threading.get_ident()

    def _release(self) -> None:
        self._owner = None
        self._lock.release()

    def _generate(
        self, request: ChatRequest, cancel: threading.Event | None = None
    ) -> Generator[ChatEvent, None, None]:
        """The events of one response; stops early when ``cancel`` is set or it is closed."""
        prompt = self.format.render(request)
        self._check_prompt(prompt)
        sampling = self._sampling(request)
        bias = self._logit_bias(request)
        constraint = self._constraint(request)
        parser: StreamParser
        if constraint is not None and not constraint.is_call:
            # The output is the JSON the response format asked for: text, never a tool call,
            # even when it looks like one ({"name": ..., "parameters": ...}).
            parser = _TextParser()
        else:
            parser = self.format.stream_parser(request)
        stops = _StopStrings(request.stop)
        n_prompt = len(prompt.tokens)
        room = self.llama.n_ctx() - n_prompt
        max_tokens = min(request.max_tokens or room, room)

        processors: list[Any] = []
        if bias:
            processors.append(_bias_processor(bias))
        if constraint is not None:
            processors.append(constraint)

        self._acquire()
        try:
            yield ResponseStarted(
                id=f"llamacpp-{uuid.uuid4().hex[:24]}", model=self.model, created=int(time.time())
            )
            if request.seed is None:
                self.llama.set_seed(_RANDOM_SEED)
            else:
                # A fixed seed promises the same answer every time. Reusing the cached prefix
                # of the previous prompt evaluates the last prompt token on its own, whose
                # logits differ in the last bits from a whole-prompt batch (measured with
                # llama.cpp in llama-cpp-python 0.3.36), so evaluate the prompt afresh.
                self.llama.set_seed(request.seed)
                self.llama.reset()  # type: ignore[no-untyped-call]
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            tokens = self.llama.generate(
                list(prompt.tokens),
                **sampling,
                logits_processor=self._llama_cpp.LogitsProcessorList(processors)
                if processors
                else None,
            )
            stop_sequence: str | None = None
            truncated = False
            generated = 0
            try:
                for token in tokens:
                    if cancel is not None and cancel.is_set():
                        return
                    end = self._stop_tokens.get(token)
                    if end is not None:
                        stop_sequence = end
                        break
                    if constraint is not None:
                        constraint.consume(token)
                    generated += 1
                    text = decoder.decode(self._piece(token))
                    if text:
                        text, stop_sequence = stops.feed(text)
                        if text:
                            yield from parser.feed(text)
                        if stop_sequence is not None:
                            break
                    if generated >= max_tokens:
                        truncated = True
                        break
            finally:
                tokens.close()
            if stop_sequence is None:
                rest = stops.flush(decoder.decode(b"", final=True))
                if rest:
                    yield from parser.feed(rest)
            yield from parser.finish(stop_sequence, truncated=truncated)
            yield UsageReported(Usage(n_prompt, generated, n_prompt + generated))
        finally:
            self._release()

    def _events(self, request: ChatRequest) -> Iterator[ChatEvent]:
        return self._generate(request)

    async def _aevents(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[ChatEvent | BaseException | None] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: ChatEvent | BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop has closed: nobody is listening any more
                cancel.set()

        def work() -> None:
            events = self._generate(request, cancel)
            try:
                for event in events:
                    if cancel.is_set():
                        break
                    put(event)
                put(None)
            except BaseException as e:
                put(e)
            finally:
                events.close()

        worker = loop.run_in_executor(None, work)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()
            # Wait for the worker to leave llama.cpp, so the model is free when we return.
            await asyncio.shield(worker)

    def close(self) -> None:
        """Free the model (it cannot be used afterwards)."""
        if not self._closed:
            with self._lock:
                self._closed = True
                self.llama.close()

    def __repr__(self) -> str:
        return f"LlamaCpp({str(self.info.path)!r}, format={self.format.name!r})"


def _bias_processor(bias: Mapping[int, float]) -> Any:
    """A logits processor adding ``bias`` (``-inf`` bans a token)."""
    import numpy as np

    ids = np.fromiter(bias.keys(), dtype=np.intp)
    amounts = np.fromiter(bias.values(), dtype=np.single)

    def process(input_ids: Any, logits: Any) -> Any:
        logits[ids] += amounts
        return logits

    return process


class _TextParser:
    """A `StreamParser` for output that is text whatever it looks like (a response format's)."""

    def feed(self, text: str) -> list[ChatEvent]:
        return [TextDelta(text)]

    def finish(
        self, stop_sequence: str | None = None, *, truncated: bool = False
    ) -> list[ChatEvent]:
        reason = FinishReason.LENGTH if truncated else FinishReason.STOP
        return [Finished(reason, stop_sequence=stop_sequence)]


class _StopStrings:
    """Cuts the output at the first of the request's stop strings, holding back text that may
    be the start of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""

    def feed(self, text: str) -> tuple[str, str | None]:
        """The text that is safe to release, and the stop string found (if any)."""
        if not self._stops:
            return text, None
        text = self._held + text
        found = [(text.find(s), s) for s in self._stops if s in text]
        if found:
            index, stop = min(found)
            self._held = ""
            return text[:index], stop
        keep = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(text)), keep, -1):
                if text.endswith(stop[:n]):
                    keep = n
                    break
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep], None

    def flush(self, text: str) -> str:
        """Whatever is held back, once the output has ended."""
        out, self._held = self._held + text, ""
        return out
