"""The SSE decoder: the specification's rules, and bytes split anywhere."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatlane.errors import ParseError
from chatlane.wire.sse import ServerSentEvent, SSEDecoder


def decode(*pieces: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events + decoder.finish()


def test_data_lines_with_and_without_the_space() -> None:
    events = decode(b'data: {"a":1}\n\ndata:{"b":2}\n\ndata:  two spaces\n\n')
    assert [e.data for e in events] == ['{"a":1}', '{"b":2}', " two spaces"]
    assert all(e.event == "message" for e in events)


def test_multi_line_data_is_joined_with_newlines() -> None:
    events = decode(b"data: first\ndata: second\ndata\ndata:\n\n")
    assert [e.data for e in events] == ["first\nsecond\n\n"]


def test_comments_and_unknown_fields_are_ignored() -> None:
    events = decode(b": keep-alive\n\n:another\nfoo: bar\ndata: x\n: inside\n\n")
    assert events == [ServerSentEvent("message", "x")]


def test_event_id_and_retry_fields() -> None:
    events = decode(
        b"event: ping\nid: 7\nretry: 1500\ndata: a\n\n"
        b"data: b\n\n"
        b"id: 8\x00x\nretry: soon\nevent: done\ndata: c\n\n"
    )
    assert events == [
        ServerSentEvent("ping", "a", "7", 1500),
        # The type resets after each event; the last id and the retry carry over.
        ServerSentEvent("message", "b", "7", 1500),
        # An id with NUL and a retry that is not digits are ignored.
        ServerSentEvent("done", "c", "7", 1500),
    ]


def test_an_event_without_data_is_not_dispatched() -> None:
    assert decode(b"event: ping\n\nid: 3\n\n\n\ndata: x\n\n") == [
        ServerSentEvent("message", "x", "3")
    ]


@pytest.mark.parametrize("end", [b"\n", b"\r", b"\r\n"])
def test_every_line_end(end: bytes) -> None:
    stream = end.join([b"event: e", b"data: one", b"data: two", b"", b"data: three", b"", b""])
    assert decode(stream) == [ServerSentEvent("e", "one\ntwo"), ServerSentEvent("message", "three")]


def test_crlf_split_between_pieces_is_one_line_end() -> None:
    # If the LF after a CR in the next piece were a second line end, "a" would be dispatched
    # early and "b" would become an event of its own.
    assert decode(b"data: a\r", b"\ndata: b\r\n", b"\r", b"\n") == [ServerSentEvent(data="a\nb")]


def test_bytes_split_inside_a_utf8_character() -> None:
    stream = 'data: {"t":"héllo 🦙 wörld"}\n\n'.encode()
    events = decode(*[stream[i : i + 1] for i in range(len(stream))])
    assert [e.json() for e in events] == [{"t": "héllo 🦙 wörld"}]


def test_a_leading_byte_order_mark_is_dropped() -> None:
    assert decode(b"\xef\xbb\xbfdata: x\n\n") == [ServerSentEvent(data="x")]
    # Only at the very start: later it is part of the data.
    assert decode(b"data: x\n\ndata: \xef\xbb\xbfy\n\n")[1].data == "\ufeffy"


def test_done_sentinel() -> None:
    events = decode(b'data: {"a":1}\n\ndata: [DONE]\n\n')
    assert [e.done for e in events] == [False, True]


def test_last_event_without_blank_line_is_delivered_at_finish() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: one\n\ndata: two") == [ServerSentEvent(data="one")]
    assert decoder.finish() == [ServerSentEvent(data="two")]
    decoder = SSEDecoder()
    assert decoder.feed(b"data: three\n") == []
    assert decoder.finish() == [ServerSentEvent(data="three")]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert decode(b"data: a\xffb\n\n") == [ServerSentEvent(data="a\ufffdb")]


def test_json_of_non_json_data_is_a_parse_error_keeping_the_data() -> None:
    event = ServerSentEvent(data="not json")
    with pytest.raises(ParseError, match="not JSON") as info:
        event.json()
    assert info.value.text == "not json"


def test_empty_feed_yields_nothing() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"") == []
    assert decoder.finish() == []


_payloads = st.lists(
    st.dictionaries(st.text(max_size=5), st.text(max_size=20), max_size=3), min_size=1, max_size=6
)


@settings(max_examples=150, deadline=None)
@given(_payloads, st.sampled_from([b"\n", b"\r", b"\r\n"]), st.data())
def test_any_split_of_any_stream_gives_the_same_events(
    payloads: list[dict[str, str]], end: bytes, data: st.DataObject
) -> None:
    stream = b"".join(
        b": comment" + end + b"data: " + json.dumps(p, ensure_ascii=False).encode() + end + end
        for p in payloads
    )
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=12)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert [e.json() for e in decode(*pieces)] == payloads


def test_a_long_line_in_small_pieces_comes_out_whole() -> None:
    # 1 MiB of data in 4 KiB pieces: kept as pieces and joined once at the line's end.
    payload = b"x" * (1024 * 1024)
    raw = b"data: " + payload + b"\n\n"
    pieces = [raw[i : i + 4096] for i in range(0, len(raw), 4096)]
    events = decode(*pieces)
    assert len(events) == 1
    assert events[0].data == payload.decode()


def test_an_event_larger_than_the_cap_raises_a_clear_error() -> None:
    decoder = SSEDecoder(max_event_bytes=10_000)
    decoder.feed(b"x" * 4096)
    decoder.feed(b"x" * 4096)
    with pytest.raises(ParseError, match="larger than the limit of 10000 bytes"):
        decoder.feed(b"x" * 4096)


def test_the_cap_counts_every_line_of_one_event() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    # Many short data lines of one event add up past the cap.
    with pytest.raises(ParseError, match="max_event_bytes"):
        decoder.feed(b"data: 0123456789\n" * 20)
    # Events under the cap pass, however many there are.
    ok = SSEDecoder(max_event_bytes=100)
    assert len(ok.feed(b"data: 0123456789\n\n" * 50)) == 50


def test_the_cap_is_checked_when_made() -> None:
    from chatlane.errors import InputError

    with pytest.raises(InputError, match="max_event_bytes"):
        SSEDecoder(max_event_bytes=0)
