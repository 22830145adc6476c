"""``chatlane chat`` in a pseudo-terminal, as a person types into it."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_cli import CLI, fake


class Terminal:
    """A ``chatlane chat`` process on a pseudo-terminal: type lines, wait for text."""

    def __init__(self, cli: CLI, *args: str, env: dict[str, str] | None = None) -> None:
        master, slave = pty.openpty()
        self.master = master
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatlane", "chat", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**cli.env, "TERM": "dumb", **(env or {})},
            cwd=cli.home,
            close_fds=True,
        )
        os.close(slave)
        self.seen = ""

    def expect(self, text: str, timeout: float = 20) -> str:
        """Read until ``text`` has appeared; return everything read up to and including it."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {text!r}; got {self.seen!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the process ended and the terminal closed
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"output ended before {text!r}; got {self.seen!r}")
                self.seen += chunk.decode("utf-8", errors="replace").replace("\r\n", "\n")
        cut = self.seen.index(text) + len(text)
        head, self.seen = self.seen[:cut], self.seen[cut:]
        return head

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def close(self) -> int:
        """Press Ctrl-D at the prompt; read what is left (into ``seen``); return the status."""
        # Wait for the prompt: readline puts the terminal in raw mode before it prints it, and
        # a Ctrl-D typed while the terminal is still in canonical mode is not an end of file.
        self.expect("> ")
        os.write(self.master, b"\x04")
        deadline = time.monotonic() + 20
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([self.master], [], [], 0.5)
                if not ready:
                    if self.proc.poll() is not None:
                        break
                    continue
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                self.seen += chunk.decode("utf-8", errors="replace").replace("\r\n", "\n")
            return self.proc.wait(timeout=20)
        finally:
            os.close(self.master)


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    return CLI(tmp_path)


def test_a_conversation_with_commands_multiline_input_and_save(cli: CLI) -> None:
    term = Terminal(cli, "--backend", fake("turns"))
    term.expect("chatlane chat with turns-1")
    term.expect("> ")
    term.type("hello")
    term.expect("turn 1: hello\n")
    term.type("/system Answer in French.")
    term.expect("[system prompt set]")
    term.type("/system")
    term.expect("Answer in French.")
    term.type("/tools")
    term.expect("[no tools")
    term.type('"""')
    term.type("first line")
    term.type("second line")
    term.type('"""')
    term.expect("turn 2: first line\nsecond line\n")
    term.type("one \\")
    term.type("two")
    term.expect("turn 3: one \ntwo\n")
    term.type("/nonsense")
    term.expect("[unknown command /nonsense")
    term.type("/save saved.json")
    term.expect("[saved 7 messages to saved.json]")
    assert term.close() == 0
    assert "is in the log: chatlane chat --continue " in term.seen
    saved = json.loads((cli.home / "saved.json").read_text())
    assert [m["role"] for m in saved["messages"]] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert saved["messages"][0]["content"] == "Answer in French."
    assert saved["messages"][3]["content"] == "first line\nsecond line"


def test_continue_takes_up_a_logged_conversation(cli: CLI) -> None:
    cli.ok("run", "from the command line", "--backend", fake("turns"))
    term = Terminal(cli, "--backend", fake("turns"), "--continue", "last")
    term.expect("continuing conversation")
    term.type("and from the chat")
    term.expect("turn 2: and from the chat\n")
    assert term.close() == 0
    shown = cli.ok("logs", "show", "last")
    assert shown.count("--- call") == 2


def test_an_error_is_shown_and_the_chat_goes_on(cli: CLI) -> None:
    term = Terminal(cli, "--backend", fake("flaky"))
    term.type("please fail")
    term.expect("[error: 429 Too Many Requests: slow down]")
    term.type("now work")
    term.expect("ok: now work\n")
    assert term.close() == 0
    [call_failed, call_ok] = cli.logs_json("show", "last")["calls"]
    assert "RateLimited" in call_failed["error"]
    # The unanswered message is not sent again with the next one.
    assert [m["content"] for m in call_ok["request"]["messages"]] == ["now work"]


def test_piped_input_gets_no_prompts(cli: CLI) -> None:
    out = cli.ok("chat", "--backend", fake("echo"), input="hi\n/exit\n")
    lines = out.splitlines()
    assert lines[0].startswith("chatlane chat with echo-1")
    assert lines[1] == "echo: hi"
    assert "> " not in out


def test_ctrl_c_stops_an_answer_keeps_what_arrived_and_the_chat_goes_on(cli: CLI) -> None:
    import signal

    term = Terminal(cli, "--backend", fake("slow_echo"), env={"FAKE_DELAY": "0.3"})
    term.expect("> ")
    term.type("a long question")
    term.expect("echo")  # the first piece of the answer has arrived
    term.proc.send_signal(signal.SIGINT)
    term.expect("[stopped]")
    term.type("next")
    term.expect("echo: next")
    assert term.close() == 0
    [stopped, answered] = cli.logs_json("show", "last")["calls"]
    assert stopped["response"]["message"]["content"].startswith("echo")
    assert stopped["response"]["message"]["content"] != "echo: a long question"
    assert "stopped by the user" in stopped["error"]
    # The partial answer is part of the conversation that continues.
    assert [m["role"] for m in answered["request"]["messages"]] == ["user", "assistant", "user"]


@pytest.mark.engine
def test_a_chat_on_the_embedded_engine(cli: CLI) -> None:
    import sqlite3

    pytest.importorskip("llama_cpp")
    from chatlane.testing import tiny_llama3_gguf

    model = tiny_llama3_gguf()
    term = Terminal(cli, "--gguf", str(model), "--max-tokens", "5", "--seed", "3")
    term.expect(f"LlamaCpp {model.name}")
    term.expect("> ")
    term.type("hello")
    deadline = time.monotonic() + 60
    while True:  # the answer is logged once it is complete (random weights: any text)
        if cli.db.exists():
            db = sqlite3.connect(cli.db)
            done = db.execute("SELECT count(*) FROM calls").fetchone()[0]
            db.close()
            if done:
                break
        assert time.monotonic() < deadline, term.seen
        time.sleep(0.1)
    time.sleep(0.5)
    assert term.close() == 0
    [call] = cli.logs_json("show", "last")["calls"]
    assert call["response"]["usage"]["completion_tokens"] <= 5
    assert call["backend"] == f"LlamaCpp {model.name}"
