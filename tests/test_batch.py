"""Batch runs as a library: results as they finish, failures on their line, resuming, limits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatlane.backends.base import Backend
from chatlane.backends.fake import Fake
from chatlane.batch import BatchProgress, finished_ids, read_batch_input, run_batch
from chatlane.errors import InputError, RateLimited
from chatlane.events import ChatEvent, Finished, TextDelta
from chatlane.request import ChatRequest
from chatlane.response import FinishReason
from chatlane.store import Store


def _last(request: ChatRequest) -> str:
    return request.messages[-1].text


def echo(n: int = 100) -> Fake:
    return Fake([lambda r: f"echo: {_last(r)}"] * n)


def write_input(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def q(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"q{i}", "messages": [{"role": "user", "content": f"question {i}"}], **extra}


def results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_input_is_answered_once_with_its_id(tmp_path: Path) -> None:
    inp = write_input(
        tmp_path / "in.jsonl",
        [
            q(1),
            {"custom_id": "c2", "body": {"messages": [{"role": "user", "content": "batch api"}]}},
            "",
            {"messages": [{"role": "user", "content": "no id"}], "max_tokens": 5},
        ],
    )
    out = tmp_path / "out.jsonl"
    backend = echo()
    progress = run_batch(backend, read_batch_input(inp), out, concurrency=2)
    got = {r["id"]: r for r in results(out)}
    assert set(got) == {"q1", "c2", "line-4"}
    assert got["q1"]["response"]["message"]["content"] == "echo: question 1"
    assert got["c2"]["response"]["message"]["content"] == "echo: batch api"
    assert got["line-4"]["line"] == 4
    assert got["line-4"]["response"]["usage"]["total_tokens"] > 0
    assert [r.max_tokens for r in backend.requests if _last(r) == "no id"] == [5]
    assert (progress.done, progress.failed, progress.skipped) == (3, 0, 0)
    assert progress.tokens == sum(r["response"]["usage"]["total_tokens"] for r in got.values())


def test_a_failed_request_is_recorded_on_its_line_and_the_run_goes_on(tmp_path: Path) -> None:
    def answer(request: ChatRequest) -> Any:
        if _last(request) == "question 2":
            return RateLimited("429: slow down", status_code=429, body='{"error": "slow"}')
        return "fine"

    inp = write_input(tmp_path / "in.jsonl", [q(1), q(2), "{not json", q(3), {"id": "q5"}])
    out = tmp_path / "out.jsonl"
    progress = run_batch(Fake([answer] * 10), read_batch_input(inp), out, concurrency=1)
    got = {r["id"]: r for r in results(out)}
    assert got["q2"]["error"] == {
        "type": "RateLimited",
        "message": "429: slow down",
        "status_code": 429,
        "body": '{"error": "slow"}',
    }
    assert got["line-3"]["error"]["type"] == "InputError"
    assert "not valid JSON" in got["line-3"]["error"]["message"]
    assert "messages" in got["q5"]["error"]["message"]
    assert got["q1"]["response"]["message"]["content"] == "fine"
    assert got["q3"]["response"]["message"]["content"] == "fine"
    assert (progress.done, progress.failed) == (2, 3)


def test_a_second_run_skips_what_is_done_and_can_retry_failures(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in.jsonl", [q(i) for i in range(1, 6)])
    out = tmp_path / "out.jsonl"
    flaky = Fake(["a1", RateLimited("429", status_code=429), "a3", "a4", "a5"])
    run_batch(flaky, read_batch_input(inp), out, concurrency=1)
    again = echo()
    progress = run_batch(again, read_batch_input(inp), out)
    assert again.requests == []
    assert progress.skipped == 5
    retry = echo()
    progress = run_batch(retry, read_batch_input(inp), out, retry_failed=True)
    assert [_last(r) for r in retry.requests] == ["question 2"]
    assert (progress.skipped, progress.done) == (4, 1)
    lines = results(out)
    assert len(lines) == 6  # the failure stays on its line; the retry adds the answer
    assert finished_ids(out, retry_failed=True) == {f"q{i}" for i in range(1, 6)}


def test_a_torn_last_line_is_cut_and_run_again(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in.jsonl", [q(1), q(2)])
    out = tmp_path / "out.jsonl"
    run_batch(echo(), read_batch_input(inp)[:1], out)
    with open(out, "a") as f:
        f.write('{"id": "q2", "line": 2, "response": {"mess')  # a crash mid-write
    backend = echo()
    run_batch(backend, read_batch_input(inp), out)
    assert [_last(r) for r in backend.requests] == ["question 2"]
    assert [r["id"] for r in results(out)] == ["q1", "q2"]


def test_an_output_that_is_not_a_batch_output_is_refused(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in.jsonl", [q(1)])
    out = tmp_path / "out.jsonl"
    out.write_text("hello\n")
    with pytest.raises(InputError, match="line 1 is not JSON"):
        run_batch(echo(), read_batch_input(inp), out)
    assert out.read_text() == "hello\n"


def test_two_lines_with_one_id_are_an_input_error(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in.jsonl", [q(1), q(2), q(1)])
    with pytest.raises(InputError, match="lines 1 and 3 share the id 'q1'"):
        read_batch_input(inp)


def test_a_missing_input_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the batch input"):
        read_batch_input(tmp_path / "nope.jsonl")


class Gauge(Backend):
    """Answers after a pause, counting how many requests are in flight at once."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0

    def _events(self, request: ChatRequest) -> Iterator[ChatEvent]:
        raise NotImplementedError

    async def _aevents(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        yield TextDelta("ok")
        yield Finished(FinishReason.STOP)


@pytest.mark.parametrize("limit", [1, 3, 8])
def test_the_concurrency_limit_holds(tmp_path: Path, limit: int) -> None:
    inp = write_input(tmp_path / "in.jsonl", [q(i) for i in range(20)])
    gauge = Gauge()
    run_batch(gauge, read_batch_input(inp), tmp_path / "out.jsonl", concurrency=limit)
    assert gauge.most == limit


def test_progress_is_reported_after_each_result(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in.jsonl", [q(i) for i in range(4)])
    seen: list[tuple[int, int, int]] = []

    def on_progress(p: BatchProgress) -> None:
        seen.append((p.done, p.failed, p.remaining))
        assert p.eta is None or p.eta >= 0

    run_batch(echo(), read_batch_input(inp), tmp_path / "out.jsonl", on_progress=on_progress)
    assert seen == [(0, 0, 4), (1, 0, 3), (2, 0, 2), (3, 0, 1), (4, 0, 0)]


def test_batch_calls_are_logged_with_their_item(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in.jsonl", [q(1), q(2)])
    with Store(tmp_path / "log.db") as store:
        run_batch(
            echo(), read_batch_input(inp), tmp_path / "out.jsonl", store=store, backend_name="Fake"
        )
        summaries = store.conversations()
        items = sorted(store.conversation(s.id).calls[0].batch_item or "" for s in summaries)
    assert items == ["q1", "q2"]


def test_a_concurrency_below_one_is_refused(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in.jsonl", [q(1)])
    with pytest.raises(InputError, match="at least 1"):
        run_batch(echo(), read_batch_input(inp), tmp_path / "o.jsonl", concurrency=0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steering_concepts", 5),
        ("tools", 5),
        ("tools", {"type": "function"}),
        ("stop", 7),
        ("extra", "x"),
    ],
)
def test_a_line_with_a_field_of_the_wrong_type_fails_alone_naming_it(
    tmp_path: Path, field: str, value: Any
) -> None:
    lines: list[Any] = [q(i) for i in range(1, 20)]
    lines[6] = q(7, **{field: value})
    inp = write_input(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    progress = run_batch(echo(), read_batch_input(inp), out)
    got = {r["id"]: r for r in results(out)}
    assert len(got) == 19
    assert field in got["q7"]["error"]["message"]
    assert all("response" in r for k, r in got.items() if k != "q7")
    assert (progress.done, progress.failed) == (18, 1)


def test_a_call_list_that_is_not_a_list_fails_its_line_naming_it(tmp_path: Path) -> None:
    bad = q(2)
    bad["messages"] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": 5},
    ]
    inp = write_input(tmp_path / "in.jsonl", [q(1), bad, q(3)])
    out = tmp_path / "out.jsonl"
    run_batch(echo(), read_batch_input(inp), out)
    got = {r["id"]: r for r in results(out)}
    assert "tool_calls" in got["q2"]["error"]["message"]
    assert "response" in got["q1"]
    assert "response" in got["q3"]


def test_a_byte_order_mark_on_a_line_is_read_past(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps(q(1)) + "\n\ufeff" + json.dumps(q(2)) + "\n", encoding="utf-8")
    items = read_batch_input(inp)
    assert [(i.id, i.problem) for i in items] == [("q1", None), ("q2", None)]


def test_the_output_line_is_written_before_the_log_row(tmp_path: Path) -> None:
    # A log that fails (as a kill between the two writes would leave it) must find the
    # item's output line already written: a rerun then skips it instead of running it twice.
    class FailingLog(Store):
        def log_call(self, *args: Any, **kw: Any) -> tuple[str, int]:
            raise RuntimeError("killed")

    inp = write_input(tmp_path / "in.jsonl", [q(1)])
    out = tmp_path / "out.jsonl"
    with FailingLog(tmp_path / "log.db") as store, pytest.raises(RuntimeError, match="killed"):
        run_batch(echo(), read_batch_input(inp), out, store=store)
    assert [r["id"] for r in results(out)] == ["q1"]
    assert finished_ids(out) == {"q1"}
