"""A property: the events of a stream add up to what the same response decodes to unstreamed.

Hypothesis generates a chat completion (several choices, text or null content, reasoning, tool
calls with or without ids, arbitrary argument text, known, unknown or missing finish reasons,
usage with details), splits it into chunks in random ways, and checks that assembling the
chunks and accumulating the events gives the response `decode_response` reads from the body.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chatlane.events import accumulate
from chatlane.wire.openai import StreamAssembler, decode_response
from chatlane.wire.sse import SSEDecoder

_text = st.text(max_size=40)
_arguments = st.one_of(
    st.dictionaries(
        st.text(max_size=6), st.one_of(st.integers(), _text, st.booleans()), max_size=3
    ).map(lambda d: json.dumps(d, ensure_ascii=bool(len(d) % 2))),
    st.just(""),
    _text,  # not JSON at all: kept, never raised
)
_tool_call = st.fixed_dictionaries(
    {
        "id": st.one_of(st.none(), st.text("abcdef0123", min_size=1, max_size=8)),
        "name": st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
        "arguments": _arguments,
    }
)
_finish = st.sampled_from([None, "stop", "length", "tool_calls", "content_filter", "eos", "abort"])


@st.composite
def _choices(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 3))
    out = []
    for index in range(n):
        calls = draw(st.lists(_tool_call, max_size=3))
        ids = [c["id"] for c in calls if c["id"] is not None]
        if len(set(ids)) != len(ids):  # ids are unique within a message
            for j, c in enumerate(calls):
                c["id"] = f"id{j}"
        message: dict[str, Any] = {
            "role": "assistant",
            "content": draw(st.one_of(st.none(), _text)),
        }
        if draw(st.booleans()):
            message["reasoning_content"] = draw(_text)
        if calls:
            message["tool_calls"] = [
                {
                    **({"id": c["id"]} if c["id"] is not None else {}),
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in calls
            ]
        out.append({"index": index, "message": message, "finish_reason": draw(_finish)})
    return out


_usage = st.one_of(
    st.none(),
    st.builds(
        lambda p, c, cached, reasoning: {
            "prompt_tokens": p,
            "completion_tokens": c,
            "total_tokens": p + c,
            **({"prompt_tokens_details": {"cached_tokens": cached}} if cached is not None else {}),
            **(
                {"completion_tokens_details": {"reasoning_tokens": reasoning}}
                if reasoning is not None
                else {}
            ),
        },
        st.integers(0, 10_000),
        st.integers(0, 10_000),
        st.one_of(st.none(), st.integers(0, 100)),
        st.one_of(st.none(), st.integers(0, 100)),
    ),
)


def _split(draw: st.DrawFn, text: str) -> list[str]:
    if not text:
        return []
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=4)))
    cuts = [c for c in cuts if 0 < c < len(text)]
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def _merge_some(draw: st.DrawFn, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Put some neighbouring deltas into one chunk: text beside tool calls, several tool-call
    deltas (even of one call) in one list, as servers that batch tokens send them."""
    merged: list[dict[str, Any]] = []
    for entry in entries:
        join: bool = draw(st.booleans())
        if merged and join:
            into = merged[-1]["delta"]
            for key, value in entry["delta"].items():
                if key == "tool_calls":
                    into["tool_calls"] = [*into.get("tool_calls", []), *value]
                elif key in ("content", "reasoning_content") and isinstance(into.get(key), str):
                    into[key] += value or ""
                elif key != "role":
                    into[key] = value
        else:
            merged.append({"index": entry["index"], "delta": dict(entry["delta"])})
    return merged


