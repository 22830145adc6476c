"""The conversation log: what goes in comes back out, migrations, search, and concurrent writers."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatlane.errors import InputError, RateLimited
from chatlane.messages import Image, ToolCall, assistant, system, tool_result, user
from chatlane.request import ChatRequest
from chatlane.response import ChatResponse, FinishReason, Usage
from chatlane.store import MIGRATIONS, SCHEMA_VERSION, Store, StoreError, logging_enabled

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00"
    b"\x00\x00\x00IEND\xaeB`\x82"
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "log.db")
    yield s
    s.close()


def test_a_logged_call_reads_back_whole(store: Store) -> None:
    call = ToolCall.from_raw("call_1", "get_weather", '{"city": "Paris"')  # invalid JSON kept
    request = ChatRequest(
        (
            system("Be brief."),
            user(["What is on this picture?", Image.from_bytes(PNG)]),
            assistant("Let me look.", [call]),
            tool_result(call, "sunny"),
        ),
        model="m-1",
        temperature=0.5,
        stop=("END",),
    )
    response = ChatResponse(
        assistant("A sunny day."), FinishReason.STOP, Usage(12, 4, 16), model="m-1", id="r1"
    )
    cid, call_id = store.log_call(
        None, request, response, backend="Fake", duration=0.25, first_token=0.05
    )
    logged = store.conversation(cid)
    assert logged.summary.title == "What is on this picture?"
    assert logged.summary.model == "m-1"
    assert logged.summary.total_tokens == 16
    [got] = logged.calls
    assert got.id == call_id
    assert got.messages == request.messages
    assert got.messages[1].images[0].data == PNG
    assert got.messages[2].tool_calls[0].raw_arguments == '{"city": "Paris"'
    assert got.response is not None
    assert got.response.message == response.message
    assert got.response.usage == Usage(12, 4, 16)
    assert got.request["temperature"] == 0.5
    assert got.request["stop"] == ["END"]
    assert got.duration_ms == pytest.approx(250)
    assert got.first_token_ms == pytest.approx(50)
    assert logged.messages() == [*request.messages, response.message]


def test_calls_of_one_conversation_stay_together_and_continue(store: Store) -> None:
    first = ChatRequest((user("one"),))
    cid, _ = store.log_call(None, first, ChatResponse(assistant("1")))
    second = ChatRequest((user("one"), assistant("1"), user("two")))
    cid2, _ = store.log_call(cid, second, ChatResponse(assistant("2")))
    assert cid2 == cid
    logged = store.conversation(cid)
    assert [c.response.text for c in logged.calls if c.response] == ["1", "2"]
    assert [m.text for m in logged.messages()] == ["one", "1", "two", "2"]
    assert store.conversations()[0].calls == 2


def test_a_failed_call_keeps_its_error_and_partial_answer(store: Store) -> None:
    request = ChatRequest((user("hi"),))
    error = RateLimited("429: slow down", status_code=429)
    cid, _ = store.log_call(None, request, error=error)
    [call] = store.conversation(cid).calls
    assert call.response is None
    assert call.error == "RateLimited: 429: slow down"
    # Continuing after a failure resends the question.
    assert store.conversation(cid).messages() == [user("hi")]


def test_tool_runs_are_recorded_with_their_call(store: Store) -> None:
    cid, call_id = store.log_call(
        None, ChatRequest((user("weather?"),)), ChatResponse(assistant(""))
    )
    store.log_tool_run(
        call_id, tool_call_id="c1", name="get_weather", arguments='{"city":"Oslo"}', result="cold"
    )
    store.log_tool_run(call_id, tool_call_id="c2", name="boom", arguments="{}", error="ValueError")
    runs = store.conversation(cid).calls[0].tool_runs
    assert [(r.name, r.result, r.error) for r in runs] == [
        ("get_weather", "cold", None),
        ("boom", None, "ValueError"),
    ]


def test_search_finds_prompts_and_answers_and_treats_wildcards_literally(store: Store) -> None:
    a, _ = store.log_call(
        None, ChatRequest((user("Tell me about Rivers"),)), ChatResponse(assistant("x"))
    )
    b, _ = store.log_call(
        None, ChatRequest((user("hello"),)), ChatResponse(assistant("the Danube"))
    )
    c, _ = store.log_call(None, ChatRequest((user("100% sure_ok"),)), ChatResponse(assistant("y")))
    assert [s.id for s in store.search("rivers")] == [a]
    assert [s.id for s in store.search("danube")] == [b]
    assert [s.id for s in store.search("100%")] == [c]
    assert [s.id for s in store.search("r_v")] == []
    assert store.search("nothing like this") == []


def test_ids_resolve_by_prefix_and_last(store: Store) -> None:
    ids = [store.log_call(None, ChatRequest((user(str(i)),)))[0] for i in range(3)]
    assert store.resolve(ids[1]) == ids[1]
    assert store.resolve(ids[2][:14].upper()) == ids[2]
    assert store.resolve("last") == ids[2]
    assert [s.id for s in store.conversations()] == ids[::-1]
    with pytest.raises(StoreError, match="no conversation 'zzzz'"):
        store.resolve("zzzz")
    with pytest.raises(InputError, match="several conversations"):
        store.resolve(ids[0][:2])
    with pytest.raises(StoreError, match="no conversation"):
        store.log_call("nosuchid", ChatRequest((user("x"),)))


def test_an_empty_log_has_no_last(store: Store) -> None:
    with pytest.raises(StoreError, match="no conversation yet"):
        store.resolve("last")


def test_an_old_log_is_migrated_without_losing_records(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO conversations VALUES ('abc', '2026-01-01T00:00:00', '2026-01-01T00:00:00',"
        " 'old', 'Fake', 'm')"
    )
    db.execute(
        "INSERT INTO calls (conversation_id, started_at, request, response_text) VALUES"
        """ ('abc', '2026-01-01T00:00:00', '{"messages": [{"role": "user", "content": "old"}]}', '')"""
    )
    answered = {
        "message": {"role": "assistant", "content": "hi"},
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11,
                  "cached_tokens": 8, "reasoning_tokens": 1},
    }  # fmt: skip
    db.execute(
        "INSERT INTO calls (conversation_id, started_at, request, response, response_text,"
        " total_tokens) VALUES ('abc', '2026-01-01T00:00:01', ?, ?, 'hi', 11)",
        ('{"messages": [{"role": "user", "content": "again"}]}', json.dumps(answered)),
    )
    db.commit()
    db.close()
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 3
        logged = store.conversation("abc")
        assert logged.messages()[-1].text == "hi"
        assert logged.calls[0].batch_item is None
        # The usage an old response carried fills the new columns.
        assert (logged.summary.cached_tokens, logged.summary.reasoning_tokens) == (8, 1)


def test_a_log_from_a_newer_chatlane_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer than this chatlane"):
        Store(path)


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(StoreError, match="not a usable chatlane log"):
        Store(path)


def test_secrets_in_extra_fields_never_reach_the_file(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    with Store(path) as store:
        request = ChatRequest(
            (user("hi"),),
            extra={
                "api_key": "sk-very-secret-1",
                "headers": {"Authorization": "Bearer sk-very-secret-2"},
                "nice": True,
            },
        )
        cid, _ = store.log_call(None, request, ChatResponse(assistant("hello")))
        logged = store.conversation(cid)
    assert logged.calls[0].request["extra"] == {
        "api_key": "[redacted]",
        "headers": {"Authorization": "[redacted]"},
        "nice": True,
    }
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"sk-very-secret" not in data


def test_chatlane_log_off_turns_the_log_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CHATLANE_LOG", "off")
    assert not logging_enabled()
    assert Store.open_default(tmp_path / "x.db") is None
    assert not (tmp_path / "x.db").exists()
    monkeypatch.setenv("CHATLANE_LOG", "on")
    store = Store.open_default(tmp_path / "x.db")
    assert store is not None
    store.close()


def test_the_default_place_is_the_user_data_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from chatlane.store import default_db_path

    monkeypatch.delenv("CHATLANE_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_db_path() == tmp_path / "chatlane" / "logs.db"
    monkeypatch.setenv("CHATLANE_DB", str(tmp_path / "elsewhere.db"))
    assert default_db_path() == tmp_path / "elsewhere.db"


WRITER = textwrap.dedent(
    """
    import sys
    from chatlane.messages import assistant, user
    from chatlane.request import ChatRequest
    from chatlane.response import ChatResponse, Usage
    from chatlane.store import Store

    path, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = Store(path)
    cid = None
    for i in range(n):
        request = ChatRequest((user(f"{name} question {i}"),))
        cid, _ = store.log_call(cid, request, ChatResponse(assistant(f"{name} answer {i}"),
                                usage=Usage(1, 1, 2)), batch_item=f"{name}-{i}")
    print(cid)
    """
)


def test_concurrent_writers_in_several_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    Store(path).close()
    writers, per_writer = 4, 40
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), f"w{k}", str(per_writer)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(writers)
    ]
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        ids.append(out.strip())
    with Store(path) as store:
        assert store.count_calls() == writers * per_writer
        for k, cid in enumerate(ids):
            calls = store.conversation(cid).calls
            assert [c.batch_item for c in calls] == [f"w{k}-{i}" for i in range(per_writer)]
            assert calls[-1].response is not None
            assert calls[-1].response.text == f"w{k} answer {per_writer - 1}"
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_cached_and_reasoning_tokens_are_logged_and_summed(tmp_path: Path) -> None:
    from chatlane.messages import assistant
    from chatlane.request import ChatRequest
    from chatlane.response import ChatResponse, FinishReason, Usage

    with Store(tmp_path / "log.db") as store:
        request = ChatRequest((user("q"),))
        answer = ChatResponse(assistant("a"), FinishReason.STOP, Usage(100, 10, 110, 96, 4))
        cid, _ = store.log_call(None, request, answer)
        store.log_call(
            cid, request, ChatResponse(assistant("b"), FinishReason.STOP, Usage(5, 1, 6))
        )
        [summary] = store.conversations()
        assert (summary.total_tokens, summary.cached_tokens, summary.reasoning_tokens) == (
            116,
            96,
            4,
        )
        first = store.conversation(cid).calls[0].response
        assert first is not None
        assert first.usage == Usage(100, 10, 110, 96, 4)
