"""A damaged row in the SQLite log: `StoreError` naming the row, and `chatlane logs` lists
the rest."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from chatlane.messages import assistant, user
from chatlane.request import ChatRequest
from chatlane.response import ChatResponse
from chatlane.store import Store, StoreError
from test_cli import CLI


def logged(path: Path, n: int) -> list[tuple[str, int]]:
    with Store(path) as store:
        return [
            store.log_call(
                None,
                ChatRequest((user(f"question {i}"),)),
                ChatResponse(assistant(f"answer {i}")),
                backend="Fake",
            )
            for i in range(n)
        ]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("request", "{not json"),
        ("request", "[1, 2]"),
        ("request", '{"messages": 5}'),
        ("response", "{}"),
        ("response", '{"message": 5}'),
        ("response", "null"),
        ("started_at", b"\x00\x01"),
    ],
)
def test_a_damaged_call_row_is_a_store_error_naming_it(
    tmp_path: Path, column: str, value: object
) -> None:
    db = tmp_path / "log.db"
    (cid, call), *_ = logged(db, 2)
    with sqlite3.connect(db) as raw:
        raw.execute(f"UPDATE calls SET {column} = ? WHERE id = ?", (value, call))
    with Store(db) as store:
        with pytest.raises(StoreError, match=f"call row {call} "):
            store.conversation(cid)
        # The others still read.
        assert len(store.conversations()) == 2


def test_a_damaged_conversation_row_is_left_out_of_the_listing(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    (bad, _), (good, _) = logged(db, 2)
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE conversations SET title = ? WHERE id = ?", (b"\xff\x00", bad))
    with Store(db) as store:
        assert [s.id for s in store.conversations()] == [good]
        assert [s.id for s in store.search("question")] == [good]
        with pytest.raises(StoreError, match=bad):
            store.conversation(bad)


def test_chatlane_logs_lists_the_rest_and_show_names_the_row(tmp_path: Path) -> None:
    cli = CLI(tmp_path)
    (bad, call), (good, _) = logged(cli.db, 2)
    with sqlite3.connect(cli.db) as raw:
        raw.execute("UPDATE calls SET response = '{}' WHERE id = ?", (call,))
        raw.execute("UPDATE conversations SET title = ? WHERE id = ?", (b"\xff", good))
    listing = cli("logs")
    assert listing.returncode == 0, listing.stderr
    assert bad in listing.stdout
    assert good not in listing.stdout
    shown = cli("logs", "show", bad)
    assert shown.returncode != 0
    assert "Traceback" not in shown.stderr
    assert f"call row {call}" in shown.stderr.strip().splitlines()[-1]
