"""A new user's ``chatlane run`` against a server that cuts the stream: a non-zero exit with one
clear line, the partial answer kept on stdout, and the interruption in the log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from support import RESET, Reply, ScriptedServer
from test_cli import CLI, assert_one_line_error

KEY = "sk-cli-cut-0123456789"


def chunk(text: str) -> dict[str, Any]:
    return {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": text}}]}


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s


@pytest.mark.parametrize(
    ("how", "ending"),
    [("reset", [RESET]), ("no finish", [])],
)
def test_run_against_a_cut_stream_exits_non_zero_with_one_line(
    tmp_path: Any, server: ScriptedServer, how: str, ending: list[Any]
) -> None:
    server.route(
        "/v1/chat/completions",
        Reply.sse([chunk("The answer is"), chunk(" forty"), *ending], done=False),
    )
    cli = CLI(tmp_path)
    result = cli(
        "run",
        "What is the answer?",
        "--base-url",
        server.url + "/v1",
        env={"CHATLANE_API_KEY": KEY},
    )
    assert_one_line_error(result, 1, "stream")
    last = result.stderr.strip().splitlines()[-1]
    assert "cut off" in last or "broke" in last
    assert KEY not in result.stderr
    assert result.stdout == "The answer is forty\n"
    [summary] = cli.logs_json()
    [call] = cli.logs_json("show", summary["id"])["calls"]
    assert call["error"].startswith("StreamInterrupted")
    assert call["response"]["finish_reason"] == "incomplete"
    assert call["response"]["message"]["content"] == "The answer is forty"
    data = b"".join(p.read_bytes() for p in cli.home.glob("log.db*"))
    assert KEY.encode() not in data
    assert json.dumps(call).count(KEY) == 0
