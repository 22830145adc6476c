"""The OpenAI-compatible ``/chat/completions`` wire format: requests, responses and streams.

One codec serves four dialects (`DIALECTS`), which differ in a few fields:

- ``openai``: the OpenAI API. The token limit is ``max_completion_tokens`` (OpenAI deprecated
  ``max_tokens`` and its reasoning models reject it); it has no ``top_k`` or steering.
- ``vllm``: vLLM's server. ``max_tokens``; ``top_k`` is sent; any other vLLM sampling or
  guided-decoding parameter (``min_p``, ``repetition_penalty``, ``guided_json``, ...) goes in
  ``request.extra``, which is sent as it is.
- ``llama.cpp``: llama.cpp's server and llama-cpp-python's. ``max_tokens``, ``top_k``; a
  response schema is sent as ``{"type": "json_object", "schema": ...}`` because these servers
  answer ``{"type": "json_schema", ...}`` with HTTP 500 (see docs ENGINE.md).
- ``aleph-alpha``: the Aleph Alpha / PhariaAI inference API, encoded as aleph-alpha-client
  11.5.1 does: ``maximum_tokens``, ``top_k``, ``steering_concepts``; ``hosting`` (and ``tags``)
  travel in ``request.extra``; ``request.extra["nice"]`` is not a body field but the ``nice``
  query flag (see `encode_query`).

``request.extra`` is merged into the body last, so it can add or override any field; a ``None``
value removes a field chatlane would otherwise send.

Decoding is tolerant of what servers really send (unknown finish reasons and roles are values,
``content: null`` is empty text, OpenAI's ``refusal`` text is the message's text) and strict
about shape: a body that is not a chat completion is a `ParseError` naming what is wrong, with
the body kept. `StreamAssembler` turns streamed chunks into `ChatEvent`s without losing or
inventing data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from chatlane.errors import InputError, MessageError, ParseError, SchemaError
from chatlane.events import (
    ChatEvent,
    Finished,
    ReasoningDelta,
    ResponseStarted,
    TextDelta,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStarted,
    UsageReported,
)
from chatlane.messages import Image, Message, Part, Role, Text, ToolCall
from chatlane.request import ChatRequest, ResponseFormat, StreamOptions
from chatlane.response import ChatResponse, Choice, FinishReason, Usage
from chatlane.tools import Tool

__all__ = [
    "DIALECTS",
    "StreamAssembler",
    "StreamEncoder",
    "decode_request",
    "decode_response",
    "decode_usage",
    "encode_message",
    "encode_query",
    "encode_request",
    "encode_response",
    "encode_tool",
    "encode_usage",
    "sse_event",
]

DIALECTS: Final = ("openai", "vllm", "llama.cpp", "aleph-alpha")
"""The server dialects `encode_request` knows."""

_MAX_TOKENS_FIELD: Final = {
    "openai": "max_completion_tokens",
    "vllm": "max_tokens",
    "llama.cpp": "max_tokens",
    "aleph-alpha": "maximum_tokens",
}
_HAS_TOP_K: Final = frozenset({"vllm", "llama.cpp", "aleph-alpha"})
_QUERY_FIELDS: Final = {"aleph-alpha": ("nice",)}
_EMPTY: Final[Mapping[str, Any]] = {}


def _check_dialect(dialect: str) -> None:
    if dialect not in _MAX_TOKENS_FIELD:
        raise InputError(f"unknown dialect {dialect!r}; the dialects are {', '.join(DIALECTS)}")


def call_id(index: int) -> str:
    """The id chatlane gives a tool call that a server sent without one."""
    return f"call_{index}"


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


def encode_request(
    request: ChatRequest, dialect: str = "openai", *, stream: bool | StreamOptions = False
) -> dict[str, Any]:
    """The JSON body of a ``/chat/completions`` request in the given dialect.

    Args:
        request: the request to send.
        dialect: one of `DIALECTS`.
        stream: ask for a streamed response: ``True`` reports usage at its end, a
            `StreamOptions` says whether to.

    Raises:
        InputError: the dialect is unknown, or the request uses a setting the dialect has no
            field for (``top_k`` or ``steering_concepts`` where the server has none; send such
            fields through ``request.extra`` if your server does know them).
    """
    _check_dialect(dialect)
    if not isinstance(request, ChatRequest):
        raise InputError(f"encode_request needs a ChatRequest, got {type(request).__name__}")
    body: dict[str, Any] = {}
    if request.model is not None:
        body["model"] = request.model
    body["messages"] = [encode_message(m, dialect) for m in request.messages]
    if request.max_tokens is not None:
        body[_MAX_TOKENS_FIELD[dialect]] = request.max_tokens
    for name in ("temperature", "top_p"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.top_k is not None:
        if dialect not in _HAS_TOP_K and "top_k" not in request.extra:
            raise InputError(
                f"the {dialect} dialect has no top_k; use another dialect, or send it with "
                "extra={'top_k': ...} if your server knows it"
            )
        body["top_k"] = request.top_k
    if stream is not False:
        options = stream if isinstance(stream, StreamOptions) else StreamOptions()
        body["stream"] = True
        body["stream_options"] = {"include_usage": options.include_usage}
    if request.steering_concepts:
        if dialect != "aleph-alpha" and "steering_concepts" not in request.extra:
            raise InputError(
                f"steering_concepts are an Aleph Alpha feature; the {dialect} dialect has none"
            )
        body["steering_concepts"] = list(request.steering_concepts)
    if request.response_format is not None:
        body["response_format"] = encode_response_format(request.response_format, dialect)
    if request.tools:
        body["tools"] = [encode_tool(t) for t in request.tools]
    if request.tool_choice is not None:
        body["tool_choice"] = _encode_tool_choice(request.tool_choice)
    if request.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.stop:
        body["stop"] = list(request.stop)
    for name in (
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "n",
        "logprobs",
        "top_logprobs",
        "user",
    ):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    return apply_extra(body, request, dialect)


def apply_extra(body: dict[str, Any], request: ChatRequest, dialect: str) -> dict[str, Any]:
    """Merge ``request.extra`` into an encoded body, for chat and completion endpoints alike.

    Extra fields override what chatlane would send; a ``None`` value removes a field; fields
    that travel in the query (Aleph Alpha's ``nice``, see `encode_query`) stay out of the body.
    """
    query_fields = _QUERY_FIELDS.get(dialect, ())
    for key, value in request.extra.items():
        if key in query_fields:
            continue
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def encode_query(request: ChatRequest, dialect: str = "openai") -> dict[str, str]:
    """The URL query parameters a request needs in the given dialect.

    Only ``aleph-alpha`` has one: ``nice=true`` when ``request.extra["nice"]`` is true (the
    server then ranks the request below others, as aleph-alpha-client's ``nice=True`` does).
    """
    _check_dialect(dialect)
    if dialect == "aleph-alpha" and request.extra.get("nice"):
        return {"nice": "true"}
    return {}


def encode_message(message: Message, dialect: str = "openai") -> dict[str, Any]:
    """One message as the chat endpoint expects it."""
    _check_dialect(dialect)
    if not isinstance(message, Message):
        raise MessageError(f"encode_message needs a Message, got {type(message).__name__}")
    out: dict[str, Any] = {"role": message.role.value}
    content = message.content
    if isinstance(content, str):
        if content == "" and message.tool_calls and dialect in ("openai", "vllm"):
            # What these servers send themselves for a turn that only calls tools.
            out["content"] = None
        else:
            out["content"] = content
    else:
        out["content"] = [_encode_part(p) for p in content]
    if message.tool_calls:
        out["tool_calls"] = [_encode_tool_call(c) for c in message.tool_calls]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name is not None and not (
        message.role is Role.TOOL and dialect in ("openai", "aleph-alpha")
    ):
        # OpenAI's tool messages have no name field; vLLM and llama.cpp templates use it.
        out["name"] = message.name
    return out


def _encode_part(part: Part) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text}
    image_url: dict[str, Any] = {"url": part.to_data_uri()}
    if part.detail is not None:
        image_url["detail"] = part.detail
    return {"type": "image_url", "image_url": image_url}


def _encode_tool_call(call: ToolCall) -> dict[str, Any]:
    # A call made without arguments may carry an empty text; servers want a JSON object.
    arguments = call.raw_arguments if call.raw_arguments.strip() else "{}"
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    }


def encode_tool(tool: Tool) -> dict[str, Any]:
    """A tool as the ``tools`` list wants it (strict tools get the strict schema form)."""
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    function["parameters"] = tool.strict_parameters() if tool.strict else dict(tool.parameters)
    if tool.strict:
        function["strict"] = True
    return {"type": "function", "function": function}


def _encode_tool_choice(choice: str) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def encode_response_format(response_format: ResponseFormat, dialect: str) -> dict[str, Any]:
    """The ``response_format`` field for the dialect."""
    schema = response_format.schema
    if schema is None:
        return {"type": "json_object"}
    if dialect == "llama.cpp":
        return {"type": "json_object", "schema": dict(schema)}
    if dialect == "openai" and response_format.strict:
        sent: dict[str, Any] = response_format.strict_schema() or {}
    else:
        # vLLM and Aleph Alpha constrain decoding to the schema as given.
        sent = dict(schema)
    json_schema: dict[str, Any] = {"schema": sent, "name": response_format.name}
    description = response_format.description or schema.get("description")
    if isinstance(description, str):
        json_schema["description"] = description
    json_schema["strict"] = response_format.strict
    return {"type": "json_schema", "json_schema": json_schema}


# ---------------------------------------------------------------------------------------------
# Decoding a request body (as the CLI and a server read one)
# ---------------------------------------------------------------------------------------------

_REQUEST_FIELDS: Final = frozenset(
    {
        "model",
        "messages",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "max_tokens",
        "max_completion_tokens",
        "maximum_tokens",
        "temperature",
        "top_p",
        "top_k",
        "stop",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "n",
        "steering_concepts",
        "logprobs",
        "top_logprobs",
        "user",
        "stream",
        "stream_options",
    }
)


def decode_request(body: Mapping[str, Any]) -> ChatRequest:
    """A `ChatRequest` from an OpenAI-style request body.

    Fields chatlane has no name for are kept in ``extra``; ``stream`` and ``stream_options``
    are the caller's business and are dropped. Raises `InputError` (or its `MessageError` and
    `SchemaError` kinds) naming what is wrong.
    """
    if not isinstance(body, Mapping):
        raise InputError(f"a chat request body must be a JSON object, got {type(body).__name__}")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list):
        raise MessageError("a chat request body needs 'messages', a list of messages")
    messages = tuple(_decode_request_message(m, i) for i, m in enumerate(raw_messages))
    params: dict[str, Any] = {}
    for name in ("model", "temperature", "top_p", "top_k", "seed", "frequency_penalty"):
        if body.get(name) is not None:
            params[name] = body[name]
    for name in ("presence_penalty", "n", "logprobs", "top_logprobs", "user"):
        if body.get(name) is not None:
            params[name] = body[name]
    if body.get("parallel_tool_calls") is not None:
        params["parallel_tool_calls"] = bool(body["parallel_tool_calls"])
    for name in ("max_completion_tokens", "max_tokens", "maximum_tokens"):
        if body.get(name) is not None:
            params["max_tokens"] = body[name]
            break
    stop = body.get("stop")
    if isinstance(stop, str):
        params["stop"] = (stop,)
    elif isinstance(stop, list):
        params["stop"] = tuple(str(s) for s in stop)
    concepts = body.get("steering_concepts")
    if concepts:
        if not isinstance(concepts, list):
            raise InputError(f"'steering_concepts' must be a list, got {type(concepts).__name__}")
        params["steering_concepts"] = tuple(concepts)
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise SchemaError("'tools' must be a list of tools")
    params["tools"] = tuple(_decode_tool(t, i) for i, t in enumerate(tools))
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping):
        function = choice.get("function")
        chosen = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(chosen, str):
            raise InputError("'tool_choice' as an object must name a function")
        params["tool_choice"] = chosen
    elif choice is not None:
        params["tool_choice"] = choice
    if body.get("response_format") is not None:
        params["response_format"] = _decode_response_format(body["response_format"])
    extra = {k: v for k, v in body.items() if k not in _REQUEST_FIELDS}
    if extra:
        params["extra"] = extra
    return ChatRequest(messages, **params)


def _decode_request_message(raw: Any, i: int) -> Message:
    if not isinstance(raw, Mapping):
        raise MessageError(f"messages[{i}] must be an object, got {type(raw).__name__}")
    role = raw.get("role")
    if role == "developer":
        role = "system"  # OpenAI's newer name for the system role
    if not isinstance(role, str):
        raise MessageError(f"messages[{i}] has no role")
    content = raw.get("content")
    if isinstance(content, list):
        content = tuple(_decode_part(p, i) for p in content)
    elif content is not None and not isinstance(content, str):
        raise MessageError(
            f"messages[{i}].content must be a string or a list of parts, got {type(content).__name__}"
        )
    raw_calls = raw.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise MessageError(f"messages[{i}].tool_calls must be a list")
    calls: list[ToolCall] = []
    for j, call in enumerate(raw_calls):
        calls.append(_decode_tool_call(call, j, f"messages[{i}].tool_calls[{j}]", MessageError))
    reasoning = raw.get("reasoning_content") or raw.get("reasoning")
    return Message(
        Role.parse(role),
        content if content is not None else "",
        tuple(calls),
        tool_call_id=raw.get("tool_call_id"),
        name=raw.get("name"),
        reasoning=reasoning if isinstance(reasoning, str) else None,
    )


def _decode_part(raw: Any, i: int) -> Part:
    if isinstance(raw, str):
        return Text(raw)
    if not isinstance(raw, Mapping):
        raise MessageError(f"messages[{i}] has a content part that is not an object")
    kind = raw.get("type")
    if kind == "text" and isinstance(raw.get("text"), str):
        return Text(raw["text"])
    if kind == "image_url":
        image_url = raw.get("image_url")
        if isinstance(image_url, str):
            return Image.from_url(image_url)
        if isinstance(image_url, Mapping) and isinstance(image_url.get("url"), str):
            return Image.from_url(image_url["url"], detail=image_url.get("detail"))
        raise MessageError(f"messages[{i}] has an image_url part without a url")
    raise MessageError(
        f"messages[{i}] has a content part of type {kind!r}; chatlane reads text and image_url"
    )


def _decode_tool(raw: Any, i: int) -> Tool:
    if not isinstance(raw, Mapping):
        raise SchemaError(f"tools[{i}] must be an object")
    function = raw.get("function", raw)
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise SchemaError(f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ...}}}}")
    parameters = function.get("parameters")
    return Tool.from_schema(
        function["name"],
        parameters if parameters is not None else None,
        function.get("description"),
        strict=bool(function.get("strict", False)),
    )


def _decode_response_format(raw: Any) -> ResponseFormat:
    if isinstance(raw, Mapping) and raw.get("type") == "json_object" and "schema" in raw:
        # llama.cpp's form
        return ResponseFormat.from_schema(raw["schema"])
    if isinstance(raw, Mapping) and raw.get("type") == "json_schema":
        inner = raw.get("json_schema")
        if not isinstance(inner, Mapping) or not isinstance(inner.get("schema"), Mapping):
            raise SchemaError("response_format of type json_schema needs json_schema.schema")
    result = ResponseFormat.coerce(raw)
    assert result is not None
    return result


# ---------------------------------------------------------------------------------------------
# Decoding a response
# ---------------------------------------------------------------------------------------------


def _fail(message: str, body: Any) -> ParseError:
    try:
        text = json.dumps(body, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        text = repr(body)
    return ParseError(message, text=text)


def decode_response(
    body: Mapping[str, Any],
    *,
    response_format: ResponseFormat | type[Any] | Mapping[str, Any] | None = None,
) -> ChatResponse:
    """A `ChatResponse` from a non-streamed ``/chat/completions`` response body.

    Several choices are kept in ``choices`` (ordered by index); ``content: null`` is empty
    text; an unknown finish reason is kept as `FinishReason.other`; ``reasoning_content`` (or
    vLLM's ``reasoning``) becomes the message's ``reasoning``; usage includes cached and
    reasoning tokens when reported. The body itself is kept in ``raw``.

    Raises:
        ParseError: the body is not a chat completion (it names what is wrong and keeps the
            body in ``.text``), including an ``{"error": ...}`` body.
    """
    if not isinstance(body, Mapping):
        raise _fail(f"a chat completion must be a JSON object, got {type(body).__name__}", body)
    if "choices" not in body and "error" in body:
        raise _fail(f"the server answered with an error: {_error_text(body['error'])}", body)
    raw_choices = body.get("choices")
    if not isinstance(raw_choices, list):
        raise _fail("not a chat completion: it has no 'choices' list", body)
    if not raw_choices:
        raise _fail("the chat completion has no choices", body)
    choices: list[Choice] = []
    for position, raw in enumerate(raw_choices):
        if not isinstance(raw, Mapping):
            raise _fail(f"choices[{position}] is not an object", body)
        index = raw.get("index", position)
        if not isinstance(index, int):
            raise _fail(f"choices[{position}].index is not an integer", body)
        message = raw.get("message")
        if message is None:
            message = {}
        if not isinstance(message, Mapping):
            raise _fail(f"choices[{position}].message is not an object", body)
        choices.append(
            Choice(
                index,
                _decode_response_message(message, position, body),
                FinishReason.parse(_str_or_none(raw.get("finish_reason"))),
                _stop_sequence(raw),
            )
        )
    choices.sort(key=lambda c: c.index)
    usage = body.get("usage")
    first = choices[0]
    return ChatResponse(
        message=first.message,
        finish_reason=first.finish_reason,
        usage=decode_usage(usage, body) if usage is not None else None,
        model=_str_or_none(body.get("model")),
        id=_str_or_none(body.get("id")),
        stop_sequence=first.stop_sequence,
        choices=tuple(choices),
        created=body.get("created") if isinstance(body.get("created"), int) else None,
        system_fingerprint=_str_or_none(body.get("system_fingerprint")),
        response_format=ResponseFormat.coerce(response_format),
        raw=body,
    )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _stop_sequence(choice: Mapping[str, Any]) -> str | None:
    # vLLM reports the stop string (or the stop token id, an int) that ended generation.
    value = choice.get("stop_reason")
    return value if isinstance(value, str) else None


def _error_text(error: Any) -> str:
    if isinstance(error, Mapping):
        return str(error.get("message") or error)
    return str(error)


def _text_of(content: Any, where: str, body: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        # Some servers answer with content parts; only text parts exist in an answer.
        pieces = []
        for part in content:
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                pieces.append(part["text"])
        return "".join(pieces)
    raise _fail(f"{where} is neither text nor null", body)


def _reasoning_of(holder: Mapping[str, Any]) -> str | None:
    # DeepSeek and llama.cpp say reasoning_content; newer vLLM says reasoning (and some
    # versions say both, with the same text): take one, never both.
    value = holder.get("reasoning_content")
    if value is None:
        value = holder.get("reasoning")
    return value if isinstance(value, str) and value else None


def _decode_response_message(raw: Mapping[str, Any], position: int, body: Any) -> Message:
    where = f"choices[{position}].message"
    text = _text_of(raw.get("content"), f"{where}.content", body)
    refusal = raw.get("refusal")
    if isinstance(refusal, str):
        # OpenAI puts a refusal here with content null; it is the answer's text.
        text += refusal
    raw_calls = raw.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise _fail(f"{where}.tool_calls is not a list", body)
    legacy = raw.get("function_call")
    if not raw_calls and isinstance(legacy, Mapping):
        # The deprecated single-function form, which older servers still send.
        raw_calls = [{"function": legacy}]
    calls = tuple(
        _decode_tool_call(c, j, f"{where}.tool_calls[{j}]", None, body)
        for j, c in enumerate(raw_calls)
    )
    # The role of an answer is the assistant's whatever a server calls it; the body is kept
    # in ChatResponse.raw, so nothing is lost.
    return Message(Role.ASSISTANT, text, calls, reasoning=_reasoning_of(raw))


def _decode_tool_call(
    raw: Any,
    position: int,
    where: str,
    error: type[InputError] | None,
    body: Any = None,
) -> ToolCall:
    def bad(message: str) -> Exception:
        return error(message) if error is not None else _fail(message, body)

    if not isinstance(raw, Mapping):
        raise bad(f"{where} is not an object")
    function = raw.get("function")
    if not isinstance(function, Mapping):
        raise bad(f"{where} has no 'function' object")
    name = function.get("name")
    if not isinstance(name, str):
        raise bad(f"{where}.function has no name")
    ident = raw.get("id")
    if not isinstance(ident, str) or not ident:
        ident = call_id(
            raw.get("index", position) if isinstance(raw.get("index"), int) else position
        )
    arguments = function.get("arguments")
    if arguments is None:
        arguments = ""
    if isinstance(arguments, Mapping):
        # Some servers (Ollama's compatibility layer among them) send an object, not text.
        return ToolCall(ident, name, dict(arguments))
    if not isinstance(arguments, str):
        raise bad(f"{where}.function.arguments is neither text nor an object")
    return ToolCall.from_raw(ident, name, arguments)


def decode_usage(raw: Any, body: Any = None) -> Usage:
    """`Usage` from a ``usage`` object, with cached and reasoning token details."""
    if not isinstance(raw, Mapping):
        raise _fail(f"'usage' must be an object, got {type(raw).__name__}", body or raw)

    def count(holder: Mapping[str, Any], key: str, where: str) -> int | None:
        value = holder.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise _fail(f"{where}.{key} must be an integer, got {value!r}", body or raw)
        return value

    prompt = count(raw, "prompt_tokens", "usage") or 0
    completion = count(raw, "completion_tokens", "usage") or 0
    total = count(raw, "total_tokens", "usage")
    prompt_details = raw.get("prompt_tokens_details")
    completion_details = raw.get("completion_tokens_details")
    cached = (
        count(prompt_details, "cached_tokens", "usage.prompt_tokens_details")
        if isinstance(prompt_details, Mapping)
        else None
    )
    reasoning = (
        count(completion_details, "reasoning_tokens", "usage.completion_tokens_details")
        if isinstance(completion_details, Mapping)
        else None
    )
    return Usage(
        prompt, completion, total if total is not None else prompt + completion, cached, reasoning
    )


# ---------------------------------------------------------------------------------------------
# The stream assembler
# ---------------------------------------------------------------------------------------------


class _Call:
    """A tool call being assembled."""

    __slots__ = ("args", "done", "id", "index", "key", "name", "started", "wire_id")

    def __init__(self, index: int, key: int | None, wire_id: str | None) -> None:
        self.index = index  # its position among the choice's calls: the event index
        self.key = key  # the server's index, when it sent one
        self.wire_id = wire_id
        self.id = wire_id or call_id(index if key is None else key)
        self.name = ""
        self.args: list[str] = []
        self.started = False
        self.done = False


class _Choice:
    __slots__ = ("by_id", "by_key", "calls", "finished", "last")

    def __init__(self) -> None:
        self.calls: list[_Call] = []
        self.by_key: dict[int, _Call] = {}
        self.by_id: dict[str, _Call] = {}
        self.last: _Call | None = None
        self.finished = False


class StreamAssembler:
    """Streamed ``chat.completion.chunk`` dicts in, `ChatEvent`s out.

    `feed` each chunk as it arrives and call `finish` at the end of the stream. Text and
    reasoning pass through at once; a tool call is announced (`ToolCallStarted`) once its name
    is known, its argument text follows piece by piece (`ToolCallDelta`), and it is delivered
    whole (`ToolCallDone`) when its choice finishes. A stream that ends without a finish
    reason still delivers every call it carried, then ``Finished(FinishReason.INCOMPLETE)``.

    Tool-call deltas are matched to calls by ``id``, else by ``index``, else by position (see
    `_match`); several choices (``n > 1``) are kept apart by their index.
    """

    __slots__ = ("_choices", "_started", "_usage", "response_format")

    def __init__(
        self, response_format: ResponseFormat | type[Any] | Mapping[str, Any] | None = None
    ) -> None:
        self.response_format = ResponseFormat.coerce(response_format)
        """The format that was asked for (kept for whoever accumulates the events)."""
        self._choices: dict[int, _Choice] = {}
        self._started = False
        self._usage: Usage | None = None

    def feed(self, chunk: Mapping[str, Any]) -> list[ChatEvent]:
        """The events one chunk yields (raises `ParseError` for a chunk that is not one)."""
        if type(chunk) is not dict and not isinstance(chunk, Mapping):
            raise _fail(f"a stream chunk must be a JSON object, got {type(chunk).__name__}", chunk)
        events: list[ChatEvent] = []
        if not self._started and ("id" in chunk or "model" in chunk):
            self._started = True
            created = chunk.get("created")
            events.append(
                ResponseStarted(
                    _str_or_none(chunk.get("id")),
                    _str_or_none(chunk.get("model")),
                    created if isinstance(created, int) else None,
                    _str_or_none(chunk.get("system_fingerprint")),
                )
            )
        raw_choices = chunk.get("choices")
        if raw_choices:
            if not isinstance(raw_choices, list):
                raise _fail("a stream chunk's 'choices' is not a list", chunk)
            for position, raw in enumerate(raw_choices):
                if type(raw) is not dict and not isinstance(raw, Mapping):
                    raise _fail(f"choices[{position}] of a stream chunk is not an object", chunk)
                self._feed_choice(raw, position, chunk, events)
        elif raw_choices is None and "error" in chunk:
            raise _fail(
                f"the server sent an error in the stream: {_error_text(chunk['error'])}", chunk
            )
        usage = chunk.get("usage")
        if usage is not None:
            decoded = decode_usage(usage, chunk)
            if decoded != self._usage:
                self._usage = decoded
                events.append(UsageReported(decoded))
        return events

    def finish(self) -> list[ChatEvent]:
        """The end of the stream: deliver the calls and finish the choices still open."""
        events: list[ChatEvent] = []
        for index, state in sorted(self._choices.items()):
            self._close_calls(state, index, events)
            if not state.finished:
                state.finished = True
                events.append(Finished(FinishReason.INCOMPLETE, index))
        return events

    def _feed_choice(
        self, raw: Mapping[str, Any], position: int, chunk: Any, events: list[ChatEvent]
    ) -> None:
        index = raw.get("index", position)
        if not isinstance(index, int):
            raise _fail(f"choices[{position}].index of a stream chunk is not an integer", chunk)
        state = self._choices.get(index)
        if state is None:
            state = self._choices[index] = _Choice()
        delta = raw.get("delta")
        if delta is None:
            # Some servers put a whole message in the last chunk instead of a delta.
            delta = raw.get("message")
        if delta:
            if type(delta) is not dict and not isinstance(delta, Mapping):
                raise _fail(f"choices[{position}].delta of a stream chunk is not an object", chunk)
            reasoning = delta.get("reasoning_content")
            if reasoning is None:
                reasoning = delta.get("reasoning")
            if reasoning and isinstance(reasoning, str):
                events.append(ReasoningDelta(reasoning, index))
            content = delta.get("content")
            if content:
                text = (
                    content
                    if isinstance(content, str)
                    else _text_of(content, "delta.content", chunk)
                )
                if text:
                    events.append(TextDelta(text, index))
            refusal = delta.get("refusal")
            if refusal and isinstance(refusal, str):
                events.append(TextDelta(refusal, index))
            calls = delta.get("tool_calls")
            if not calls and delta.get("function_call"):
                # The deprecated single-function form: one call, index 0.
                calls = [{"index": 0, "function": delta["function_call"]}]
            if calls:
                if not isinstance(calls, list):
                    raise _fail("a stream chunk's delta.tool_calls is not a list", chunk)
                self._feed_calls(state, index, calls, chunk, events)
        reason = raw.get("finish_reason")
        if reason is not None and not state.finished:
            state.finished = True
            self._close_calls(state, index, events)
            events.append(Finished(FinishReason.parse(str(reason)), index, _stop_sequence(raw)))

    def _feed_calls(
        self,
        state: _Choice,
        choice: int,
        deltas: list[Any],
        chunk: Any,
        events: list[ChatEvent],
    ) -> None:
        unkeyed_in_chunk = 0
        for raw in deltas:
            if type(raw) is not dict and not isinstance(raw, Mapping):
                raise _fail("a tool-call delta is not an object", chunk)
            function = raw.get("function") or _EMPTY
            if type(function) is not dict and not isinstance(function, Mapping):
                raise _fail("a tool-call delta's 'function' is not an object", chunk)
            name = function.get("name")
            arguments = function.get("arguments")
            if type(arguments) is not str and isinstance(arguments, Mapping):
                arguments = json.dumps(arguments, ensure_ascii=False)
            elif arguments is not None and not isinstance(arguments, str):
                raise _fail("a tool-call delta's arguments are neither text nor an object", chunk)
            call = self._match(state, raw, name, unkeyed_in_chunk)
            if raw.get("index") is None and not raw.get("id"):
                unkeyed_in_chunk += 1
            if isinstance(name, str) and name and not call.name:
                call.name = name
            if call.done:
                # A delta for a call already delivered (after a finish chunk): deliver it again
                # at the end with what came since, rather than drop it.
                call.done = False
            if arguments:
                call.args.append(arguments)
                if call.started:
                    events.append(ToolCallDelta(call.index, arguments, choice))
            if not call.started and call.name:
                self._start(call, choice, events)

    @staticmethod
    def _match(state: _Choice, raw: Mapping[str, Any], name: Any, unkeyed_in_chunk: int) -> _Call:
        """The call a delta belongs to.

        By ``id`` when the delta carries a known one, else by ``index`` (a delta whose id
        differs from the id of its index's call opens a new call: some servers repeat index 0
        for every call); with neither, a delta continues the last call unless it is the second
        or later such delta in one chunk, or it names a call while the last one already has a
        name and complete arguments (a server sending whole calls without index or id).
        """
        key = raw.get("index")
        if not isinstance(key, int) or isinstance(key, bool):
            key = None
        ident = raw.get("id")
        if not isinstance(ident, str) or not ident:
            ident = None
        call: _Call | None = None
        if ident is not None:
            call = state.by_id.get(ident)
        if call is None and key is not None:
            candidate = state.by_key.get(key)
            if candidate is not None and (
                ident is None or candidate.wire_id is None or candidate.wire_id == ident
            ):
                call = candidate
        if call is None and key is None and ident is None:
            last = state.last
            names_a_new_call = isinstance(name, str) and name and last and last.name
            if (
                last is not None
                and unkeyed_in_chunk == 0
                and not (names_a_new_call and _complete(last))
            ):
                call = last
        if call is None:
            call = _Call(len(state.calls), key, ident)
            state.calls.append(call)
            if key is not None:
                state.by_key[key] = call
        if ident is not None and call.wire_id is None:
            call.wire_id = ident
            if not call.started:
                call.id = ident
        if ident is not None:
            state.by_id.setdefault(ident, call)
        state.last = call
        return call

    @staticmethod
    def _start(call: _Call, choice: int, events: list[ChatEvent]) -> None:
        call.started = True
        events.append(ToolCallStarted(call.index, call.id, call.name, choice))
        if call.args:
            # Arguments that came before the name are delivered now, in one piece.
            events.append(ToolCallDelta(call.index, "".join(call.args), choice))

    @staticmethod
    def _close_calls(state: _Choice, choice: int, events: list[ChatEvent]) -> None:
        for call in state.calls:
            if call.done:
                continue
            if not call.started:
                # A call whose name never came: delivered nameless rather than dropped.
                StreamAssembler._start(call, choice, events)
            call.done = True
            events.append(
                ToolCallDone(
                    call.index, ToolCall.from_raw(call.id, call.name, "".join(call.args)), choice
                )
            )


def _complete(call: _Call) -> bool:
    text = "".join(call.args)
    if not text.strip():
        return False
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Encoding a response (as a server writes one): the inverse of decode_response and the
# StreamAssembler, so that what these write, those read back to the same ChatResponse.
# ---------------------------------------------------------------------------------------------

_COMPLETION_OBJECT: Final = "chat.completion"
_CHUNK_OBJECT: Final = "chat.completion.chunk"


def encode_usage(usage: Usage) -> dict[str, Any]:
    """A ``usage`` object (the inverse of `decode_usage`), with token details when known."""
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    if usage.reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def _encode_answer(message: Message) -> dict[str, Any]:
    # An answer is written as a request's assistant message is (content null for a turn that
    # only calls tools, each call with id, type and function), plus its reasoning.
    out = encode_message(Message(Role.ASSISTANT, message.content, message.tool_calls), "openai")
    if message.reasoning is not None:
        out["reasoning_content"] = message.reasoning
    return out


def encode_response(
    response: ChatResponse,
    *,
    id: str | None = None,
    model: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """The ``chat.completion`` body of a non-streamed answer (the inverse of `decode_response`).

    ``id``, ``model`` and ``created`` stand in where the response has none. A choice's stop
    sequence is written as vLLM writes it, ``stop_reason``.
    """
    body: dict[str, Any] = {
        "id": response.id or id,
        "object": _COMPLETION_OBJECT,
        "created": response.created if response.created is not None else created,
        "model": response.model or model,
    }
    if response.system_fingerprint is not None:
        body["system_fingerprint"] = response.system_fingerprint
    choices = []
    for choice in response.choices:
        encoded: dict[str, Any] = {
            "index": choice.index,
            "message": _encode_answer(choice.message),
            "logprobs": None,
            "finish_reason": choice.finish_reason.value,
        }
        if choice.stop_sequence is not None:
            encoded["stop_reason"] = choice.stop_sequence
        choices.append(encoded)
    body["choices"] = choices
    if response.usage is not None:
        body["usage"] = encode_usage(response.usage)
    return body


class StreamEncoder:
    """`ChatEvent`s in, ``chat.completion.chunk`` dicts out: the inverse of `StreamAssembler`.

    Each choice opens with a ``{"role": "assistant", "content": ""}`` delta; text, reasoning
    (``reasoning_content``) and tool-call pieces follow as OpenAI writes them (a call's first
    delta carries ``index``, ``id``, ``type`` and the function's name, later ones only
    ``index`` and argument text); a finish is a chunk with an empty delta and the
    ``finish_reason``. With ``include_usage`` every chunk carries ``"usage": null`` and
    `finish` adds the usage chunk (``choices: []``), as OpenAI's ``stream_options`` asks.

    A tool call delivered whole (`ToolCallDone`) without all of its argument text streamed
    gets the rest in one delta, so the client's concatenation equals the call.
    """

    __slots__ = (
        "_args",
        "_head",
        "_include_usage",
        "_opened",
        "_started",
        "_templates",
        "_usage",
        "created",
    )

    def __init__(
        self,
        *,
        id: str,
        model: str | None,
        created: int,
        include_usage: bool = False,
    ) -> None:
        self.created = created
        self._head: dict[str, Any] = {
            "id": id,
            "object": _CHUNK_OBJECT,
            "created": created,
            "model": model,
        }
        self._include_usage = include_usage
        self._opened: set[int] = set()
        self._started: set[tuple[int, int]] = set()
        self._args: dict[tuple[int, int], list[str]] = {}
        self._usage: Usage | None = None
        self._templates: dict[int, tuple[bytes, bytes]] = {}

    @property
    def id(self) -> str:
        """The response id the chunks carry."""
        return str(self._head["id"])

    def _chunk(
        self, choice: int, delta: dict[str, Any], finish: str | None = None
    ) -> dict[str, Any]:
        item: dict[str, Any] = {
            "index": choice,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish,
        }
        chunk = {**self._head, "choices": [item]}
        if self._include_usage:
            chunk["usage"] = None
        return chunk

    def _open(self, choice: int, out: list[dict[str, Any]]) -> None:
        if choice not in self._opened:
            self._opened.add(choice)
            out.append(self._chunk(choice, {"role": "assistant", "content": ""}))

    def encode(self, event: ChatEvent) -> list[dict[str, Any]]:
        """The chunks one event becomes (none for what is only known at the end)."""
        out: list[dict[str, Any]] = []
        if isinstance(event, TextDelta):
            self._open(event.choice, out)
            out.append(self._chunk(event.choice, {"content": event.text}))
        elif isinstance(event, ToolCallDelta):
            self._open(event.choice, out)
            self._args.setdefault((event.choice, event.index), []).append(event.arguments)
            out.append(
                self._chunk(
                    event.choice,
                    {
                        "tool_calls": [
                            {"index": event.index, "function": {"arguments": event.arguments}}
                        ]
                    },
                )
            )
        elif isinstance(event, ToolCallStarted):
            self._open(event.choice, out)
            self._start(event.choice, event.index, event.id, event.name, out)
        elif isinstance(event, ReasoningDelta):
            self._open(event.choice, out)
            out.append(self._chunk(event.choice, {"reasoning_content": event.text}))
        elif isinstance(event, ToolCallDone):
            self._open(event.choice, out)
            self._done(event, out)
        elif isinstance(event, Finished):
            self._open(event.choice, out)
            chunk = self._chunk(event.choice, {}, event.finish_reason.value)
            if event.stop_sequence is not None:
                chunk["choices"][0]["stop_reason"] = event.stop_sequence
            out.append(chunk)
        elif isinstance(event, UsageReported):
            self._usage = event.usage
        elif isinstance(event, ResponseStarted) and not self._opened:
            # What the upstream says about its response, while no chunk has been written.
            if event.id:
                self._head["id"] = event.id
            if event.model:
                self._head["model"] = event.model
            if event.created is not None:
                self._head["created"] = self.created = event.created
            if event.system_fingerprint:
                self._head["system_fingerprint"] = event.system_fingerprint
        return out

    def _start(
        self, choice: int, index: int, ident: str, name: str, out: list[dict[str, Any]]
    ) -> None:
        self._started.add((choice, index))
        call = {
            "index": index,
            "id": ident,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        out.append(self._chunk(choice, {"tool_calls": [call]}))

    def _done(self, event: ToolCallDone, out: list[dict[str, Any]]) -> None:
        key = (event.choice, event.index)
        call = event.call
        if key not in self._started:
            self._start(event.choice, event.index, call.id, call.name, out)
        sent = "".join(self._args.get(key, ()))
        # Arguments a server wants as a JSON object, as `_encode_tool_call` writes them.
        whole = call.raw_arguments if call.raw_arguments.strip() or sent else "{}"
        rest = whole[len(sent) :] if whole.startswith(sent) else ""
        if rest:
            self._args.setdefault(key, []).append(rest)
            out.append(
                self._chunk(
                    event.choice,
                    {"tool_calls": [{"index": event.index, "function": {"arguments": rest}}]},
                )
            )

    def encode_sse(self, event: ChatEvent) -> bytes:
        """`encode`'s chunks as Server-Sent Events (``data: <json>`` blocks), ready to send.

        A text delta of an open choice, the bulk of a stream, is written through a template:
        its chunk dict serialized once with a marker for the text, split around it.
        """
        if type(event) is TextDelta and event.choice in self._opened:
            template = self._templates.get(event.choice)
            if template is None:
                marker = "\x00text\x00"
                whole = sse_event(self._chunk(event.choice, {"content": marker}))
                before, _, after = whole.partition(json.dumps(marker).encode())
                template = self._templates[event.choice] = (before, after)
            text = json.dumps(event.text, ensure_ascii=False).encode()
            return template[0] + text + template[1]
        return b"".join(sse_event(chunk) for chunk in self.encode(event))

    def extra_chunk(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """A chunk without choices that carries ``fields`` (what a server adds of its own)."""
        chunk: dict[str, Any] = {**self._head, "choices": [], **fields}
        if self._include_usage:
            chunk["usage"] = None
        return chunk

    def finish(self) -> list[dict[str, Any]]:
        """The chunks that end the stream: the usage chunk, when it was asked for."""
        if not self._include_usage:
            return []
        chunk: dict[str, Any] = {**self._head, "choices": []}
        chunk["usage"] = encode_usage(self._usage) if self._usage is not None else None
        return [chunk]


def sse_event(chunk: Mapping[str, Any]) -> bytes:
    """One chunk as a Server-Sent Event: ``data: <compact JSON>`` and a blank line."""
    return (
        b"data: " + json.dumps(chunk, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
    )
