"""The stream assembler against every quirk seen in the wild: never lose or invent data."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatlane.errors import ParseError
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
    accumulate,
)
from chatlane.messages import ToolCall
from chatlane.response import FinishReason, Usage
from chatlane.wire.openai import StreamAssembler


def run(*chunks: dict[str, Any]) -> list[ChatEvent]:
    assembler = StreamAssembler()
    events: list[ChatEvent] = []
    for chunk in chunks:
        events += assembler.feed(chunk)
    return events + assembler.finish()


def choice(
    delta: dict[str, Any] | None = None, finish: str | None = None, index: int = 0
) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index, "delta": delta if delta is not None else {}}
    if finish is not None:
        out["finish_reason"] = finish
    return out


def chunk(*choices: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"choices": list(choices), **top}


def tc(**fields: Any) -> dict[str, Any]:
    """A tool-call delta: index/id/name/arguments given as keywords."""
    out: dict[str, Any] = {k: fields[k] for k in ("index", "id") if k in fields}
    function = {k: fields[k] for k in ("name", "arguments") if k in fields}
    if function:
        out["function"] = function
    return out


def calls_chunk(*deltas: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return chunk(choice({"tool_calls": list(deltas)}, finish))


def done_calls(events: list[ChatEvent]) -> list[ToolCall]:
    return [e.call for e in events if isinstance(e, ToolCallDone)]


def test_plain_text_stream_opening_with_a_role_delta() -> None:
    events = run(
        chunk(choice({"role": "assistant", "content": ""}), id="c1", model="m", created=5),
        chunk(choice({"content": "Hel"}), id="c1", model="m"),
        chunk(choice({"content": "lo"}), id="c1", model="m"),
        chunk(choice({}, "stop"), id="c1", model="m"),
    )
    assert events == [
        ResponseStarted("c1", "m", 5),
        TextDelta("Hel"),
        TextDelta("lo"),
        Finished(FinishReason.STOP),
    ]


def test_tool_calls_keyed_by_index_with_id_and_name_on_the_first_delta_only() -> None:
    events = run(
        calls_chunk(tc(index=0, id="a", name="f", arguments="")),
        calls_chunk(tc(index=0, arguments='{"x":')),
        calls_chunk(tc(index=1, id="b", name="g", arguments="{")),
        calls_chunk(tc(index=0, arguments=" 1}")),
        calls_chunk(tc(index=1, arguments="}")),
        chunk(choice({}, "tool_calls")),
    )
    assert events == [
        ToolCallStarted(0, "a", "f"),
        ToolCallDelta(0, '{"x":'),
        ToolCallStarted(1, "b", "g"),
        ToolCallDelta(1, "{"),
        ToolCallDelta(0, " 1}"),
        ToolCallDelta(1, "}"),
        ToolCallDone(0, ToolCall.from_raw("a", "f", '{"x": 1}')),
        ToolCallDone(1, ToolCall.from_raw("b", "g", "{}")),
        Finished(FinishReason.TOOL_CALLS),
    ]
    assert done_calls(events)[0].arguments == {"x": 1}


def test_id_and_name_repeated_on_every_delta() -> None:
    events = run(
        calls_chunk(tc(index=0, id="a", name="f", arguments='{"q"')),
        calls_chunk(tc(index=0, id="a", name="f", arguments=': "v"}')),
        chunk(choice({}, "tool_calls")),
    )
    assert [e for e in events if isinstance(e, ToolCallStarted)] == [ToolCallStarted(0, "a", "f")]
    assert done_calls(events) == [ToolCall.from_raw("a", "f", '{"q": "v"}')]


def test_tool_calls_keyed_by_id_only() -> None:
    events = run(
        calls_chunk(tc(id="a", name="f", arguments='{"n":')),
        calls_chunk(tc(id="b", name="g", arguments='{"m":')),
        calls_chunk(tc(id="a", arguments="1}")),
        calls_chunk(tc(id="b", arguments="2}")),
        chunk(choice({}, "tool_calls")),
    )
    assert done_calls(events) == [
        ToolCall.from_raw("a", "f", '{"n":1}'),
        ToolCall.from_raw("b", "g", '{"m":2}'),
    ]


def test_several_whole_calls_in_one_chunk_without_index_or_id() -> None:
    events = run(
        calls_chunk(
            tc(name="f", arguments='{"a": 1}'),
            tc(name="g", arguments='{"b": 2}'),
        ),
        chunk(choice({}, "tool_calls")),
    )
    # Calls without an id get chatlane's positional ids, the same ones decode_response gives.
    assert done_calls(events) == [
        ToolCall.from_raw("call_0", "f", '{"a": 1}'),
        ToolCall.from_raw("call_1", "g", '{"b": 2}'),
    ]


def test_unkeyed_deltas_continue_the_last_call_until_a_new_name_after_complete_arguments() -> None:
    events = run(
        calls_chunk(tc(name="f", arguments='{"a"')),
        calls_chunk(tc(arguments=": 1}")),
        # The same name repeated while arguments are incomplete: still the same call.
        calls_chunk(tc(name="g", arguments='{"b": ')),
        calls_chunk(tc(name="g", arguments="2}")),
        calls_chunk(tc(name="g", arguments="{}")),
        chunk(choice({}, "tool_calls")),
    )
    assert [(c.name, c.raw_arguments) for c in done_calls(events)] == [
        ("f", '{"a": 1}'),
        ("g", '{"b": 2}'),
        ("g", "{}"),
    ]


def test_a_server_repeating_index_zero_with_new_ids_opens_new_calls() -> None:
    events = run(
        calls_chunk(tc(index=0, id="a", name="f", arguments="{}")),
        calls_chunk(tc(index=0, id="b", name="g", arguments='{"z"')),
        calls_chunk(tc(index=0, arguments=":0}")),
        chunk(choice({}, "tool_calls")),
    )
    assert done_calls(events) == [
        ToolCall.from_raw("a", "f", "{}"),
        ToolCall.from_raw("b", "g", '{"z":0}'),
    ]


def test_a_name_arriving_after_the_arguments() -> None:
    events = run(
        calls_chunk(tc(index=0, id="a", arguments='{"k":')),
        calls_chunk(tc(index=0, arguments=' "v"}')),
        calls_chunk(tc(index=0, name="lookup")),
        chunk(choice({}, "tool_calls")),
    )
    assert events == [
        ToolCallStarted(0, "a", "lookup"),
        ToolCallDelta(0, '{"k": "v"}'),
        ToolCallDone(0, ToolCall.from_raw("a", "lookup", '{"k": "v"}')),
        Finished(FinishReason.TOOL_CALLS),
    ]


def test_a_call_whose_name_never_comes_is_delivered_nameless() -> None:
    events = run(calls_chunk(tc(index=0, id="a", arguments="{}")), chunk(choice({}, "tool_calls")))
    assert done_calls(events) == [ToolCall.from_raw("a", "", "{}")]


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_arguments_split_at_any_point_including_inside_escapes(size: int) -> None:
    arguments = json.dumps({"text": 'quote " slash \\ tab \t emoji 🦙 \u00e9', "n": [1, 2]})
    pieces = [arguments[i : i + size] for i in range(0, len(arguments), size)]
    escaped = json.dumps({"s": "é🦙"})  # ensure_ascii: \u00e9 and a surrogate pair, split too
    escaped_pieces = [escaped[i : i + size] for i in range(0, len(escaped), size)]
    events = run(
        calls_chunk(tc(index=0, id="a", name="f")),
        *[calls_chunk(tc(index=0, arguments=p)) for p in pieces],
        calls_chunk(tc(index=1, id="b", name="g")),
        *[calls_chunk(tc(index=1, arguments=p)) for p in escaped_pieces],
        chunk(choice({}, "tool_calls")),
    )
    first, second = done_calls(events)
    assert first.raw_arguments == arguments
    assert first.arguments == json.loads(arguments)
    assert second.raw_arguments == escaped
    assert second.arguments == {"s": "é🦙"}
    deltas = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta) and e.index == 0)
    assert deltas == arguments


@pytest.mark.parametrize("arguments", [None, ""])
def test_empty_arguments_are_an_empty_object(arguments: str | None) -> None:
    delta = tc(index=0, id="a", name="now")
    if arguments is not None:
        delta["function"]["arguments"] = arguments
    events = run(calls_chunk(delta), chunk(choice({}, "tool_calls")))
    (call,) = done_calls(events)
    assert call.arguments == {}
    assert call.valid
    assert not any(isinstance(e, ToolCallDelta) for e in events)


def test_invalid_argument_json_is_kept_visible_not_raised() -> None:
    events = run(
        calls_chunk(tc(index=0, id="a", name="f", arguments='{"a": ')), chunk(choice({}, "stop"))
    )
    (call,) = done_calls(events)
    assert call.raw_arguments == '{"a": '
    assert not call.valid
    assert "not valid JSON" in (call.arguments_error or "")


def test_content_and_tool_calls_in_the_same_chunk() -> None:
    events = run(
        chunk(
            choice(
                {
                    "content": "Let me check.",
                    "tool_calls": [tc(index=0, id="a", name="f", arguments="{}")],
                }
            )
        ),
        chunk(choice({}, "tool_calls")),
    )
    assert events[:3] == [
        TextDelta("Let me check."),
        ToolCallStarted(0, "a", "f"),
        ToolCallDelta(0, "{}"),
    ]


def test_content_and_arguments_on_the_finish_chunk() -> None:
    events = run(
        calls_chunk(tc(index=0, id="a", name="f", arguments='{"a":')),
        chunk(
            choice({"content": "tail", "tool_calls": [tc(index=0, arguments="1}")]}, "tool_calls")
        ),
    )
    assert events == [
        ToolCallStarted(0, "a", "f"),
        ToolCallDelta(0, '{"a":'),
        TextDelta("tail"),
        ToolCallDelta(0, "1}"),
        ToolCallDone(0, ToolCall.from_raw("a", "f", '{"a":1}')),
        Finished(FinishReason.TOOL_CALLS),
    ]


def test_usage_on_every_chunk_is_reported_when_it_changes() -> None:
    u1 = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    u2 = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    events = run(
        chunk(choice({"content": "a"}), usage=u1),
        chunk(choice({"content": "b"}), usage=u1),
        chunk(choice({}, "stop"), usage=u2),
    )
    assert events == [
        TextDelta("a"),
        UsageReported(Usage(5, 1, 6)),
        TextDelta("b"),
        Finished(FinishReason.STOP),
        UsageReported(Usage(5, 2, 7)),
    ]
    assert accumulate(events).usage == Usage(5, 2, 7)


def test_usage_only_on_a_final_chunk_without_choices_with_details() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "total_tokens": 30,
        "prompt_tokens_details": {"cached_tokens": 8},
        "completion_tokens_details": {"reasoning_tokens": 12},
    }
    events = run(
        chunk(choice({"content": "a"}), usage=None),
        chunk(choice({}, "stop"), usage=None),
        {"id": "x", "choices": [], "usage": usage},
    )
    assert events[-1] == UsageReported(Usage(10, 20, 30, cached_tokens=8, reasoning_tokens=12))
    assert sum(isinstance(e, UsageReported) for e in events) == 1


def test_missing_usage_means_no_usage() -> None:
    events = run(chunk(choice({"content": "a"})), chunk(choice({}, "stop")))
    assert accumulate(events).usage is None


def test_no_finish_chunk_still_delivers_the_calls_and_says_the_stream_was_cut() -> None:
    assembler = StreamAssembler()
    events = assembler.feed(chunk(choice({"content": "x"})))
    events += assembler.feed(calls_chunk(tc(index=0, id="a", name="f", arguments='{"a": 1}')))
    tail = assembler.finish()
    assert tail == [
        ToolCallDone(0, ToolCall.from_raw("a", "f", '{"a": 1}')),
        Finished(FinishReason.INCOMPLETE),
    ]
    response = accumulate(events + tail)
    assert response.finish_reason == "incomplete"
    assert response.text == "x"
    assert response.tool_calls[0].arguments == {"a": 1}


def test_a_second_finish_chunk_adds_no_duplicates() -> None:
    events = run(
        calls_chunk(tc(index=0, id="a", name="f", arguments="{}")),
        chunk(choice({}, "tool_calls")),
        chunk(choice({}, "tool_calls")),
        chunk(choice({}, "stop")),
    )
    assert sum(isinstance(e, Finished) for e in events) == 1
    assert sum(isinstance(e, ToolCallDone) for e in events) == 1
    assert accumulate(events).finish_reason == "tool_calls"


def test_content_after_the_finish_chunk_is_not_lost() -> None:
    events = run(chunk(choice({"content": "a"}, "stop")), chunk(choice({"content": "b"}, "stop")))
    assert accumulate(events).text == "ab"
    assert sum(isinstance(e, Finished) for e in events) == 1


def test_content_null_and_empty_deltas_yield_nothing() -> None:
    events = run(
        chunk(choice({"role": "assistant", "content": None})),
        chunk(choice({"content": None, "tool_calls": None, "reasoning_content": None})),
        chunk(choice(None)),
        chunk(choice({}, "stop")),
    )
    assert events == [Finished(FinishReason.STOP)]


def test_unknown_roles_and_finish_reasons_are_values() -> None:
    events = run(
        chunk(choice({"role": "model", "content": "a"})),
        chunk(choice({"role": None, "content": "b"})),
        chunk(choice({}, "eos_token")),
    )
    assert events == [TextDelta("a"), TextDelta("b"), Finished(FinishReason.other("eos_token"))]
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert not finished.finish_reason.known


def test_reasoning_deltas_under_either_name_never_both() -> None:
    events = run(
        chunk(choice({"reasoning_content": "think "})),
        chunk(choice({"reasoning": "more"})),
        chunk(choice({"reasoning_content": "!", "reasoning": "!"})),
        chunk(choice({"content": "answer"}, "stop")),
    )
    assert events[:3] == [ReasoningDelta("think "), ReasoningDelta("more"), ReasoningDelta("!")]
    response = accumulate(events)
    assert response.message.reasoning == "think more!"
    assert response.text == "answer"


def test_several_choices_are_kept_apart() -> None:
    events = run(
        chunk(choice({"content": "A"}, index=0), choice({"content": "B"}, index=1)),
        chunk(choice({"tool_calls": [tc(index=0, id="x", name="f", arguments="{}")]}, index=1)),
        chunk(choice({"content": "A2"}, "stop", index=0)),
        chunk(choice({}, "tool_calls", index=1)),
    )
    response = accumulate(events)
    assert [c.message.text for c in response.choices] == ["AA2", "B"]
    assert [c.finish_reason for c in response.choices] == ["stop", "tool_calls"]
    assert response.choices[1].message.tool_calls == (ToolCall.from_raw("x", "f", "{}"),)
    assert response.choices[0].message.tool_calls == ()


def test_a_choice_without_index_takes_its_position() -> None:
    events = run({"choices": [{"delta": {"content": "a"}}, {"delta": {"content": "b"}}]})
    assert events[:2] == [TextDelta("a", 0), TextDelta("b", 1)]


def test_stop_reason_of_vllm_is_the_stop_sequence() -> None:
    events = run(chunk({"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "###"}))
    assert events == [Finished(FinishReason.STOP, 0, "###")]


def test_arguments_sent_as_an_object_are_kept_as_json_text() -> None:
    events = run(
        calls_chunk(tc(index=0, id="a", name="f", arguments={"x": 1})), chunk(choice({}, "stop"))
    )
    assert done_calls(events)[0].arguments == {"x": 1}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([], "must be a JSON object"),
        ({"choices": "x"}, "'choices' is not a list"),
        ({"choices": [1]}, "is not an object"),
        ({"choices": [{"index": "0", "delta": {}}]}, "index"),
        ({"choices": [{"delta": {"tool_calls": {"a": 1}}}]}, "tool_calls is not a list"),
        ({"choices": [{"delta": {"tool_calls": [{"function": {"arguments": 5}}]}}]}, "arguments"),
        ({"choices": [], "usage": {"prompt_tokens": "many"}}, "prompt_tokens"),
        ({"error": {"message": "overloaded"}}, "overloaded"),
    ],
)
def test_a_chunk_that_is_not_one_is_a_parse_error_keeping_it(bad: Any, message: str) -> None:
    with pytest.raises(ParseError, match=message) as info:
        StreamAssembler().feed(bad)
    assert info.value.text is not None


def test_an_openai_refusal_is_the_text() -> None:
    events = run(
        chunk(choice({"role": "assistant", "content": None, "refusal": None})),
        chunk(choice({"refusal": "I can't "})),
        chunk(choice({"refusal": "help with that."}, "stop")),
    )
    assert events == [
        TextDelta("I can't "),
        TextDelta("help with that."),
        Finished(FinishReason.STOP),
    ]


def test_the_deprecated_function_call_form() -> None:
    events = run(
        chunk(choice({"role": "assistant", "function_call": {"name": "f", "arguments": ""}})),
        chunk(choice({"function_call": {"arguments": '{"a": 1}'}}, "function_call")),
    )
    assert done_calls(events) == [ToolCall.from_raw("call_0", "f", '{"a": 1}')]
    assert events[-1] == Finished(FinishReason.other("function_call"))
