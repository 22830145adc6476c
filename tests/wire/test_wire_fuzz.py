"""Whatever JSON arrives, the codec answers with events or a chatlane error, never a crash.

Bodies and chunks are generated both as arbitrary JSON and as near-misses of the real shapes
(right keys, wrong types), where KeyError and TypeError would hide.
"""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chatlane.errors import InputError, ParseError
from chatlane.wire.openai import StreamAssembler, decode_request, decode_response
from chatlane.wire.sse import SSEDecoder

_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False), st.text(max_size=5)
)
_json = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)


def _near(keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts with some of these keys, each holding its usual value or anything at all."""
    return st.fixed_dictionaries({}, optional={k: st.one_of(v, _json) for k, v in keys.items()})


_function = _near({"name": st.text(max_size=4), "arguments": st.text(max_size=6)})
_tool_call = _near(
    {
        "index": st.integers(0, 2),
        "id": st.text(max_size=3),
        "type": st.just("function"),
        "function": _function,
    }
)
_delta = _near(
    {
        "role": st.text(max_size=9),
        "content": st.one_of(st.none(), st.text(max_size=5)),
        "reasoning_content": st.text(max_size=5),
        "tool_calls": st.lists(_tool_call, max_size=3),
    }
)
_usage = _near(
    {
        "prompt_tokens": st.integers(0, 9),
        "completion_tokens": st.integers(0, 9),
        "total_tokens": st.integers(0, 9),
        "prompt_tokens_details": _near({"cached_tokens": st.integers(0, 9)}),
    }
)
_chunk = _near(
    {
        "id": st.text(max_size=3),
        "model": st.text(max_size=3),
        "created": st.integers(0, 9),
        "choices": st.lists(
            _near(
                {
                    "index": st.integers(0, 2),
                    "delta": _delta,
                    "finish_reason": st.sampled_from(["stop", None, "x"]),
                }
            ),
            max_size=2,
        ),
        "usage": _usage,
    }
)
_response = _near(
    {
        "id": st.text(max_size=3),
        "choices": st.lists(
            _near(
                {
                    "index": st.integers(0, 2),
                    "message": _delta,
                    "finish_reason": st.sampled_from(["stop", None]),
                }
            ),
            max_size=2,
        ),
        "usage": _usage,
    }
)
_request = _near(
    {
        "messages": st.lists(_delta, max_size=3),
        "tools": st.lists(_near({"type": st.just("function"), "function": _function}), max_size=2),
        "tool_choice": st.one_of(st.sampled_from(["auto", "none"]), _json),
        "response_format": _near(
            {"type": st.sampled_from(["json_object", "json_schema"]), "json_schema": _json}
        ),
        "stop": st.one_of(st.text(max_size=3), st.lists(st.text(max_size=3))),
        "max_tokens": st.integers(-1, 9),
    }
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_chunk, _json), min_size=1, max_size=5))
def test_the_assembler_raises_only_parse_errors(chunks: list[Any]) -> None:
    assembler = StreamAssembler()
    problems: list[ParseError] = []
    for chunk in chunks:
        try:
            assembler.feed(chunk)
        except ParseError as e:
            problems.append(e)
    assembler.finish()
    assert all(p.text is not None for p in problems)  # what could not be read is kept


@settings(max_examples=300, deadline=None)
@given(st.one_of(_response, _json))
def test_decode_response_raises_only_parse_errors(body: Any) -> None:
    problems: list[ParseError] = []
    try:
        decode_response(body)
    except ParseError as e:
        problems.append(e)
    assert all(p.text is not None for p in problems)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_request, _json))
def test_decode_request_raises_only_input_errors(body: Any) -> None:
    with contextlib.suppress(InputError):
        decode_request(body)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=30), max_size=6))
def test_the_sse_decoder_takes_any_bytes(pieces: list[bytes]) -> None:
    decoder = SSEDecoder()
    for piece in pieces:
        decoder.feed(piece)
    decoder.finish()
