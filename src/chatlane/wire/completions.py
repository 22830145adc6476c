"""The codec for raw completion endpoints: a rendered prompt in, pieces of raw text out.

Three dialects speak "text in, text out":

- ``openai``: ``POST {base_url}/completions`` as vLLM and llama-cpp-python's server serve it
  (``base_url`` ends in ``/v1``, as for OpenAI's clients);
- ``llama.cpp``: llama.cpp's own ``POST {base_url}/completion`` (``n_predict``, ``content``,
  ``stop_type``);
- ``aleph-alpha``: ``POST {base_url}/complete`` of the Aleph Alpha API (the prompt as a list of
  text items, ``maximum_tokens``, ``stop_sequences``, ``raw_completion`` so that special tokens
  come back, and a stream of ``stream_chunk`` / ``stream_summary`` / ``completion_summary``).

`encode_request` builds the body from the prompt text (the format already rendered it) and a
`ChatRequest`'s sampling settings; `decode_response` and `decode_chunk` turn a whole response or
one streamed chunk into `CompletionPiece`s (text, finish reason, stop sequence, usage). Nothing
here knows about prompt formats or tool calls: the backend feeds the text to the format's parser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias, get_args

from chatlane.errors import (
    APIStatusError,
    InputError,
    ParseError,
    status_error_class,
)
from chatlane.request import ChatRequest
from chatlane.response import FinishReason, Usage
from chatlane.wire.openai import apply_extra
from chatlane.wire.openai import encode_query as chat_encode_query

__all__ = [
    "DIALECTS",
    "CompletionDialect",
    "CompletionPiece",
    "decode_chunk",
    "decode_response",
    "encode_query",
    "encode_request",
    "endpoint_path",
    "parse_dialect",
]

CompletionDialect: TypeAlias = Literal["openai", "llama.cpp", "aleph-alpha"]
"""The completion endpoints chatlane speaks (see the module docstring)."""

DIALECTS: Final[tuple[CompletionDialect, ...]] = get_args(CompletionDialect)

_PATHS: Final[dict[CompletionDialect, str]] = {
    "openai": "completions",
    "llama.cpp": "completion",
    "aleph-alpha": "complete",
}


@dataclass(frozen=True, slots=True)
class CompletionPiece:
    """What one response or one streamed chunk says about one choice.

    A piece may carry only text, only an ending, only usage, or any mix of them.
    """

    text: str = ""
    """Raw text the model produced (special tokens included where the server returns them)."""
    choice: int = 0
    finish_reason: FinishReason | None = None
    """Set once the choice is complete: ``stop``, ``length`` or what the server said."""
    stop_sequence: str | None = None
    """The stop sequence the server reported hitting (removed from ``text`` by the server)."""
    stop_token: int | None = None
    """The stop token id the server reported hitting (vLLM's ``stop_reason``)."""
    usage: Usage | None = None
    id: str | None = None
    model: str | None = None
    created: int | None = None


def parse_dialect(dialect: str) -> CompletionDialect:
    """The dialect named ``dialect``, or an `InputError` listing the known ones."""
    for known in DIALECTS:
        if dialect == known:
            return known
    # Accept the obvious spellings users reach for.
    aliases: dict[str, CompletionDialect] = {
        "vllm": "openai",
        "llama-cpp": "llama.cpp",
        "llamacpp": "llama.cpp",
        "aleph_alpha": "aleph-alpha",
        "alephalpha": "aleph-alpha",
    }
    if isinstance(dialect, str) and dialect.lower() in aliases:
        return aliases[dialect.lower()]
    raise InputError(
        f"unknown completion dialect {dialect!r}; use one of {', '.join(map(repr, DIALECTS))}"
    )


def endpoint_path(dialect: CompletionDialect) -> str:
    """The endpoint's path relative to the base URL (``completions``, ``completion``,
    ``complete``)."""
    return _PATHS[dialect]


def encode_request(
    prompt: str | Sequence[int],
    request: ChatRequest,
    dialect: CompletionDialect,
    *,
    stop: Sequence[str] = (),
    stream: bool = False,
    model: str | None = None,
) -> dict[str, Any]:
    """The JSON body asking ``dialect``'s endpoint to continue ``prompt``.

    Args:
        prompt: the rendered prompt: its text (special tokens as text), or its token ids
            (sent as a list of ids, or as Aleph Alpha's ``token_ids`` item).
        request: the sampling settings (``max_tokens``, ``temperature``, ...) and ``extra``
            fields, which are sent as they are and override what chatlane would send (a
            ``None`` value removes the field; Aleph Alpha's ``nice`` goes in the query, see
            `encode_query`).
        dialect: which endpoint's shape to use.
        stop: stop sequences (the format's, then the request's own).
        stream: ask for a stream of Server-Sent Events.
        model: the model name, where the endpoint needs one.
    """
    model = model if model is not None else request.model
    stops = list(dict.fromkeys([*stop, *request.stop]))
    if dialect == "openai":
        body = _encode_openai(prompt, request, stops, stream, model)
    elif dialect == "llama.cpp":
        body = _encode_llamacpp(prompt, request, stops, stream, model)
    elif dialect == "aleph-alpha":
        body = _encode_aleph_alpha(prompt, request, stops, stream, model)
    else:  # pragma: no cover - parse_dialect guards the public entry points
        raise InputError(f"unknown completion dialect {dialect!r}")
    return apply_extra(body, request, dialect)


def encode_query(request: ChatRequest, dialect: CompletionDialect) -> dict[str, str]:
    """The URL query parameters a request needs: Aleph Alpha's ``nice=true`` when
    ``request.extra["nice"]`` is true (the server then ranks it below other requests, as
    aleph-alpha-client's ``nice=True`` does); nothing for the other dialects."""
    return chat_encode_query(request, dialect)


def _prompt_items(prompt: str | Sequence[int]) -> list[dict[str, Any]]:
    # aleph-alpha-client's Prompt.to_json(): Text -> {"type": "text", "data", "controls"},
    # Tokens -> {"type": "token_ids", "data", "controls"}.
    if isinstance(prompt, str):
        return [{"type": "text", "data": prompt, "controls": []}]
    return [{"type": "token_ids", "data": list(prompt), "controls": []}]


def _plain(prompt: str | Sequence[int]) -> str | list[int]:
    return prompt if isinstance(prompt, str) else list(prompt)


def _put(body: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        body[key] = value


def _encode_openai(
    prompt: str | Sequence[int],
    request: ChatRequest,
    stop: list[str],
    stream: bool,
    model: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": _plain(prompt)}
    _put(body, "model", model)
    # The endpoint's default is 16 tokens; null means "until the model stops" for vLLM and
    # llama-cpp-python (OpenAI's own completions API documents max_tokens as nullable too).
    body["max_tokens"] = request.max_tokens
    _put(body, "temperature", request.temperature)
    _put(body, "top_p", request.top_p)
    _put(body, "top_k", request.top_k)  # a vLLM / llama-cpp-python extension
    _put(body, "seed", request.seed)
    _put(body, "frequency_penalty", request.frequency_penalty)
    _put(body, "presence_penalty", request.presence_penalty)
    _put(body, "n", request.n)
    _put(body, "user", request.user)
    if request.logprobs:
        body["logprobs"] = request.top_logprobs or 0
    if stop:
        body["stop"] = stop
    # vLLM drops special tokens from the text unless told not to; the format's parser needs
    # them (a special token may start a tool call or say how the turn ended). Servers that do not know the field
    # ignore it (llama-cpp-python's request model ignores unknown fields).
    body["skip_special_tokens"] = False
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _encode_llamacpp(
    prompt: str | Sequence[int],
    request: ChatRequest,
    stop: list[str],
    stream: bool,
    model: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": _plain(prompt)}
    _put(body, "model", model)
    body["n_predict"] = request.max_tokens if request.max_tokens is not None else -1
    _put(body, "temperature", request.temperature)
    _put(body, "top_p", request.top_p)
    _put(body, "top_k", request.top_k)
    _put(body, "seed", request.seed)
    _put(body, "frequency_penalty", request.frequency_penalty)
    _put(body, "presence_penalty", request.presence_penalty)
    if request.logprobs:
        body["n_probs"] = request.top_logprobs or 1
    if stop:
        body["stop"] = stop
    fmt = request.response_format
    if fmt is not None:
        # llama.cpp's server turns a JSON schema into a grammar and constrains the output.
        body["json_schema"] = dict(fmt.schema) if fmt.schema is not None else {"type": "object"}
    # Reuse the KV cache for the shared prefix of a growing conversation.
    body["cache_prompt"] = True
    body["stream"] = stream
    return body


def _encode_aleph_alpha(
    prompt: str | Sequence[int],
    request: ChatRequest,
    stop: list[str],
    stream: bool,
    model: str | None,
) -> dict[str, Any]:
    # The shape of aleph-alpha-client's CompletionRequest.to_json(): the prompt is a list of items.
    body: dict[str, Any] = {"prompt": _prompt_items(prompt)}
    _put(body, "model", model)
    _put(body, "maximum_tokens", request.max_tokens)
    _put(body, "temperature", request.temperature)
    _put(body, "top_p", request.top_p)
    _put(body, "top_k", request.top_k)
    _put(body, "frequency_penalty", request.frequency_penalty)
    _put(body, "presence_penalty", request.presence_penalty)
    _put(body, "n", request.n)
    if request.logprobs:
        body["log_probs"] = request.top_logprobs or 0
    if stop:
        body["stop_sequences"] = stop
    if request.steering_concepts:
        body["steering_concepts"] = list(request.steering_concepts)
    # Without it the API may return an "optimized" completion with special tokens removed.
    body["raw_completion"] = True
    if stream:
        body["stream"] = True
    return body


# Decoding.


def decode_response(body: Any, dialect: CompletionDialect) -> list[CompletionPiece]:
    """The pieces of a whole (non-streamed) response, one per choice, each finished.

    Raises:
        ParseError: the body is not the dialect's response shape (the body is kept).
        APIStatusError: the body is an error object (`ServerError` unless its code says).
    """
    body = _expect_object(body, "response")
    if dialect == "openai":
        return _decode_openai(body, final=True)
    if dialect == "llama.cpp":
        return _decode_llamacpp(body, final=True)
    return _decode_aleph_alpha_whole(body)


def decode_chunk(chunk: Any, dialect: CompletionDialect) -> list[CompletionPiece]:
    """The pieces of one streamed chunk (the parsed JSON of one SSE ``data:`` field).

    A chunk that says nothing (a keep-alive, an unknown ``type``) gives no pieces.

    Raises:
        ParseError: the chunk is not the dialect's chunk shape (the chunk is kept).
        APIStatusError: the server sent an error object in the stream (`ServerError` unless
            its code says otherwise).
    """
    chunk = _expect_object(chunk, "stream chunk")
    if dialect == "openai":
        return _decode_openai(chunk, final=False)
    if dialect == "llama.cpp":
        return _decode_llamacpp(chunk, final=False)
    return _decode_aleph_alpha_chunk(chunk)


def _expect_object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ParseError(
            f"the completion {what} is not a JSON object: {value!r:.200}", text=repr(value)
        )
    error = value.get("error")
    if error is not None:
        raise _server_error(value)
    return value


def _server_error(body: Mapping[str, Any]) -> APIStatusError:
    """The error a server reported inside a body it sent with status 200 (llama.cpp and vLLM do
    that mid-stream); its ``code``, when an HTTP status, picks the class."""
    import json

    error = body.get("error")
    message = error.get("message") if isinstance(error, Mapping) else error
    code = error.get("code") if isinstance(error, Mapping) else None
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    status = code if isinstance(code, int) and 400 <= code < 600 else 500
    cls = status_error_class(status)
    return cls(
        f"the server reported an error: {message}",
        status_code=status,
        body=json.dumps(body, ensure_ascii=False, default=str),
        error=error,
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _finish(value: Any) -> FinishReason | None:
    if value is None or value == "":
        return None
    return FinishReason.parse(str(value))


def _decode_openai(body: Mapping[str, Any], *, final: bool) -> list[CompletionPiece]:
    choices = body.get("choices")
    if choices is None:
        choices = []
    if not isinstance(choices, list):
        raise ParseError(
            f"'choices' must be a list, got {type(choices).__name__}", text=_dump(body)
        )
    usage = _openai_usage(body.get("usage"))
    ident, model, created = _str(body.get("id")), _str(body.get("model")), _int(body.get("created"))
    pieces: list[CompletionPiece] = []
    for position, choice in enumerate(choices):
        if not isinstance(choice, Mapping):
            raise ParseError(
                f"choices[{position}] is not an object: {choice!r:.100}", text=_dump(body)
            )
        text = choice.get("text")
        if text is not None and not isinstance(text, str):
            raise ParseError(
                f"choices[{position}].text must be a string, got {type(text).__name__}",
                text=_dump(body),
            )
        index = _int(choice.get("index"))
        finish = _finish(choice.get("finish_reason"))
        if final and finish is None:
            finish = FinishReason.INCOMPLETE
        # vLLM: stop_reason is the stop string, or the stop token id, that ended the choice.
        stop_reason = choice.get("stop_reason")
        pieces.append(
            CompletionPiece(
                text=text or "",
                choice=index if index is not None else position,
                finish_reason=finish,
                stop_sequence=_str(stop_reason),
                stop_token=_int(stop_reason),
                id=ident,
                model=model,
                created=created,
            )
        )
    if usage is not None:
        # Usage belongs to the whole response; attach it once, to a piece of its own when the
        # chunk has no choices (OpenAI's include_usage chunk has "choices": []).
        pieces.append(CompletionPiece(usage=usage, id=ident, model=model, created=created))
    if not pieces and final:
        raise ParseError("the completion response has no choices", text=_dump(body))
    return pieces


def _openai_usage(value: Any) -> Usage | None:
    if not isinstance(value, Mapping):
        return None
    prompt = _int(value.get("prompt_tokens")) or 0
    completion = _int(value.get("completion_tokens")) or 0
    total = _int(value.get("total_tokens"))
    details = value.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, Mapping) else None
    return Usage(prompt, completion, total if total is not None else prompt + completion, cached)


# llama.cpp's stop_type values (tools/server/server.cpp): "eos" the model ended, "word" a stop
# string matched (stopping_word), "limit" n_predict ran out, "none" not finished. Servers before
# stop_type sent the booleans stopped_eos / stopped_word / stopped_limit instead.
_LLAMACPP_STOPS: Final[dict[str, FinishReason]] = {
    "eos": FinishReason.STOP,
    "word": FinishReason.STOP,
    "limit": FinishReason.LENGTH,
}


def _decode_llamacpp(body: Mapping[str, Any], *, final: bool) -> list[CompletionPiece]:
    content = body.get("content", "")
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise ParseError(
            f"'content' must be a string, got {type(content).__name__}", text=_dump(body)
        )
    if final and "content" not in body:
        raise ParseError("the llama.cpp response has no 'content'", text=_dump(body))
    stopped = bool(body.get("stop")) or final
    finish: FinishReason | None = None
    stop_sequence: str | None = None
    if stopped:
        stop_type = _str(body.get("stop_type"))
        if stop_type is None:
            if body.get("stopped_limit"):
                stop_type = "limit"
            elif body.get("stopped_word"):
                stop_type = "word"
            elif body.get("stopped_eos"):
                stop_type = "eos"
        if stop_type in _LLAMACPP_STOPS:
            finish = _LLAMACPP_STOPS[stop_type]
        elif stop_type not in (None, "none"):
            finish = FinishReason.other(stop_type)
        elif body.get("stop"):
            finish = FinishReason.STOP
        else:
            finish = FinishReason.INCOMPLETE
        if stop_type == "word":
            stop_sequence = _str(body.get("stopping_word")) or None
    usage: Usage | None = None
    predicted = _int(body.get("tokens_predicted"))
    evaluated = _int(body.get("tokens_evaluated"))
    if stopped and (predicted is not None or evaluated is not None):
        timings = body.get("timings")
        cached = _int(timings.get("cache_n")) if isinstance(timings, Mapping) else None
        usage = Usage(evaluated or 0, predicted or 0, (evaluated or 0) + (predicted or 0), cached)
    index = _int(body.get("index"))
    return [
        CompletionPiece(
            text=content,
            choice=index or 0,
            finish_reason=finish,
            stop_sequence=stop_sequence,
            usage=usage,
            model=_str(body.get("model")),
        )
    ]


def _aleph_alpha_finish(value: Any) -> FinishReason | None:
    # The API names its reasons after what ended the text: "maximum_tokens" (the limit),
    # "stop_sequence_reached", "end_of_text"; OpenAI-style values are taken as they are.
    if value is None or value == "":
        return None
    if value in ("maximum_tokens", "length"):
        return FinishReason.LENGTH
    if value in ("stop_sequence_reached", "end_of_text", "stop", "stop_sequence"):
        return FinishReason.STOP
    return FinishReason.parse(str(value))


def _aleph_alpha_text(item: Mapping[str, Any], where: str, body: Mapping[str, Any]) -> str:
    # raw_completion keeps the special tokens; "completion" is the fallback for servers that
    # ignore the flag.
    raw = item.get("raw_completion")
    text = raw if raw is not None else item.get("completion")
    if text is None:
        return ""
    if not isinstance(text, str):
        raise ParseError(f"{where} completion must be a string", text=_dump(body))
    return text


def _aleph_alpha_usage(body: Mapping[str, Any]) -> Usage | None:
    prompt = _int(body.get("num_tokens_prompt_total"))
    generated = _int(body.get("num_tokens_generated"))
    if prompt is None and generated is None:
        return None
    return Usage(prompt or 0, generated or 0, (prompt or 0) + (generated or 0))


def _decode_aleph_alpha_whole(body: Mapping[str, Any]) -> list[CompletionPiece]:
    completions = body.get("completions")
    if not isinstance(completions, list) or not completions:
        raise ParseError("the Aleph Alpha response has no 'completions' list", text=_dump(body))
    model = _str(body.get("model_version"))
    pieces: list[CompletionPiece] = []
    for index, item in enumerate(completions):
        if not isinstance(item, Mapping):
            raise ParseError(f"completions[{index}] is not an object", text=_dump(body))
        pieces.append(
            CompletionPiece(
                text=_aleph_alpha_text(item, f"completions[{index}]", body),
                choice=index,
                finish_reason=_aleph_alpha_finish(item.get("finish_reason"))
                or FinishReason.INCOMPLETE,
                model=model,
            )
        )
    usage = _aleph_alpha_usage(body)
    if usage is not None:
        pieces.append(CompletionPiece(usage=usage, model=model))
    return pieces


def _decode_aleph_alpha_chunk(chunk: Mapping[str, Any]) -> list[CompletionPiece]:
    kind = chunk.get("type")
    index = _int(chunk.get("index")) or 0
    if kind == "stream_chunk":
        return [
            CompletionPiece(
                text=_aleph_alpha_text(chunk, "the stream chunk's", chunk), choice=index
            )
        ]
    if kind == "stream_summary":
        return [
            CompletionPiece(
                choice=index,
                finish_reason=_aleph_alpha_finish(chunk.get("finish_reason"))
                or FinishReason.INCOMPLETE,
                model=_str(chunk.get("model_version")),
            )
        ]
    if kind == "completion_summary":
        usage = _aleph_alpha_usage(chunk)
        return [CompletionPiece(usage=usage)] if usage is not None else []
    if kind is None and "completions" in chunk:
        # A server that answered a streamed request in one piece.
        return _decode_aleph_alpha_whole(chunk)
    # Unknown item types are skipped: a newer API may add some.
    return []


def _dump(value: Any) -> str:
    import json

    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:  # pragma: no cover - circular structures cannot come from JSON
        return repr(value)