@st.composite
def _deltas(draw: st.DrawFn, choice: dict[str, Any]) -> list[dict[str, Any]]:
    """One choice's stream: a list of choice entries for chunks, in order."""
    index = choice["index"]
    message = choice["message"]
    entries: list[dict[str, Any]] = []
    if draw(st.booleans()):
        entries.append(
            {
                "index": index,
                "delta": {"role": "assistant", "content": draw(st.sampled_from(["", None]))},
            }
        )
    for piece in _split(draw, message.get("reasoning_content", "")):
        entries.append({"index": index, "delta": {"reasoning_content": piece}})
    for piece in _split(draw, message["content"] or ""):
        entries.append({"index": index, "delta": {"content": piece}})
    repeat_ids = draw(st.booleans())
    calls = message.get("tool_calls", [])
    # Some servers key tool-call deltas by id alone, with no index (only when every call has one).
    by_id_only: bool = draw(st.booleans()) and all("id" in c for c in calls)
    for position, call in enumerate(calls):
        head: dict[str, Any] = {
            "index": position,
            "type": "function",
            "function": {"name": call["function"]["name"]},
        }
        if "id" in call:
            head["id"] = call["id"]
        pieces = _split(draw, call["function"]["arguments"])
        first_piece_with_name: bool = draw(st.booleans())
        if pieces and first_piece_with_name:
            head["function"]["arguments"] = pieces.pop(0)
        else:
            head["function"]["arguments"] = ""
        if by_id_only:
            del head["index"]
        entries.append({"index": index, "delta": {"tool_calls": [head]}})
        for piece in pieces:
            delta: dict[str, Any] = {"function": {"arguments": piece}}
            if by_id_only:
                delta["id"] = call["id"]
            else:
                delta["index"] = position
            if repeat_ids and "id" in call:
                delta["id"] = call["id"]
                delta["function"]["name"] = call["function"]["name"]
            entries.append({"index": index, "delta": {"tool_calls": [delta]}})
    entries = _merge_some(draw, entries)
    if not entries:  # a stream has at least one chunk per choice it answers
        entries.append({"index": index, "delta": {"role": "assistant"}})
    if choice["finish_reason"] is not None:
        on_last: bool = draw(st.booleans())
        if on_last:
            entries[-1]["finish_reason"] = choice["finish_reason"]  # content on the finish chunk
        else:
            entries.append({"index": index, "delta": {}, "finish_reason": choice["finish_reason"]})
    return entries


@st.composite
def responses_and_chunks(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    choices = draw(_choices())
    usage = draw(_usage)
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "llama",
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    queues = [draw(_deltas(c)) for c in choices]
    chunks: list[dict[str, Any]] = []
    top = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "llama",
    }
    while any(queues):
        live = [q for q in queues if q]
        picked = draw(
            st.lists(st.sampled_from(range(len(live))), min_size=1, max_size=2, unique=True)
        )
        chunks.append({**top, "choices": [live[i].pop(0) for i in picked]})
    if usage is not None:
        where = draw(st.sampled_from(["final", "last", "every"]))
        if where == "final" or not chunks:
            chunks.append({**top, "choices": [], "usage": usage})
        elif where == "last":
            chunks[-1]["usage"] = usage
        else:
            for c in chunks[:-1]:
                c["usage"] = {
                    "prompt_tokens": usage["prompt_tokens"],
                    "completion_tokens": 0,
                    "total_tokens": 0,
                }
            chunks[-1]["usage"] = usage
    return body, chunks


@settings(max_examples=200, deadline=None)
@given(responses_and_chunks())
def test_streamed_events_accumulate_to_the_decoded_response(
    case: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    body, chunks = case
    expected = decode_response(json.loads(json.dumps(body)))
    assembler = StreamAssembler()
    events = []
    for c in chunks:
        events += assembler.feed(c)
    events += assembler.finish()
    assert accumulate(events) == expected


@settings(max_examples=100, deadline=None)
@given(responses_and_chunks(), st.data())
def test_through_sse_bytes_split_anywhere(
    case: tuple[dict[str, Any], list[dict[str, Any]]], data: st.DataObject
) -> None:
    body, chunks = case
    stream = (
        b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    )
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=20)))
    decoder, assembler, events = SSEDecoder(), StreamAssembler(), []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        for sse in decoder.feed(stream[a:b]):
            if not sse.done:
                events += assembler.feed(sse.json())
    assert not decoder.finish()
    events += assembler.finish()
    assert accumulate(events) == decode_response(body)
