"""Every public decoder, on any JSON at all, answers with a value or a chatlane error naming
what is wrong: never a bare TypeError, KeyError or AttributeError.

The decoders: `chatlane.wire.openai.decode_request` / `decode_response`, the completion
decoders of each dialect (`chatlane.wire.completions.decode_response` / `decode_chunk`), the
log's and batch's `request_from_dict`, and `read_batch_input` (a whole file of such lines).
Inputs are arbitrary JSON and near-misses of the real shapes (right keys, wrong types).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chatlane._records import request_from_dict
from chatlane.batch import read_batch_input
from chatlane.errors import ChatlaneError, InputError
from chatlane.wire import completions, openai

EXAMPLES = 250

_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False), st.text(max_size=5)
)
_json = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


def _near(keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={k: st.one_of(v, _json) for k, v in keys.items()})


_message = _near(
    {
        "role": st.sampled_from(["user", "assistant", "system", "tool", "developer"]),
        "content": st.one_of(st.text(max_size=5), st.lists(_json, max_size=2)),
        "tool_calls": st.lists(
            _near(
                {
                    "id": st.text(max_size=3),
                    "type": st.just("function"),
                    "function": _near({"name": st.text(max_size=3), "arguments": _json}),
                    "name": st.text(max_size=3),
                    "arguments": _json,
                }
            ),
            max_size=2,
        ),
        "tool_call_id": st.text(max_size=3),
        "name": st.text(max_size=3),
    }
)
_request = _near(
    {
        "messages": st.lists(_message, min_size=1, max_size=3),
        "model": st.text(max_size=3),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "seed": st.integers(0, 9),
        "n": st.integers(1, 3),
        "max_tokens": st.integers(1, 9),
        "max_completion_tokens": st.integers(1, 9),
        "stop": st.one_of(st.text(max_size=3), st.lists(st.text(max_size=3), max_size=2)),
        "steering_concepts": st.lists(st.text(max_size=3), max_size=2),
        "tools": st.lists(
            _near(
                {
                    "type": st.just("function"),
                    "function": _near({"name": st.text(max_size=3), "parameters": _json}),
                }
            ),
            max_size=2,
        ),
        "tool_choice": st.one_of(st.sampled_from(["auto", "none", "required"]), _json),
        "response_format": _near({"type": st.sampled_from(["json_object", "json_schema"])}),
        "parallel_tool_calls": st.booleans(),
        "extra": st.dictionaries(st.text(max_size=3), _json, max_size=2),
    }
)
_completion = st.one_of(
    _near(
        {
            "choices": st.lists(
                _near(
                    {
                        "text": st.text(max_size=4),
                        "index": st.integers(0, 2),
                        "finish_reason": st.sampled_from(["stop", "length", None]),
                    }
                ),
                max_size=2,
            ),
            "usage": _near({"prompt_tokens": st.integers(0, 9)}),
            "error": _json,
        }
    ),
    _near(
        {
            "content": st.text(max_size=4),
            "stop": st.booleans(),
            "stop_type": st.sampled_from(["eos", "word", "limit", "none"]),
            "tokens_predicted": st.integers(0, 9),
            "timings": _json,
            "index": st.integers(0, 2),
        }
    ),
    _near(
        {
            "type": st.sampled_from(["stream_chunk", "stream_summary", "completion_summary"]),
            "completion": st.text(max_size=4),
            "completions": st.lists(_near({"completion": st.text(max_size=3)}), max_size=2),
            "finish_reason": st.sampled_from(["maximum_tokens", "end_of_text", None]),
            "index": st.integers(0, 2),
        }
    ),
    _json,
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.one_of(_request, _json))
def test_decode_request_raises_only_chatlane_errors(body: Any) -> None:
    problems: list[InputError] = []
    try:
        openai.decode_request(body)
    except InputError as e:
        problems.append(e)
    assert all(str(p) for p in problems)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.one_of(_request, _json))
def test_request_from_dict_raises_only_chatlane_errors(body: Any) -> None:
    problems: list[InputError] = []
    try:
        request_from_dict(body)
    except InputError as e:
        problems.append(e)
    assert all(str(p) for p in problems)


@settings(max_examples=EXAMPLES, deadline=None)
@given(_completion, st.sampled_from(["openai", "llama.cpp", "aleph-alpha"]))
def test_the_completion_decoders_raise_only_chatlane_errors(body: Any, dialect: Any) -> None:
    problems: list[ChatlaneError] = []
    for decode in (completions.decode_response, completions.decode_chunk):
        try:
            decode(body, dialect)
        except ChatlaneError as e:
            problems.append(e)
    assert all(str(p) for p in problems)


@settings(max_examples=EXAMPLES // 2, deadline=None)
@given(st.lists(st.one_of(_request, _json), min_size=1, max_size=6), st.booleans())
def test_read_batch_input_gives_every_line_its_own_item(lines: list[Any], bom: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        prefix = "\ufeff" if bom else ""
        # Every line gets its own id, so no two share one.
        text = "".join(
            prefix
            + json.dumps({**line, "custom_id": f"i{n}"} if isinstance(line, dict) else line)
            + "\n"
            for n, line in enumerate(lines)
        )
        path.write_text(text, encoding="utf-8")
        items = read_batch_input(path)
    assert len(items) == len(lines)
    for item in items:
        assert (item.request is None) == (item.problem is not None)
