"""`chatlane.testing.Cassette`: record a backend's HTTP exchanges against a real loopback
server, then replay them with the server gone: the same events, quirks included."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from chatlane.backends.openai_chat import OpenAIChat
from chatlane.backends.transport import RetryPolicy
from chatlane.errors import ChatlaneError
from chatlane.testing import Cassette, CassetteMismatch
from support import Reply, ScriptedServer

KEY = "sk-cassette-secret-42"
PATH = "/v1/chat/completions"
TRANSCRIPTS = Path(__file__).parent / "backends" / "transcripts"
NAMES = sorted(p.name for p in TRANSCRIPTS.glob("*.sse"))


def run_stream(mode: str, llm: OpenAIChat, prompt: str) -> tuple[list[Any], Any]:
    """Stream to the end, sync or async: the events, and the response or the error."""

    async def astream() -> tuple[list[Any], Any]:
        events: list[Any] = []
        try:
            async with llm.astream(prompt) as stream:
                async for event in stream:
                    events.append(event)
                return events, await stream.get_response()
        except ChatlaneError as e:
            return events, e

    if mode == "async":
        return asyncio.run(astream())
    events: list[Any] = []
    try:
        with llm.stream(prompt) as stream:
            events.extend(stream)
            return events, stream.response
    except ChatlaneError as e:
        return events, e


def _backend(url: str, cassette: Cassette, **kw: Any) -> OpenAIChat:
    return OpenAIChat(
        url + "/v1",
        api_key=KEY,
        model="m1",
        retry=RetryPolicy(max_retries=0),
        http_client=cassette.client(),
        async_http_client=cassette.async_client(),
        **kw,
    )


def _outcome(result: tuple[list[Any], Any]) -> tuple[list[Any], Any]:
    events, end = result
    if isinstance(end, ChatlaneError):
        return events, (type(end), str(end))
    return events, end.message


@pytest.mark.parametrize("name", NAMES)
def test_replay_reproduces_every_recorded_quirk_stream(tmp_path: Path, name: str) -> None:
    path = tmp_path / "c.json"
    with ScriptedServer() as server:
        server.route(PATH, Reply.transcript((TRANSCRIPTS / name).read_text(), pause=0.001))
        url = server.url
        with Cassette(path, "record") as cassette:
            recorded = _outcome(run_stream("sync", _backend(url, cassette), "x"))
    # The server is gone: only the cassette answers, sync and async alike.
    for mode in ("sync", "async"):
        with Cassette(path, "replay") as cassette:
            replayed = _outcome(run_stream(mode, _backend(url, cassette), "x"))
        assert replayed == recorded
    body = json.loads(path.read_text())
    [interaction] = body["interactions"]
    chunks = interaction["response"]["chunks"]
    assert "".join(c["text"] for c in chunks) == (TRANSCRIPTS / name).read_text()
    assert [c["t"] for c in chunks] == sorted(c["t"] for c in chunks)


def test_the_api_key_is_never_written_even_when_the_server_echoes_it(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    with ScriptedServer() as server:
        server.route(PATH, Reply.error(401, f"bad key {KEY}"))
        with Cassette(path, "record") as cassette, pytest.raises(ChatlaneError):
            _backend(server.url, cassette).chat("x")
        assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    text = path.read_text()
    assert KEY not in text
    assert "<redacted>" in text
    # The replayed error is the recorded one, secret masked as chatlane masks it.
    with Cassette(path, "replay") as cassette, pytest.raises(ChatlaneError) as replayed:
        _backend(server.url, cassette).chat("x")
    assert KEY not in str(replayed.value)


def test_a_request_the_cassette_lacks_fails_with_a_diff(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    with ScriptedServer() as server:
        server.route(PATH, Reply.transcript((TRANSCRIPTS / "openai_text.sse").read_text()))
        with Cassette(path, "record") as cassette:
            _ = _backend(server.url, cassette).stream("What is the weather?").response
        url = server.url
    with Cassette(path, "replay") as cassette, pytest.raises(CassetteMismatch) as mismatch:
        _ = _backend(url, cassette).stream("What is the time?").response
    message = str(mismatch.value)
    assert "holds no answer for POST" in message
    assert '-   "content": "What is the weather?"' in message
    assert '+   "content": "What is the time?"' in message
    # Each recorded exchange answers once.
    with Cassette(path, "replay") as replay:
        _ = _backend(url, replay).stream("What is the weather?").response
        with pytest.raises(CassetteMismatch, match="every recorded exchange"):
            _ = _backend(url, replay).stream("What is the weather?").response


def test_auto_records_once_then_replays(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    assert Cassette(path).mode == "record"
    with ScriptedServer() as server:
        server.route(PATH, Reply.transcript((TRANSCRIPTS / "openai_text.sse").read_text()))
        with Cassette(path) as cassette:
            first = _backend(server.url, cassette).stream("Hi").response.text
        url = server.url
    with Cassette(path) as cassette:
        assert cassette.mode == "replay"
        assert _backend(url, cassette).stream("Hi").response.text == first


def test_a_missing_or_damaged_cassette_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CassetteMismatch, match="no cassette at"):
        Cassette(tmp_path / "none.json", "replay")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        Cassette(bad, "replay")


def test_the_pytest_fixture_records_then_replays(tmp_path: Path) -> None:
    import subprocess

    with ScriptedServer() as server:
        server.route(PATH, Reply.transcript((TRANSCRIPTS / "openai_text.sse").read_text()))
        test = tmp_path / "test_user.py"
        test.write_text(
            "from chatlane.backends.openai_chat import OpenAIChat\n"
            "def test_it(chatlane_cassette):\n"
            f"    llm = OpenAIChat({server.url + '/v1'!r}, api_key='k', model='m',\n"
            "                     http_client=chatlane_cassette.client())\n"
            "    assert llm.stream('Hi').response.text == 'Hello, wörld 🌍'\n"
        )
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)]
        first = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
        assert first.returncode == 0, first.stdout + first.stderr
        requests = len(server.requests)
    cassette = tmp_path / "cassettes" / "test_user" / "test_it.json"
    assert cassette.is_file()
    assert requests == 1
    # The server is gone; replay-only mode passes from the cassette.
    again = subprocess.run(
        [*command, "--chatlane-record=replay"], capture_output=True, text=True, cwd=tmp_path
    )
    assert again.returncode == 0, again.stdout + again.stderr


def test_forbidden_requests_stop_recording_but_not_replay(tmp_path: Path) -> None:
    from chatlane.testing import RequestsForbidden, allow_requests

    path = tmp_path / "c.json"
    with ScriptedServer() as server:
        server.route(PATH, Reply.transcript((TRANSCRIPTS / "openai_text.sse").read_text()))
        with Cassette(path, "record") as cassette:
            _ = _backend(server.url, cassette).stream("Hi").response
        allow_requests(False)
        try:
            with (
                Cassette(tmp_path / "new.json", "record") as cassette,
                pytest.raises(RequestsForbidden, match="requests are forbidden"),
            ):
                _ = _backend(server.url, cassette).stream("Hi").response
            with Cassette(path, "replay") as cassette:
                assert _backend(server.url, cassette).stream("Hi").response.text
        finally:
            allow_requests(None)
        assert len(server.requests) == 1
