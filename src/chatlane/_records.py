"""Plain JSON records of messages, requests and responses, for the log and batch files.

The shape follows the OpenAI-style message objects (``role``, ``content`` as a string or a
list of ``text`` / ``image_url`` parts, ``tool_calls`` with ``function.arguments`` as the
exact text the model produced), so a record reads back into the same values: nothing a user
sent or received is lost. Secrets never get here: backends hold API keys, requests do not,
and `redact` drops secret-looking keys from a request's ``extra`` fields before they are
written anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from chatlane.errors import MessageError
from chatlane.messages import Image, Message, Part, Text, ToolCall
from chatlane.request import ChatRequest
from chatlane.response import ChatResponse, FinishReason, Usage

__all__ = [
    "message_from_dict",
    "message_to_dict",
    "redact",
    "request_from_dict",
    "request_to_dict",
    "response_from_dict",
    "response_to_dict",
    "usage_to_dict",
]

_SECRET = re.compile(r"key|token|secret|password|authorization|credential", re.IGNORECASE)


def redact(value: Any) -> Any:
    """``value`` with every mapping entry whose name looks secret replaced by ``"[redacted]"``."""
    if isinstance(value, Mapping):
        return {
            str(k): "[redacted]" if _SECRET.search(str(k)) else redact(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def _part_to_dict(part: Part) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text}
    image: dict[str, Any] = {"url": part.to_data_uri()}
    if part.detail is not None:
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}


def message_to_dict(message: Message) -> dict[str, Any]:
    """A message as an OpenAI-style JSON object (images as data URIs, raw tool arguments)."""
    out: dict[str, Any] = {"role": message.role.value}
    if isinstance(message.content, str):
        out["content"] = message.content
    else:
        out["content"] = [_part_to_dict(p) for p in message.content]
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.raw_arguments},
            }
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        out["name"] = message.name
    if message.reasoning is not None:
        out["reasoning"] = message.reasoning
    return out


def _part_from_dict(part: Any, where: str) -> Part:
    if isinstance(part, str):
        return Text(part)
    if not isinstance(part, Mapping):
        raise MessageError(f"{where} must be an object, got {type(part).__name__}")
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise MessageError(f"{where} is a text part without a 'text' string")
        return Text(text)
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else image
        if not isinstance(url, str):
            raise MessageError(f"{where} is an image part without an 'image_url.url' string")
        detail = image.get("detail") if isinstance(image, Mapping) else None
        return Image.from_url(url, detail=detail)
    raise MessageError(f"{where} has type {kind!r}; chatlane reads 'text' and 'image_url' parts")


def message_from_dict(data: Any, where: str = "message") -> Message:
    """A message from an OpenAI-style JSON object; `MessageError` names what is wrong."""
    if not isinstance(data, Mapping):
        raise MessageError(f"{where} must be a JSON object, got {type(data).__name__}")
    if "role" not in data:
        raise MessageError(f"{where} has no 'role'")
    content = data.get("content")
    if isinstance(content, list):
        content = tuple(_part_from_dict(p, f"{where}.content[{i}]") for i, p in enumerate(content))
    elif content is not None and not isinstance(content, str):
        raise MessageError(
            f"{where}.content must be a string or a list of parts, got {type(content).__name__}"
        )
    calls: list[ToolCall] = []
    raw_calls = data.get("tool_calls") or ()
    if not isinstance(raw_calls, list | tuple):
        raise MessageError(f"{where}.tool_calls must be a list, got {type(raw_calls).__name__}")
    for i, call in enumerate(raw_calls):
        at = f"{where}.tool_calls[{i}]"
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise MessageError(f"{at} needs a 'function' object with a 'name'")
        arguments = function.get("arguments", "")
        if isinstance(arguments, Mapping):
            calls.append(ToolCall(str(call.get("id") or f"call_{i}"), function["name"], arguments))
        elif isinstance(arguments, str):
            calls.append(
                ToolCall.from_raw(str(call.get("id") or f"call_{i}"), function["name"], arguments)
            )
        else:
            raise MessageError(f"{at}.function.arguments must be a string or an object")
    return Message(
        data["role"],
        content if content is not None else "",
        tuple(calls),
        tool_call_id=data.get("tool_call_id"),
        name=data.get("name"),
        reasoning=data.get("reasoning") or data.get("reasoning_content"),
    )


_SAMPLING = (
    "model",
    "tool_choice",
    "parallel_tool_calls",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "n",
    "logprobs",
    "top_logprobs",
    "user",
)


def request_to_dict(request: ChatRequest) -> dict[str, Any]:
    """A request as JSON: messages, tools, response format and the settings that were set."""
    out: dict[str, Any] = {"messages": [message_to_dict(m) for m in request.messages]}
    for name in _SAMPLING:
        value = getattr(request, name)
        if value is not None:
            out[name] = value
    if request.stop:
        out["stop"] = list(request.stop)
    if request.steering_concepts:
        out["steering_concepts"] = list(request.steering_concepts)
    if request.tools:
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": dict(t.parameters),
                },
            }
            for t in request.tools
        ]
    fmt = request.response_format
    if fmt is not None:
        if fmt.schema is None:
            out["response_format"] = {"type": "json_object"}
        else:
            out["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": fmt.name, "schema": dict(fmt.schema), "strict": fmt.strict},
            }
    if request.extra:
        out["extra"] = redact(request.extra)
    return out


def request_from_dict(data: Any, where: str = "request") -> ChatRequest:
    """A request from an OpenAI-style body (``messages``, ``tools``, ``response_format``, ...).

    Fields chatlane does not know are kept in ``extra``, so they are still sent.
    """
    from chatlane.errors import InputError
    from chatlane.tools import Tool

    if not isinstance(data, Mapping):
        raise InputError(f"{where} must be a JSON object, got {type(data).__name__}")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise MessageError(f"{where} needs a non-empty 'messages' list")
    params: dict[str, Any] = {
        "messages": tuple(
            message_from_dict(m, f"{where}.messages[{i}]") for i, m in enumerate(messages)
        )
    }
    raw_extra = data.get("extra") or {}
    if not isinstance(raw_extra, Mapping):
        raise InputError(f"{where}.extra must be an object, got {type(raw_extra).__name__}")
    extra: dict[str, Any] = dict(raw_extra)
    for key, value in data.items():
        if key in ("messages", "extra"):
            continue
        if key in _SAMPLING:
            params[key] = value
        elif key == "max_completion_tokens":
            params["max_tokens"] = value
        elif key in ("stop", "steering_concepts"):
            if value is not None and not isinstance(value, str | list):
                raise InputError(
                    f"{where}.{key} must be a string or a list of strings, "
                    f"got {type(value).__name__}"
                )
            params[key] = (value,) if isinstance(value, str) else tuple(value or ())
        elif key == "tools":
            if value is not None and not isinstance(value, list):
                raise InputError(f"{where}.tools must be a list, got {type(value).__name__}")
            tools = []
            for i, t in enumerate(value or ()):
                function = t.get("function") if isinstance(t, Mapping) else None
                if not isinstance(function, Mapping):
                    raise InputError(f"{where}.tools[{i}] needs a 'function' object")
                tools.append(
                    Tool.from_schema(
                        function.get("name", ""),
                        function.get("parameters"),
                        function.get("description"),
                        strict=bool(function.get("strict", False)),
                    )
                )
            params["tools"] = tuple(tools)
        elif key == "response_format":
            params["response_format"] = value
        elif key != "stream" and key != "stream_options":
            extra[key] = value
    if extra:
        params["extra"] = extra
    return ChatRequest(**params)


def usage_to_dict(usage: Usage | None) -> dict[str, Any] | None:
    """Token usage as JSON (None stays None)."""
    if usage is None:
        return None
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cached_tokens is not None:
        out["cached_tokens"] = usage.cached_tokens
    if usage.reasoning_tokens is not None:
        out["reasoning_tokens"] = usage.reasoning_tokens
    return out


def response_to_dict(response: ChatResponse) -> dict[str, Any]:
    """A response as JSON: the message, why it stopped, usage and the model."""
    out: dict[str, Any] = {
        "id": response.id,
        "model": response.model,
        "message": message_to_dict(response.message),
        "finish_reason": response.finish_reason.value,
        "usage": usage_to_dict(response.usage),
    }
    if response.stop_sequence is not None:
        out["stop_sequence"] = response.stop_sequence
    if response.resumed:
        out["resumed"] = list(response.resumed)
    if response.malformed_calls:
        out["malformed_calls"] = list(response.malformed_calls)
    return out


def response_from_dict(data: Mapping[str, Any]) -> ChatResponse:
    """The response `response_to_dict` wrote."""
    usage = data.get("usage")
    return ChatResponse(
        message=message_from_dict(data["message"], "response.message"),
        finish_reason=FinishReason.parse(data.get("finish_reason")),
        usage=Usage(**usage) if isinstance(usage, Mapping) else None,
        model=data.get("model"),
        id=data.get("id"),
        stop_sequence=data.get("stop_sequence"),
        resumed=tuple(str(r) for r in data.get("resumed") or ()),
        malformed_calls=tuple(str(r) for r in data.get("malformed_calls") or ()),
    )
